"""Aggregate tokens/s of the embedded model under concurrent clients: batched against one at a time.

The same streamed requests (`POST /conversations` with `Accept: text/event-stream`) go to
`gptactions serve` with continuous batching (`GPTACTIONS_MODEL_PARALLEL=8`) and to the same
server with `GPTACTIONS_MODEL_PARALLEL=1` (one request at a time), at 1, 4, 8 and 16 concurrent
clients and 64 and 256 new tokens; each client sends `--rounds` requests one after the other.
When `LLAMA_SERVER` names a `llama-server` binary (llama.cpp's C++ server), the same requests
go to it too (`--parallel 8`, the same threads, model, prompts and sampling: greedy, repetition
penalty 1.1 over 64 tokens) through its `/v1/chat/completions`, as the reference.
Printed: completion tokens per second of wall time, and time to first token (p50, p95).
Run: .venv/bin/python bench/bench_batching.py   (LLAMA_SERVER=/path/to/llama-server)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
from common import BENCH_KEY, free_port, process_server, ratio, report, server

from gptactions.config import Settings
from gptactions.llm.llama_model import extra_buffers_safe
from gptactions.llm.local import bundled_model_path, default_threads

TOPICS = [
    "a lighthouse keeper",
    "a dragon who cannot fly",
    "a robot learning to paint",
    "a lost dog in a big city",
    "two rival bakers",
    "a ship in a storm",
    "a girl who talks to trees",
    "an old clockmaker",
    "a mountain village in winter",
    "a detective who hates rain",
    "a garden on the moon",
    "a musician who lost her voice",
    "a fox and a crow",
    "a train that never stops",
    "a library at midnight",
    "a boy who builds a kite",
]
SYSTEM = Settings().system_prompt


@dataclass
class Result:
    """One request: its completion tokens, time to first token, and whole duration."""

    tokens: int
    ttft: float
    seconds: float


Send = Callable[[httpx.AsyncClient, int, int], Awaitable[Result]]


def prompt(index: int) -> str:
    return f"Write a long story about {TOPICS[index % len(TOPICS)]}."


async def send_gptactions(client: httpx.AsyncClient, index: int, max_tokens: int) -> Result:
    """One streamed conversation turn through the API."""
    body = {"userId": f"bench-{index}", "message": prompt(index), "maxTokens": max_tokens}
    headers = {"Accept": "text/event-stream", "Authorization": f"Bearer {BENCH_KEY}"}
    started = time.perf_counter()
    ttft = 0.0
    tokens = 0
    async with client.stream(
        "POST", "/api/v1/gpt/conversations", json=body, headers=headers
    ) as response:
        response.raise_for_status()
        event = ""
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data = json.loads(line[5:])
                if event == "token" and not ttft:
                    ttft = time.perf_counter() - started
                if isinstance(data, dict) and "usage" in data:
                    tokens = int(data["usage"]["completionTokens"])
    return Result(tokens, ttft, time.perf_counter() - started)


async def send_llama_server(client: httpx.AsyncClient, index: int, max_tokens: int) -> Result:
    """The same request to llama-server's OpenAI-compatible endpoint."""
    body = {
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": prompt(index)},
        ],
        "max_tokens": max_tokens,
        "temperature": 0,
        "repeat_penalty": 1.1,
        "repeat_last_n": 64,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    ttft = 0.0
    tokens = 0
    deltas = 0
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data:") or line.strip() == "data: [DONE]":
                continue
            data = json.loads(line[5:])
            for choice in data.get("choices") or []:
                if (choice.get("delta") or {}).get("content"):
                    deltas += 1
                    ttft = ttft or time.perf_counter() - started
            if data.get("usage"):
                tokens = int(data["usage"]["completion_tokens"])
    return Result(tokens or deltas, ttft, time.perf_counter() - started)


async def load(
    url: str, send: Send, clients: int, max_tokens: int, rounds: int
) -> dict[str, float]:
    """`clients` concurrent clients, each sending `rounds` requests in turn."""
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:

        async def one_client(number: int) -> list[Result]:
            return [
                await send(client, number * rounds + turn, max_tokens) for turn in range(rounds)
            ]

        started = time.perf_counter()
        per_client = await asyncio.gather(*(one_client(n) for n in range(clients)))
        wall = time.perf_counter() - started
    results = [r for client_results in per_client for r in client_results]
    ttfts = sorted(r.ttft for r in results)
    tokens = sum(r.tokens for r in results)
    return {
        "tokens": tokens,
        "seconds": round(wall, 2),
        "tokens_per_second": round(tokens / wall, 1),
        "ttft_p50_ms": round(statistics.median(ttfts) * 1000),
        "ttft_p95_ms": round(ttfts[min(len(ttfts) - 1, round(0.95 * (len(ttfts) - 1)))] * 1000),
    }


