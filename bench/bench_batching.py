"""Aggregate tokens/s of the embedded model under concurrent clients: batched against one at a time.

The same streamed requests (`POST /conversations` with `Accept: text/event-stream`) go to
`gptactions serve` with continuous batching (`GPTACTIONS_MODEL_PARALLEL=8`) and to the same
server with `GPTACTIONS_MODEL_PARALLEL=1` (one request at a time), at 1, 4, 8 and 16 concurrent
clients and 64 and 256 new tokens; each client sends `--rounds` requests one after the other.
Every request is a new prompt (a topic and a place no earlier request of that server had) after
the shared system prompt: what new users send, so no server answers from a cached prompt.
All servers run side by side (idle when not driven) and each load point is repeated `--repeats`
times, the servers taking turns in a rotating order; tokens/s is the median of the repeats, and
the time to first token's p50/p95 are over every request of every repeat. A slow minute of the
machine then falls on all of them instead of on whichever ran at that moment.
When `LLAMA_SERVER` names a `llama-server` binary (llama.cpp's C++ server), the same requests
go to it too (`--parallel 8`, the same threads, model, prompts and sampling: greedy, repetition
penalty 1.1 over 64 tokens) through its `/v1/chat/completions`, as the reference, at its
default flash attention (`-fa auto`), as gptactions runs; `--llama-flash-attn auto,off` adds
one with it off; `--llama-one` adds llama-server with `--parallel 1`, whose ratio to its
`--parallel 8` says how much batching gains on this CPU at all.
Printed: completion tokens per second of wall time, and time to first token (p50, p95).
Every client of a load point starts at once: a burst, whose first tokens wait for the prompts
ahead of them (the CPU processes ~400 prompt tokens/s here, so of 8 new prompts the median one
is answered after ~4.5 prompts' time, whatever the order). Users of a service do not arrive in
step, so at 8 clients the time to first token is also measured with arrivals spread: client n
starts n/8 of a request's duration (that server's median at the burst) after the first, each
sends `--rounds` + 1 requests, and the first round (the ramp-up) is left out.
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
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

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
PLACES = [
    "Paris", "a desert", "the sea", "a forest", "Tokyo", "a small town", "space", "an island",
    "the mountains", "a castle", "a harbour", "the jungle", "a farm", "Venice", "the Arctic",
    "a city of glass", "a river boat", "a circus", "a school", "a market", "the year 3000",
    "ancient Rome", "a lighthouse", "a cave", "the clouds", "a tiny planet", "a museum",
    "a railway station", "an orchard", "a coral reef", "a snowy pass", "a busy kitchen",
    "a windmill", "a quiet monastery", "a theatre", "a vineyard", "a canyon", "a bazaar",
    "a frozen lake", "a treehouse",
]  # fmt: skip
SYSTEM = Settings().system_prompt
SPREAD_CLIENTS = 8
"""The load point also measured with arrivals spread (the time-to-first-token target's)."""


@dataclass
class Result:
    """One request: its completion tokens, time to first token, and whole duration."""

    tokens: int
    ttft: float
    seconds: float


Send = Callable[[httpx.AsyncClient, int, int], Awaitable[Result]]


def prompt(index: int) -> str:
    """The `index`-th prompt: 640 different ones before they repeat."""
    place = PLACES[(index // len(TOPICS)) % len(PLACES)]
    return f"Write a long story about {TOPICS[index % len(TOPICS)]}, set in {place}."


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


@dataclass
class Load:
    """One run of a load point on one server: tokens/s of wall time, every request's TTFT and
    duration (for spread arrivals, the TTFTs after the first round only)."""

    tokens_per_second: float
    ttfts: list[float]
    seconds: list[float]


async def load(
    url: str,
    send: Send,
    clients: int,
    max_tokens: int,
    rounds: int,
    first: int = 0,
    spread: float = 0.0,
) -> Load:
    """`clients` concurrent clients, each sending `rounds` requests in turn, with the prompts
    `first`, `first + 1`, ...; with `spread` seconds, client n starts n * spread / clients
    after the first, and the first round's TTFTs are left out."""
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:

        async def one_client(number: int) -> list[Result]:
            await asyncio.sleep(number * spread / clients)
            return [
                await send_again_once(client, first + number * rounds + turn)
                for turn in range(rounds)
            ]

        async def send_again_once(client: httpx.AsyncClient, index: int) -> Result:
            # llama-server now and then drops a new keep-alive connection before answering (seen
            # here once in ~200 requests); the request is sent again, and said so.
            try:
                return await send(client, index, max_tokens)
            except httpx.RemoteProtocolError as error:
                print(f"  note: {url} dropped request {index} ({error}); sent it again")
                return await send(client, index, max_tokens)

        started = time.perf_counter()
        per_client = await asyncio.gather(*(one_client(n) for n in range(clients)))
        wall = time.perf_counter() - started
    results = [r for client_results in per_client for r in client_results]
    measured = [r for one in per_client for r in (one[1:] if spread else one)]
    return Load(
        round(sum(r.tokens for r in results) / wall, 1),
        [r.ttft for r in measured],
        [r.seconds for r in results],
    )


def summarize(loads: list[Load]) -> dict[str, Any]:
    """The repeats of one load point on one server."""
    ttfts = sorted(t for one in loads for t in one.ttfts)
    return {
        "tokens_per_second": round(statistics.median(one.tokens_per_second for one in loads), 1),
        "repeats_tokens_per_second": [one.tokens_per_second for one in loads],
        "ttft_p50_ms": round(statistics.median(ttfts) * 1000),
        "ttft_p95_ms": round(ttfts[min(len(ttfts) - 1, round(0.95 * (len(ttfts) - 1)))] * 1000),
        "request_seconds_p50": round(statistics.median(t for one in loads for t in one.seconds), 3),
    }


@contextmanager
def llama_server(
    binary: str, threads: int, parallel: int, window: int, flash_attention: str
) -> Iterator[str]:
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
        "--flash-attn",
        flash_attention,
        # The same weights placement as ours: no extra buffer types where they crash.
        *([] if extra_buffers_safe() else ["--no-repack"]),
    ]
    with process_server("llama-server", command, port, _llama_ready) as (url, _):
        yield url


def _llama_ready(url: str) -> bool:
    return httpx.get(f"{url}/health", timeout=2).status_code == 200


def in_turn(names: list[str], repeat: int) -> list[str]:
    """The servers in the order of this repeat: each starts in turn."""
    return names[repeat % len(names) :] + names[: repeat % len(names)]


async def run_matrix(
    servers: dict[str, tuple[str, Send]],
    clients: list[int],
    sizes: list[int],
    rounds: int,
    repeats: int,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Every load point `repeats` times on every server, the servers taking turns."""
    names = list(servers)
    for url, send in servers.values():
        await load(url, send, 1, 8, 1, first=len(TOPICS) * len(PLACES) - 1)  # warm-up
    loads: dict[str, dict[str, list[Load]]] = {name: {} for name in names}
    first = 0
    for size in sizes:
        for count in clients:
            key = f"{count}x{size}"
            for repeat in range(repeats):
                for name in in_turn(names, repeat):  # the same new prompts for each server
                    url, send = servers[name]
                    one = await load(url, send, count, size, rounds, first)
                    loads[name].setdefault(key, []).append(one)
                    print(
                        f"  {name}, {count} clients, {size} tokens, repeat {repeat + 1}: "
                        f"{one.tokens_per_second} tok/s",
                        flush=True,
                    )
                first += count * rounds
            if count != SPREAD_CLIENTS:
                continue
            # The same clients with arrivals spread over one request's duration at the burst.
            for repeat in range(repeats):
                for name in in_turn(names, repeat):
                    url, send = servers[name]
                    spread = statistics.median(t for one in loads[name][key] for t in one.seconds)
                    one = await load(url, send, count, size, rounds + 1, first, spread)
                    loads[name].setdefault(f"{key} spread", []).append(one)
                    print(
                        f"  {name}, {count} clients spread over {spread:.1f} s, {size} tokens, "
                        f"repeat {repeat + 1}: TTFT p50 "
                        f"{round(statistics.median(one.ttfts) * 1000)} ms",
                        flush=True,
                    )
                first += count * (rounds + 1)
    if first > len(TOPICS) * len(PLACES):
        print(f"note: {first} requests per server, so some prompts came twice")
    return {name: {key: summarize(runs) for key, runs in loads[name].items()} for name in names}


def main() -> None:
    """Every server, every load; then the table and the targets' ratios."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", default="1,4,8,16")
    parser.add_argument("--max-tokens", default="64,256")
    parser.add_argument("--rounds", type=int, default=2, help="requests per client, in turn")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each load point")
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument(
        "--llama-flash-attn",
        default="auto",
        help="llama-server's --flash-attn, one server per value (auto,off: two servers); auto "
        "is its default and gptactions' (llama.cpp's own default for the context)",
    )
    parser.add_argument(
        "--llama-one",
        action="store_true",
        help="also llama-server --parallel 1: how much llama.cpp's own batching gains on this CPU "
        "at 8 clients, the ceiling of the batched / parallel=1 target",
    )
    args = parser.parse_args()
    clients = [int(c) for c in args.clients.split(",")]
    sizes = [int(s) for s in args.max_tokens.split(",")]
    window = Settings().context_window
    binary = os.environ.get("LLAMA_SERVER")

    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        servers: dict[str, tuple[str, Send]] = {}
        for name, parallel in (
            (f"batched (parallel={args.parallel})", args.parallel),
            ("parallel=1", 1),
        ):
            settings = {
                "model_threads": str(args.threads),
                "model_parallel": str(parallel),
                # Throughput, not ChatGPT's budget: 16 clients queue longer than 40 s at PARALLEL=1.
                "request_deadline": "1800",
                "model_queue": "64",
            }
            url = stack.enter_context(server(f"sqlite:///{tmp}/{parallel}.db", **settings))
            servers[name] = (url, send_gptactions)
        references = []
        for flash_attention in args.llama_flash_attn.split(",") if binary else []:
            name = f"llama-server (--parallel {args.parallel} -fa {flash_attention})"
            url = stack.enter_context(
                llama_server(binary or "", args.threads, args.parallel, window, flash_attention)
            )
            servers[name] = (url, send_llama_server)
            references.append(name)
        one_at_a_time = None
        if binary and args.llama_one:
            one_at_a_time = "llama-server (--parallel 1)"
            flash_attention = args.llama_flash_attn.split(",")[0]
            url = stack.enter_context(
                llama_server(binary, args.threads, 1, window, flash_attention)
            )
            servers[one_at_a_time] = (url, send_llama_server)
        if not binary:
            print("LLAMA_SERVER is not set: no llama-server reference in this run")
        runs = asyncio.run(run_matrix(servers, clients, sizes, args.rounds, args.repeats))

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
            if count == SPREAD_CLIENTS:  # its tokens/s include the ramp-up: not comparable
                rows.append(
                    [f"{count} spread", size]
                    + ["-" for _ in names]
                    + [runs[n][f"{key} spread"]["ttft_p50_ms"] for n in names]
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
        b8_spread = runs[batched][f"8x{size} spread"]
        targets[f"8 clients {size} tok, arrivals spread: TTFT p50 / 1 client (<= 3)"] = ratio(
            b8_spread["ttft_p50_ms"], b1["ttft_p50_ms"]
        )
        targets[f"8 clients {size} tok, burst: TTFT p50 / 1 client"] = ratio(
            b8["ttft_p50_ms"], b1["ttft_p50_ms"]
        )
        for name in references:
            reference = runs[name]
            label = name.removeprefix("llama-server ")
            targets[f"8 clients {size} tok: batched / llama-server {label} (>= 1.0)"] = ratio(
                b8["tokens_per_second"], reference[f"8x{size}"]["tokens_per_second"]
            )
            targets[f"1 client {size} tok: batched / llama-server {label} (>= 0.95)"] = ratio(
                b1["tokens_per_second"], reference[f"1x{size}"]["tokens_per_second"]
            )
            if one_at_a_time is not None:
                targets[f"8 clients {size} tok: llama-server {label} / --parallel 1"] = ratio(
                    reference[f"8x{size}"]["tokens_per_second"],
                    runs[one_at_a_time][f"8x{size}"]["tokens_per_second"],
                )
            for arrivals, suffix in (("arrivals spread", " spread"), ("burst", "")):
                targets[
                    f"8 clients {size} tok, {arrivals}: llama-server {label} TTFT p50 / 1 client"
                ] = ratio(
                    reference[f"8x{size}{suffix}"]["ttft_p50_ms"],
                    reference[f"1x{size}"]["ttft_p50_ms"],
                )
    report(
        "batching",
        header,
        rows,
        {
            "threads": args.threads,
            "rounds": args.rounds,
            "repeats": args.repeats,
            "runs": runs,
            "targets": targets,
        },
    )
    for label, value in targets.items():
        print(f"{label}: {value}")
    if SPREAD_CLIENTS in clients:
        for suffix, arrivals in (("", "burst"), (" spread", "arrivals spread")):
            b8 = runs[batched][f"{SPREAD_CLIENTS}x{sizes[0]}{suffix}"]
            print(
                f"TTFT at {SPREAD_CLIENTS} clients, {sizes[0]} tokens, {arrivals}: "
                f"p50 {b8['ttft_p50_ms']} ms, p95 {b8['ttft_p95_ms']} ms"
            )


if __name__ == "__main__":
    main()
