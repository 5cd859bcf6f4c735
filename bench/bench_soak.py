"""Memory over a long run: does the server's resident memory stay flat under steady traffic?

`gptactions serve` in a subprocess (SQLite) with two backends: the embedded model (the default)
and an OpenAI-compatible mock upstream that answers at once. Clients send a mix of what users
send: `--clients` (4) send conversations and follow-ups, streamed replies, actions,
`/v1/chat/completions`, log pages and status to the upstream, as fast as it answers;
`--model-clients` (2) send conversations, follow-ups and streams to the embedded model. The
server's RSS is read from /proc every `--interval` seconds (10). The reference is the run's own
first sample, taken after a warm-up in which every kind of request ran once. Printed: the
samples, the least-squares slope (MB per minute) over the whole run and over its second half,
and the ratio of the last sample to the first; the target is a ratio within 10% and no upward
trend in the second half.
Run: .venv/bin/python bench/bench_soak.py [--minutes 10]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from common import BENCH_KEY, mock_upstream, report, server_process

API = "/api/v1/gpt"
Request = Callable[[httpx.AsyncClient, "Client"], Awaitable[int]]


class Client:
    """One simulated user: a conversation on each backend, continued for a few turns."""

    TURNS = 6

    def __init__(self, name: str, max_tokens: int) -> None:
        self.name = name
        self.max_tokens = max_tokens
        self.conversations: dict[str, tuple[str, int]] = {}
        self.counter = itertools.count()

    def message(self) -> str:
        return f"Message {next(self.counter)} from {self.name}: tell me about lighthouses."

    async def converse(self, http: httpx.AsyncClient, model: str | None) -> int:
        """Start a conversation on `model`, or continue the current one for a few turns."""
        body: dict[str, Any] = {"userId": self.name, "message": self.message()}
        body["maxTokens"] = self.max_tokens
        if model:
            body["model"] = model
        path = f"{API}/conversations"
        current = self.conversations.get(model or "")
        if current and current[1] < self.TURNS:
            body["conversationId"] = current[0]
            path = f"{API}/respond"
        response = await http.post(path, json=body)
        if response.status_code == 200:
            turns = current[1] + 1 if current and "conversationId" in body else 1
            self.conversations[model or ""] = (response.json()["conversationId"], turns)
        return response.status_code


async def _model_turn(http: httpx.AsyncClient, client: Client) -> int:
    return await client.converse(http, None)


async def _mock_turn(http: httpx.AsyncClient, client: Client) -> int:
    return await client.converse(http, "mock")


async def _stream(http: httpx.AsyncClient, client: Client, model: str | None) -> int:
    body: dict[str, Any] = {"userId": client.name, "message": client.message()}
    body["maxTokens"] = client.max_tokens
    if model:
        body["model"] = model
    headers = {"Accept": "text/event-stream"}
    async with http.stream("POST", f"{API}/conversations", json=body, headers=headers) as response:
        async for _ in response.aiter_lines():
            pass
        return response.status_code


async def _mock_stream(http: httpx.AsyncClient, client: Client) -> int:
    return await _stream(http, client, "mock")


async def _model_stream(http: httpx.AsyncClient, client: Client) -> int:
    return await _stream(http, client, None)


async def _action(http: httpx.AsyncClient, client: Client) -> int:
    body = {
        "action": "summarize",
        "parameters": {"text": client.message() * 4},
        "userId": client.name,
        "model": "mock",
    }
    return (await http.post(f"{API}/actions", json=body)).status_code


async def _completion(http: httpx.AsyncClient, client: Client) -> int:
    body = {
        "model": "mock",
        "messages": [{"role": "user", "content": client.message()}],
        "max_tokens": client.max_tokens,
        "user": client.name,
    }
    return (await http.post("/v1/chat/completions", json=body)).status_code


async def _logs(http: httpx.AsyncClient, client: Client) -> int:
    params = {"userId": client.name, "limit": "50"}
    return (await http.get(f"{API}/logs", params=params)).status_code


async def _status(http: httpx.AsyncClient, client: Client) -> int:
    return (await http.get(f"{API}/status")).status_code


# What the upstream clients send, round after round (the mock answers at once)...
UPSTREAM_ROUND: list[tuple[str, Request]] = [
    ("mock turn", _mock_turn),
    ("mock turn", _mock_turn),
    ("mock stream", _mock_stream),
    ("completion", _completion),
    ("mock turn", _mock_turn),
    ("logs", _logs),
    ("action", _action),
    ("mock turn", _mock_turn),
    ("status", _status),
    ("mock stream", _mock_stream),
]
# ...and the model clients (on two shared cores a generation takes a second or two).
MODEL_ROUND: list[tuple[str, Request]] = [
    ("model turn", _model_turn),
    ("model turn", _model_turn),
    ("model stream", _model_stream),
]


def rss_mb(pid: int) -> float:
    """The process's resident memory, in MB, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over x (0 with fewer than two points)."""
    if len(points) < 2:
        return 0.0
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread if spread else 0.0