@contextmanager
def llama_server(binary: str, threads: int, parallel: int, window: int) -> Iterator[str]:
    """llama.cpp's own server on the same model file."""
    port = free_port()
    command = [
        binary,
        "-m",
        str(bundled_model_path()),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "-t",
        str(threads),
        "-tb",
        str(threads),
        "--parallel",
        str(parallel),
        "-c",
        str(parallel * window),
        "--no-webui",
        # The same weights placement as ours: no extra buffer types where they crash.
        *([] if extra_buffers_safe() else ["--no-repack"]),
    ]
    with process_server("llama-server", command, port, _llama_ready) as (url, _):
        yield url


def _llama_ready(url: str) -> bool:
    return httpx.get(f"{url}/health", timeout=2).status_code == 200


async def run_matrix(
    url: str, send: Send, clients: list[int], sizes: list[int], rounds: int
) -> dict[str, dict[str, float]]:
    await load(url, send, 1, 8, 1)  # warm-up
    out: dict[str, dict[str, float]] = {}
    for size in sizes:
        for count in clients:
            out[f"{count}x{size}"] = await load(url, send, count, size, rounds)
            print(f"  {count} clients, {size} tokens: {out[f'{count}x{size}']}", flush=True)
    return out


def main() -> None:
    """Every server, every load; then the table and the targets' ratios."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", default="1,4,8,16")
    parser.add_argument("--max-tokens", default="64,256")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--parallel", type=int, default=8)
    args = parser.parse_args()
    clients = [int(c) for c in args.clients.split(",")]
    sizes = [int(s) for s in args.max_tokens.split(",")]
    window = Settings().context_window
    binary = os.environ.get("LLAMA_SERVER")

    runs: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, parallel in (
            (f"batched (parallel={args.parallel})", args.parallel),
            ("parallel=1", 1),
        ):
            print(f"{name}:", flush=True)
            settings = {
                "model_threads": str(args.threads),
                "model_parallel": str(parallel),
                # Throughput, not ChatGPT's budget: 16 clients queue longer than 40 s at PARALLEL=1.
                "request_deadline": "1800",
                "model_queue": "64",
            }
            with server(f"sqlite:///{tmp}/{parallel}.db", **settings) as url:
                runs[name] = asyncio.run(
                    run_matrix(url, send_gptactions, clients, sizes, args.rounds)
                )
    if binary:
        name = f"llama-server (--parallel {args.parallel})"
        print(f"{name}:", flush=True)
        with llama_server(binary, args.threads, args.parallel, window) as url:
            runs[name] = asyncio.run(
                run_matrix(url, send_llama_server, clients, sizes, args.rounds)
            )
    else:
        print("LLAMA_SERVER is not set: no llama-server reference in this run")

    names = list(runs)
    rows = []
    for size in sizes:
        for count in clients:
            key = f"{count}x{size}"
            rows.append(
                [count, size]
                + [runs[n][key]["tokens_per_second"] for n in names]
                + [runs[n][key]["ttft_p50_ms"] for n in names]
            )
    header = (
        ["clients", "tokens"] + [f"tok/s {n}" for n in names] + [f"TTFT p50 ms {n}" for n in names]
    )
    batched, single = names[0], names[1]
    targets: dict[str, float] = {}
    for size in sizes if {1, 8} <= set(clients) else []:  # the targets compare 8 with 1
        b8 = runs[batched][f"8x{size}"]
        b1 = runs[batched][f"1x{size}"]
        targets[f"8 clients {size} tok: batched / parallel=1 (>= 1.8)"] = ratio(
            b8["tokens_per_second"], runs[single][f"8x{size}"]["tokens_per_second"]
        )
        targets[f"8 clients {size} tok: TTFT p50 / 1 client (<= 3)"] = ratio(
            b8["ttft_p50_ms"], b1["ttft_p50_ms"]
        )
        if binary:
            reference = runs[names[2]]
            targets[f"8 clients {size} tok: batched / llama-server (>= 1.0)"] = ratio(
                b8["tokens_per_second"], reference[f"8x{size}"]["tokens_per_second"]
            )
            targets[f"1 client {size} tok: batched / llama-server (>= 0.95)"] = ratio(
                b1["tokens_per_second"], reference[f"1x{size}"]["tokens_per_second"]
            )
    report(
        "batching",
        header,
        rows,
        {"threads": args.threads, "rounds": args.rounds, "runs": runs, "targets": targets},
    )
    for label, value in targets.items():
        print(f"{label}: {value}")
    if 8 in clients:
        b8 = runs[batched][f"8x{sizes[0]}"]
        print(
            f"TTFT at 8 clients, {sizes[0]} tokens: "
            f"p50 {b8['ttft_p50_ms']} ms, p95 {b8['ttft_p95_ms']} ms"
        )


if __name__ == "__main__":
    main()
