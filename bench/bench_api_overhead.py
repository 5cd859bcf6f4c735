"""The same prompt through the whole HTTP path against LocalBackend.generate in-process.

The HTTP side is `gptactions serve` in a subprocess (uvicorn, auth, the service, the prompt built
from the stored history, the turn written to SQLite); the reference is the same model file,
the same messages and the same settings called directly. Requests alternate between the two so
that the machine's noise hits both alike. Run: .venv/bin/python bench/bench_api_overhead.py
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time

import httpx
from common import BENCH_KEY, ratio, report, server, summary

from gptactions.config import Settings
from gptactions.llm.base import ChatMessage, GenerationRequest
from gptactions.llm.local import LocalBackend

PROMPT = "Name three primary colors."


async def main() -> None:
    """Alternate N direct and N HTTP generations, print the overhead ratio."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=20)
    parser.add_argument("--max-tokens", type=int, default=32)
    # One thread by default: llama.cpp's spinning thread barrier makes multi-threaded runs on
    # busy shared cores vary by seconds, which would drown the overhead being measured.
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    settings = Settings()
    request = GenerationRequest(
        messages=(ChatMessage("system", settings.system_prompt), ChatMessage("user", PROMPT)),
        max_tokens=args.max_tokens,
        temperature=0.0,
    )
    body = {"userId": "bench", "message": PROMPT, "maxTokens": args.max_tokens}
    backend = LocalBackend(threads=args.threads)
    await backend.start()
    direct: list[float] = []
    http: list[float] = []
    tokens: dict[str, set[int]] = {"direct": set(), "http": set()}
    try:
        with (
            tempfile.TemporaryDirectory() as tmp,
            server(f"sqlite:///{tmp}/bench.db", model_threads=str(args.threads)) as url,
        ):
            headers = {"Authorization": f"Bearer {BENCH_KEY}"}
            async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120) as client:
                for attempt in range(args.n + 2):  # two warm-up rounds
                    started = time.perf_counter()
                    generation = await backend.generate(request)
                    direct_seconds = time.perf_counter() - started

                    started = time.perf_counter()
                    # A new conversation each time: the prompt is the same as the direct one.
                    response = await client.post("/api/v1/gpt/conversations", json=body)
                    http_seconds = time.perf_counter() - started
                    response.raise_for_status()

                    if attempt >= 2:
                        direct.append(direct_seconds)
                        http.append(http_seconds)
                        tokens["direct"].add(generation.usage.completion_tokens)
                        tokens["http"].add(response.json()["usage"]["completionTokens"])
    finally:
        await backend.close()

    d, h = summary(direct), summary(http)
    results = {
        "n": args.n,
        "max_tokens": args.max_tokens,
        "threads": args.threads,
        "completion_tokens": {k: sorted(v) for k, v in tokens.items()},
        "direct": d,
        "http": h,
        "overhead_ratio_median": ratio(h["median_ms"], d["median_ms"]),
        "overhead_ratio_p95": ratio(h["p95_ms"], d["p95_ms"]),
        "overhead_ms_median": round(h["median_ms"] - d["median_ms"], 1),
    }
    rows = [
        ["LocalBackend.generate (in-process)", d["median_ms"], d["p95_ms"], 1.0, 1.0],
        [
            "POST /conversations (HTTP, server)",
            h["median_ms"],
            h["p95_ms"],
            results["overhead_ratio_median"],
            results["overhead_ratio_p95"],
        ],
    ]
    report(
        "api_overhead", ["path", "median ms", "p95 ms", "ratio median", "ratio p95"], rows, results
    )


if __name__ == "__main__":
    asyncio.run(main())
