"""GET /status while generations are queued, against GET /status on an idle server.

The model runs on its own thread, so the event loop keeps answering while it works: the ratio
stays small (CPU is shared, so not 1), and far below what a blocked loop would show (a whole
generation's time). The server is `gptactions serve` in a subprocess with the embedded model.
Run: .venv/bin/python bench/bench_concurrency.py
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time

import httpx
from common import BENCH_KEY, ratio, report, server, summary

PROMPT = "Write a long story about a lighthouse keeper and the sea."


async def status_latencies(
    client: httpx.AsyncClient, until: asyncio.Future[object] | None, count: int
) -> list[float]:
    """GET /status, one after another with a short pause; while `until` is pending if given."""
    latencies: list[float] = []

    def more() -> bool:
        return len(latencies) < count if until is None else not until.done()

    while more():
        started = time.perf_counter()
        response = await client.get("/api/v1/gpt/status")
        elapsed = time.perf_counter() - started
        response.raise_for_status()
        if until is None or not until.done():
            latencies.append(elapsed)
        await asyncio.sleep(0.02)
    return latencies


async def generate(client: httpx.AsyncClient, user: str, max_tokens: int) -> float:
    """One POST /conversations; its duration in seconds."""
    started = time.perf_counter()
    body = {"userId": user, "message": PROMPT, "maxTokens": max_tokens}
    response = await client.post("/api/v1/gpt/conversations", json=body)
    response.raise_for_status()
    return time.perf_counter() - started


async def main() -> None:
    """Idle, then loaded with `--queued` concurrent generations; print the ratio."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queued", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--idle-samples", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    with (
        tempfile.TemporaryDirectory() as tmp,
        server(f"sqlite:///{tmp}/bench.db", model_threads=str(args.threads)) as url,
    ):
        headers = {"Authorization": f"Bearer {BENCH_KEY}"}
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=300) as client:
            await generate(client, "warm-up", 8)
            await status_latencies(client, None, 5)
            idle = await status_latencies(client, None, args.idle_samples)

            started = time.perf_counter()
            jobs = [
                asyncio.ensure_future(generate(client, f"user-{n}", args.max_tokens))
                for n in range(args.queued)
            ]
            everything: asyncio.Future[object] = asyncio.ensure_future(asyncio.gather(*jobs))
            await asyncio.sleep(0.2)  # let the requests reach the server's queue
            loaded = await status_latencies(client, everything, 0)
            durations = [job.result() for job in jobs]
            wall = time.perf_counter() - started

    i, busy = summary(idle), summary(loaded)
    single = min(durations) * 1000  # the first generation done: about one generation's time
    results = {
        "queued": args.queued,
        "max_tokens": args.max_tokens,
        "threads": args.threads,
        "idle": i,
        "loaded": busy,
        "ratio_median": ratio(busy["median_ms"], i["median_ms"]),
        "ratio_p95": ratio(busy["p95_ms"], i["p95_ms"]),
        "first_generation_ms": round(single, 1),
        "all_generations_ms": round(wall * 1000, 1),
        "loaded_p95_vs_one_generation": round(busy["p95_ms"] / single, 4),
    }
    rows = [
        ["idle", i["n"], i["median_ms"], i["p95_ms"], 1.0, 1.0],
        [
            f"{args.queued} generations queued",
            busy["n"],
            busy["median_ms"],
            busy["p95_ms"],
            results["ratio_median"],
            results["ratio_p95"],
        ],
    ]
    report(
        "concurrency",
        ["GET /status", "samples", "median ms", "p95 ms", "ratio median", "ratio p95"],
        rows,
        results,
    )
    print(
        f"(one generation took {single:.0f} ms, all {args.queued} {wall * 1000:.0f} ms: a blocked"
        f" event loop would have made /status wait that long; its p95 was {busy['p95_ms']} ms)"
    )


if __name__ == "__main__":
    asyncio.run(main())