async def traffic(
    http: httpx.AsyncClient,
    client: Client,
    mix: list[tuple[str, Request]],
    until: float,
    statuses: Counter[tuple[str, int | str]],
) -> None:
    """Rounds of `mix` until the monotonic clock reaches `until`."""
    for name, send in itertools.cycle(mix):
        if time.monotonic() >= until:
            return
        try:
            statuses[(name, await send(http, client))] += 1
        except httpx.HTTPError as error:
            statuses[(name, type(error).__name__)] += 1


async def soak(url: str, pid: int, upstream: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Warm up, then run the mix for `args.minutes` while sampling the server's memory."""
    headers = {"Authorization": f"Bearer {BENCH_KEY}"}
    limits = httpx.Limits(max_connections=(args.clients + args.model_clients) * 2)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120, limits=limits) as http:
        upstream_clients = [Client(f"soak-{n}", args.max_tokens) for n in range(args.clients)]
        model_clients = [Client(f"model-{n}", args.max_tokens) for n in range(args.model_clients)]
        warm: Counter[tuple[str, int]] = Counter()
        for name, send in UPSTREAM_ROUND + MODEL_ROUND:  # each path once: no cold start sampled
            warm[(name, await send(http, Client("warm-up", args.max_tokens)))] += 1
        failed = {key: n for key, n in warm.items() if key[1] != 200}
        if failed:
            raise RuntimeError(f"warm-up requests failed: {failed}")

        started = time.monotonic()
        until = started + args.minutes * 60
        statuses: Counter[tuple[str, int | str]] = Counter()
        samples: list[tuple[float, float, int]] = []
        load = [
            asyncio.ensure_future(traffic(http, client, mix, until, statuses))
            for clients, mix in ((upstream_clients, UPSTREAM_ROUND), (model_clients, MODEL_ROUND))
            for client in clients
        ]
        while True:
            elapsed = time.monotonic() - started
            samples.append((round(elapsed, 1), round(rss_mb(pid), 1), sum(statuses.values())))
            upstream.requests.clear()  # the mock keeps every request; this process is not measured
            if elapsed >= args.minutes * 60:
                break
            await asyncio.sleep(min(args.interval, max(0.0, until - time.monotonic())))
        await asyncio.gather(*load)

    points = [(t / 60, mb) for t, mb, _ in samples]
    second_half = [p for p in points if p[0] >= points[-1][0] / 2]
    start, end = points[0][1], points[-1][1]
    end_ratio = round(end / start, 3)
    late_slope = slope(second_half)
    return {
        "samples": samples,
        "start_mb": start,
        "end_mb": end,
        "peak_mb": max(mb for _, mb in points),
        "end_to_start_ratio": end_ratio,
        "slope_mb_per_minute": round(slope(points), 3),
        "second_half_slope_mb_per_minute": round(late_slope, 3),
        # Within 10%, and the second half no longer climbing by more than 1% of the start over
        # the whole run's length.
        "flat": abs(end_ratio - 1) <= 0.10 and late_slope * args.minutes <= 0.01 * start,
        "requests": sum(statuses.values()),
        "requests_by_kind": {
            f"{name} {status}": count for (name, status), count in sorted(statuses.items())
        },
        "non_200": sum(n for (_, status), n in statuses.items() if status != 200),
    }


def main() -> None:
    """Start the server and the mock upstream, soak, print the samples and the verdict."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--interval", type=float, default=10.0, help="Seconds between samples.")
    parser.add_argument("--clients", type=int, default=4, help="Clients of the upstream mix.")
    parser.add_argument("--model-clients", type=int, default=2, help="Clients of the model.")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as directory, mock_upstream() as upstream:
        backends = [{"name": "mock", "url": upstream.url("ok"), "model": "mock"}]
        with server_process(
            f"sqlite:///{directory}/soak.db",
            backends=json.dumps(backends),
            default_backend="local",
            model_threads=str(args.threads),
        ) as (url, process):
            results = asyncio.run(soak(url, process.pid, upstream, args))

    report(
        "soak",
        ["t s", "RSS MB", "requests"],
        results["samples"],
        {
            **{k: v for k, v in results.items() if k != "samples"},
            "samples": results["samples"],
            "minutes": args.minutes,
            "clients": args.clients,
            "model_clients": args.model_clients,
            "max_tokens": args.max_tokens,
            "threads": args.threads,
        },
    )
    print(
        f"RSS {results['start_mb']} MB -> {results['end_mb']} MB "
        f"(ratio {results['end_to_start_ratio']}), slope {results['slope_mb_per_minute']} MB/min, "
        f"second half {results['second_half_slope_mb_per_minute']} MB/min: "
        f"{'flat' if results['flat'] else 'NOT flat'}; {results['requests']} requests, "
        f"{results['non_200']} not 200"
    )


if __name__ == "__main__":
    main()
