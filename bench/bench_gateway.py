"""gptactions in front of an instant upstream, against bare Starlette and LiteLLM's proxy.

Started in this order, one at a time, each in its own process: an instant OpenAI-compatible mock
upstream, a bare Starlette echo app, the floor (`serve_floor`: the least a durable gateway does
per request), `gptactions serve` pointed at the mock (SQLite, then
PostgreSQL when 127.0.0.1:5432 answers; with `--workers 2` also two workers on SQLite), and
LiteLLM's proxy pointed at the same mock when it is installed (the `bench` extra); with
`--workers N`, one and N workers up at once, measured in `--rounds` short rounds at c=32
that alternate between them, so that the workers ratio is not moved by the machine's speed
drifting from one minute to the next (it moves a single pair of runs a lot). Each is driven
by the same load generator, wrk when installed, else this script's own asyncio client (raw
keep-alive HTTP/1.1, lighter than httpx), at 1 and 32 connections. Printed: p50, p99 and req/s;
each req/s as a ratio to bare Starlette's and to LiteLLM's; the p50 gptactions adds at c=1 over
the mock alone, and gptactions' against the floor's. Run:
.venv/bin/python bench/bench_gateway.py [--quick] [--workers 2], with
LITELLM=/path/to/its/venv/bin/litellm for LiteLLM installed in a virtualenv of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import importlib.util
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from common import (
    BENCH_KEY,
    free_port,
    postgres_databases,
    postgres_reachable,
    process_server,
    ratio,
    report,
    server,
    server_process,
)

HERE = Path(__file__).resolve()
COMPLETION = json.dumps(
    {
        "id": "chatcmpl-mock",
        "object": "chat.completion",
        "created": 0,
        "model": "mock",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello from the mock."},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }
).encode()
# gptactions streams from its backends under a request deadline: the same answer as events.
STREAMED = b"".join(
    b"data: " + json.dumps(event).encode() + b"\n\n"
    for event in (
        {"id": "chatcmpl-mock", "object": "chat.completion.chunk", "model": "mock", "choices": [
            {"index": 0, "delta": {"role": "assistant", "content": "Hello from the mock."},
             "finish_reason": None}]},
        {"id": "chatcmpl-mock", "object": "chat.completion.chunk", "model": "mock", "choices": [
            {"index": 0, "delta": {}, "finish_reason": "stop"}],
         "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}},
    )
) + b"data: [DONE]\n\n"  # fmt: skip
MODELS = json.dumps({"object": "list", "data": [{"id": "mock", "object": "model"}]}).encode()
CHAT = {"model": "mock", "messages": [{"role": "user", "content": "Say hello."}]}
CONVERSE = {"userId": "bench", "message": "Say hello."}
CONVERSATIONS = "/api/v1/gpt/conversations"


# --- the servers (each runs in its own process) ------------------------------------------------


def serve_mock(port: int) -> None:
    """An instant OpenAI-compatible upstream: a bare asyncio protocol on uvloop, keep-alive, a
    fixed answer.

    Its own process, unlike common.mock_upstream's thread: here the mock is measured alone at
    thousands of requests per second, and must not share a GIL with the load generator. It
    shares the machine's two cores with what it serves, so it is kept as cheap as a Python
    server gets (a protocol, not streams: 23 us of CPU a request at c=32 instead of 35), the
    nearest this machine has to an upstream on a machine of its own.
    """

    class Upstream(asyncio.Protocol):
        def __init__(self) -> None:
            self.buffer = b""
            self.transport: asyncio.Transport | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

        def data_received(self, data: bytes) -> None:
            self.buffer += data
            while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
                head = self.buffer[:end]
                length = re.search(rb"(?i)content-length:\s*(\d+)", head)
                size = end + 4 + (int(length.group(1)) if length else 0)
                if len(self.buffer) < size:
                    return
                request, self.buffer = self.buffer[end + 4 : size], self.buffer[size:]
                kind, body = b"application/json", COMPLETION
                if head.startswith(b"GET"):
                    body = MODELS
                elif re.search(rb'"stream":\s*true', request):
                    kind, body = b"text/event-stream", STREAMED
                assert self.transport is not None
                self.transport.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: %s\r\n"
                    b"content-length: %d\r\n\r\n%s" % (kind, len(body), body)
                )

    async def main() -> None:
        loop = asyncio.get_running_loop()
        listener = await loop.create_server(Upstream, "127.0.0.1", port, backlog=1024)
        async with listener:
            await listener.serve_forever()

    try:
        import uvloop
    except ImportError:  # uvicorn's `standard` extra brings it; without it, asyncio's own loop
        asyncio.run(main())
    else:
        uvloop.run(main())


def serve_echo(port: int) -> None:
    """Bare Starlette: parse the JSON body, answer it back (the Python ceiling here)."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def echo(request: Request) -> JSONResponse:
        return JSONResponse({"echo": await request.json()})

    app = Starlette(routes=[Route("/echo", echo, methods=["POST"])])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


FLOOR_TABLE = (
    "CREATE TABLE IF NOT EXISTS interactions (id TEXT PRIMARY KEY, user_id TEXT NOT NULL, "
    "message TEXT NOT NULL, reply TEXT NOT NULL, created_at REAL NOT NULL)"
)


FLOOR = "floor: Starlette+aiohttp+SQLite"


def serve_floor(port: int, upstream: str, database: str) -> None:
    """The least a durable gateway can do per request, as one Starlette route: parse and check
    the JSON body, stream the reply from the upstream through one aiohttp session (as
    gptactions does, for its deadline), insert one row into SQLite (WAL, `synchronous=FULL`)
    and commit it on the event loop itself, with no hand-off to a thread or process, then
    answer. No keys, no limits, no logs, no metrics, no conversations: the floor under
    gptactions' cost, which says how much of what gptactions adds any such server pays here.
    """
    import sqlite3
    import uuid

    import aiohttp
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    connection = sqlite3.connect(database, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute(FLOOR_TABLE)
    session: aiohttp.ClientSession | None = None

    async def converse(request: Request) -> JSONResponse:
        nonlocal session
        body = await request.json()
        message, user = body.get("message"), body.get("userId")
        if not isinstance(message, str) or not isinstance(user, str):
            return JSONResponse({"error": "message and userId must be strings"}, 400)
        if session is None:
            session = aiohttp.ClientSession()
        chat = {"model": "mock", "messages": [{"role": "user", "content": message}]}
        reply = []
        async with session.post(f"{upstream}/chat/completions", json=chat | {"stream": True}) as r:
            async for line in r.content:
                if line.startswith(b"data: {"):
                    for choice in json.loads(line[6:])["choices"]:
                        reply.append(choice["delta"].get("content") or "")
        text, identifier = "".join(reply), uuid.uuid4().hex
        connection.execute("BEGIN")
        connection.execute(
            "INSERT INTO interactions VALUES (?, ?, ?, ?, ?)",
            (identifier, user, message, text, time.time()),
        )
        connection.execute("COMMIT")
        return JSONResponse({"conversationId": identifier, "reply": text})

    app = Starlette(routes=[Route(CONVERSATIONS, converse, methods=["POST"])])
    uvicorn.run(
        app, host="127.0.0.1", port=port, log_level="warning", loop="uvloop", http="httptools"
    )


def mock_settings(mock_url: str) -> dict[str, str]:
    """gptactions' settings for the mock upstream as its only backend (no embedded fallback)."""
    return {"backends": json.dumps([{"name": "mock", "url": f"{mock_url}/v1"}]), "fallback": "none"}


def _answers(url: str, path: str) -> bool:
    """Whether `url` answers `GET path` with anything but a server error."""
    return httpx.get(url + path, timeout=2).status_code < 500


LITELLM_KEY = "sk-bench-0123456789abcdefghijklmnopqrstuv"


@contextmanager
def own_server(name: str, flag: str) -> Iterator[str]:
    """This script's mock upstream or echo app in a subprocess; yields its base URL."""
    port = free_port()
    command = [sys.executable, str(HERE), flag, str(port)]
    with process_server(name, command, port, lambda url: _answers(url, "/v1/models")) as (url, _):
        yield url


@contextmanager
def floor_server(upstream: str, database: str) -> Iterator[str]:
    """`serve_floor` in a subprocess on the mock upstream; yields its base URL."""
    port = free_port()
    command = [sys.executable, str(HERE), "--serve-floor", str(port), upstream, database]

    def ready(url: str) -> bool:
        answer = httpx.post(url + CONVERSATIONS, json=CONVERSE, timeout=2)
        return answer.status_code == 200

    with process_server("the floor", command, port, ready) as (url, _):
        yield url


def litellm_binary() -> str | None:
    """LiteLLM's `litellm` command: `LITELLM` (LiteLLM in a virtualenv of its own, as its
    dependencies advise), else this environment's (the `bench` extra), else none."""
    named = os.environ.get("LITELLM")
    if named:
        return named
    if importlib.util.find_spec("litellm") is not None:
        return shutil.which("litellm") or str(Path(sys.executable).parent / "litellm")
    return None


@contextmanager
def litellm(mock_url: str, directory: str) -> Iterator[str]:
    """LiteLLM's proxy (1 worker, no database) in front of the mock; yields its base URL."""
    config = Path(directory) / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: mock\n"
        "    litellm_params:\n"
        "      model: openai/mock\n"
        f"      api_base: {mock_url}\n"
        "      api_key: none\n"
        "general_settings:\n"
        f"  master_key: {LITELLM_KEY}\n"  # it refuses to start without one, as we would
    )
    port = free_port()
    binary = litellm_binary()
    assert binary is not None
    args = [binary, "--config", str(config), "--port", str(port), "--num_workers", "1"]
    ready = functools.partial(_answers, path="/health/liveliness")
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}  # no fetch from GitHub at start
    with process_server("LiteLLM", args, port, ready, env=env, timeout=180) as (url, _):
        yield url


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database's URL, dropped afterwards (one event loop for both)."""
    loop = asyncio.new_event_loop()
    databases = postgres_databases(["gateway"])
    try:
        yield loop.run_until_complete(databases.__aenter__())["gateway"]
    finally:
        loop.run_until_complete(databases.__aexit__(None, None, None))
        loop.close()


# --- the load generators -----------------------------------------------------------------------


@dataclass(frozen=True)
class Load:
    """What one run measured."""

    p50_ms: float
    p99_ms: float
    rps: float


def _request(url: str, path: str, body: dict[str, object], headers: dict[str, str]) -> bytes:
    host = url.split("://", 1)[1]
    payload = json.dumps(body).encode()
    lines = [f"POST {path} HTTP/1.1", f"host: {host}", "content-type: application/json"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append(f"content-length: {len(payload)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


async def _asyncio_load(
    url: str, path: str, body: dict[str, object], headers: dict[str, str], c: int, seconds: float
) -> Load:
    """`c` keep-alive connections sending one request after the other for `seconds`."""
    request = _request(url, path, body, headers)
    host, port = url.split("://", 1)[1].split(":")
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def connection() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?i)content-length:\s*(\d+)", head)
                await reader.readexactly(int(length.group(1)) if length else 0)
                if not head.startswith(b"HTTP/1.1 200"):
                    errors += 1
                latencies.append(time.perf_counter() - started)
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(c)))
    elapsed = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{errors} answers to {url}{path} were not 200")
    ordered = sorted(latencies)
    return Load(
        p50_ms=round(ordered[len(ordered) // 2] * 1000, 2),
        p99_ms=round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 2),
        rps=round(len(ordered) / elapsed, 1),
    )


_WRK_SCRIPT = """wrk.method = "POST"
wrk.body = {body}
{headers}
"""
_WRK_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _wrk_load(
    url: str, path: str, body: dict[str, object], headers: dict[str, str], c: int, seconds: float
) -> Load:
    """wrk -t1 with a Lua script for the POST; its latency percentiles and req/s."""
    every = {"Content-Type": "application/json", **headers}
    lines = "\n".join(f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in every.items())
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(_WRK_SCRIPT.format(body=json.dumps(json.dumps(body)), headers=lines))
    try:
        duration = f"-d{max(1, round(seconds))}s"
        output = subprocess.run(
            ["wrk", "-t1", f"-c{c}", duration, "--latency", "-s", script.name, url + path],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        os.unlink(script.name)
    if "Non-2xx" in output:
        raise RuntimeError(f"wrk saw errors from {url}{path}:\n{output}")

    def percentile(name: str) -> float:
        match = re.search(rf"^\s*{name}%\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
        assert match, output
        return round(float(match.group(1)) * _WRK_UNITS[match.group(2)], 2)

    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    assert rps, output
    return Load(percentile("50"), percentile("99"), round(float(rps.group(1)), 1))


def drive(
    url: str,
    path: str,
    body: dict[str, object],
    c: int,
    seconds: float,
    key: str | None = None,
    *,
    during: Callable[[], contextlib.AbstractContextManager[object]] = contextlib.nullcontext,
) -> Load:
    """Warm up briefly, then measure with wrk when installed, else the asyncio client; `during`
    wraps the measurement only (not the warm-up)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    asyncio.run(_asyncio_load(url, path, body, headers, c, min(1.0, seconds / 4)))
    with during():
        return _measure(url, path, body, headers, c, seconds)


def _measure(
    url: str, path: str, body: dict[str, object], headers: dict[str, str], c: int, seconds: float
) -> Load:
    """One measurement, no warm-up: wrk when installed, else the asyncio client."""
    if shutil.which("wrk"):
        return _wrk_load(url, path, body, headers, c, seconds)
    return asyncio.run(_asyncio_load(url, path, body, headers, c, seconds))


# --- where the CPU goes (Linux: /proc) -----------------------------------------------------------


@dataclass
class CpuUse:
    """The machine's and a server's CPU over one measurement (`cpu_use`)."""

    machine_busy: float = 0.0
    """The fraction of all cores busy, whoever used them (the load generator and mock too)."""
    server_cores: float = 0.0
    """Cores the server's processes (its workers and their threads) used on average."""

    def per_request_ms(self, rps: float, *, machine: bool = False) -> float:
        """CPU milliseconds one request cost the server (or, `machine`, the whole machine)."""
        cores = self.machine_busy * (os.cpu_count() or 1) if machine else self.server_cores
        return round(cores / rps * 1000, 3) if rps else 0.0


def _machine_ticks() -> tuple[int, int]:
    with open("/proc/stat") as stat:
        ticks = [int(value) for value in stat.readline().split()[1:]]
    return sum(ticks), ticks[3] + ticks[4]  # all, idle + iowait


def _tree_ticks(pid: int) -> int:
    """User and system ticks of `pid` and its descendants, the ones alive now."""
    total = 0
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as children:
                total += sum(_tree_ticks(int(child)) for child in children.read().split())
    except (FileNotFoundError, ProcessLookupError):
        pass
    return total


@contextmanager
def cpu_use(pid: int, use: CpuUse) -> Iterator[CpuUse]:
    """Measure into `use`, over the block, how busy the machine was and how many cores `pid`'s
    process tree used. Without /proc (not Linux) it measures nothing and stays at zero."""
    if not os.path.exists("/proc/stat"):
        yield use
        return
    hz = os.sysconf("SC_CLK_TCK")
    (all_before, idle_before), server_before = _machine_ticks(), _tree_ticks(pid)
    started = time.monotonic()
    yield use
    elapsed = time.monotonic() - started
    (all_after, idle_after), server_after = _machine_ticks(), _tree_ticks(pid)
    if all_after > all_before:
        use.machine_busy = round(1 - (idle_after - idle_before) / (all_after - all_before), 3)
    use.server_cores = round((server_after - server_before) / hz / elapsed, 3)


# --- the run -----------------------------------------------------------------------------------


def main() -> None:
    """Measure every target at c=1 and c=32, one at a time; print the table and the ratios."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0, help="per target and concurrency")
    parser.add_argument("--quick", action="store_true", help="1 s per measurement: a smoke run")
    parser.add_argument("--workers", type=int, default=1, help="also gptactions with N workers")
    parser.add_argument(
        "--rounds",
        type=int,
        default=8,
        help="with --workers: rounds of --round-seconds at c=32 for the workers ratio, alternating "
        "between one worker and N, both up at once (0: only the table's two runs)",
    )
    parser.add_argument("--round-seconds", type=float, default=3.0)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--serve-mock", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--serve-echo", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--serve-floor", nargs=3, metavar=("PORT", "UPSTREAM", "DATABASE"))
    args = parser.parse_args()
    if args.serve_mock:
        return serve_mock(args.serve_mock)
    if args.serve_echo:
        return serve_echo(args.serve_echo)
    if args.serve_floor:
        port, upstream, database = args.serve_floor
        return serve_floor(int(port), upstream, database)
    seconds = 1.0 if args.quick else args.seconds
    levels = (1, 32)
    results: dict[str, dict[int, Load]] = {}

    def measure(name: str, url: str, path: str, body: dict[str, object], key: str | None) -> None:
        results[name] = {c: drive(url, path, body, c, seconds, key) for c in levels}
        print(f"measured {name}", file=sys.stderr)

    with (
        tempfile.TemporaryDirectory() as tmp,
        own_server("the mock upstream", "--serve-mock") as mock_url,
    ):
        measure("mock upstream", mock_url, "/v1/chat/completions", CHAT, None)
        with own_server("bare Starlette", "--serve-echo") as echo_url:
            measure("bare Starlette", echo_url, "/echo", CONVERSE, None)
        with floor_server(f"{mock_url}/v1", f"{tmp}/floor.db") as floor_url:
            measure(FLOOR, floor_url, CONVERSATIONS, CONVERSE, None)
        upstream = mock_settings(mock_url)
        targets = [("gptactions SQLite", f"sqlite:///{tmp}/gateway.db", 1)]
        if args.workers > 1:
            targets.append(
                (f"gptactions SQLite x{args.workers}", f"sqlite:///{tmp}/w.db", args.workers)
            )
        for name, database, workers in targets:
            with server(database, workers=str(workers), **upstream) as url:
                measure(name, url, CONVERSATIONS, CONVERSE, BENCH_KEY)
        rounds = _workers_rounds(args, tmp, upstream) if args.workers > 1 else {}
        if not args.no_postgres and postgres_reachable():
            with postgres_database() as database, server(database, **upstream) as url:
                measure("gptactions PostgreSQL", url, CONVERSATIONS, CONVERSE, BENCH_KEY)
        else:
            print("PostgreSQL: skipped (not reachable, or --no-postgres)", file=sys.stderr)
        if litellm_binary() is not None:
            with litellm(f"{mock_url}/v1", tmp) as url:
                measure("LiteLLM proxy", url, "/chat/completions", CHAT, LITELLM_KEY)
        else:
            print(
                "LiteLLM: skipped (set LITELLM to its `litellm` command, or install the "
                "`bench` extra)",
                file=sys.stderr,
            )

    starlette, lite = results["bare Starlette"], results.get("LiteLLM proxy")
    rows = []
    for name, by_level in results.items():
        for c, load in by_level.items():
            rows.append(
                [
                    name,
                    c,
                    load.p50_ms,
                    load.p99_ms,
                    load.rps,
                    ratio(load.rps, starlette[c].rps),
                    ratio(load.rps, lite[c].rps) if lite else "-",
                ]
            )
    header = ["target", "c", "p50 ms", "p99 ms", "req/s", "x Starlette", "x LiteLLM"]
    mock_p50 = results["mock upstream"][1].p50_ms
    added = {
        name: round(by_level[1].p50_ms - mock_p50, 2)
        for name, by_level in results.items()
        if name.startswith(("gptactions", "floor"))
    }
    summary_ = {
        "generator": "wrk" if shutil.which("wrk") else "asyncio",
        "seconds": seconds,
        "added_p50_ms_c1": added,
        "results": {
            name: {str(c): vars(load) for c, load in by_level.items()}
            for name, by_level in results.items()
        },
    }
    if args.workers > 1:
        one, many = (
            results["gptactions SQLite"][32],
            results[f"gptactions SQLite x{args.workers}"][32],
        )
        first = ratio(many.rps, one.rps)
        summary_["workers_ratio_c32"] = first
        if rounds and rounds[1]:
            summary_["workers_ratio_c32_rounds"] = _rounds_ratio(rounds, args.workers)
            summary_["workers_cpu_c32"] = _workers_cpu(rounds, args.workers)
    floor = results.get(FLOOR)
    if floor:
        ours = results["gptactions SQLite"]
        summary_["vs_floor"] = {
            "rps_c32": ratio(ours[32].rps, floor[32].rps),
            "p50_c1": ratio(ours[1].p50_ms, floor[1].p50_ms),
        }
    if "gptactions PostgreSQL" in results:
        pg, sqlite = results["gptactions PostgreSQL"][32], results["gptactions SQLite"][32]
        summary_["postgres_vs_sqlite_c32"] = ratio(pg.rps, sqlite.rps)
    report("gateway", header, rows, summary_)
    for name, ms in added.items():
        print(f"{name}: adds {ms} ms at c=1 (p50) over the mock alone")
    if floor:
        print(
            f"gptactions SQLite against the floor: c=1 p50 x{summary_['vs_floor']['p50_c1']}, "
            f"c=32 req/s x{summary_['vs_floor']['rps_c32']} (the floor's own c=1 addition is "
            f"what any durable gateway in Python pays here: {added[FLOOR]} ms)"
        )
    if "workers_ratio_c32_rounds" in summary_:
        interleaved = summary_["workers_ratio_c32_rounds"]
        print(
            f"x{args.workers}/x1 at c=32: {interleaved['ratio']} over {interleaved['rounds']} "
            f"rounds each (requests/s summed; by round, median {interleaved['median']}, "
            f"{interleaved['low']}-{interleaved['high']}); the table's two runs apart: "
            f"{summary_['workers_ratio_c32']}"
        )
    if summary_.get("workers_cpu_c32"):
        split = summary_["workers_cpu_c32"]
        print(
            f"  = machine busy x{args.workers}/x1 {split['busy_ratio']} / machine CPU per request "
            f"x{args.workers}/x1 {split['machine_cpu_per_request_ratio']} (medians); at x1 the "
            f"machine was {split['busy'][0]:.0%} busy, so {split['ceiling']} is this machine's "
            "ceiling for the ratio (every core busy, each request costing what it did with one "
            "worker)"
        )
    return None


def _workers_rounds(
    args: argparse.Namespace, tmp: str, upstream: dict[str, str]
) -> dict[int, list[tuple[float, CpuUse]]]:
    """One worker and `args.workers` up at once (fresh databases), driven in turn for
    `args.rounds` rounds (the order swapped every other round); each run's requests/s and CPU.

    Both warm up first. Between its rounds a server is idle (no CPU), so what the alternation
    cancels is the machine's own speed drifting, which moved separate runs minutes apart by
    as much as the ratio measured."""
    runs: dict[int, list[tuple[float, CpuUse]]] = {1: [], args.workers: []}
    headers = {"Authorization": f"Bearer {BENCH_KEY}"}
    with contextlib.ExitStack() as stack:
        servers = {}
        for workers in (1, args.workers):
            database = f"sqlite:///{tmp}/rounds-{workers}.db"
            started = server_process(database, workers=str(workers), **upstream)
            servers[workers] = stack.enter_context(started)
            url = servers[workers][0]
            _measure(url, CONVERSATIONS, CONVERSE, headers, 32, 1.0)  # the warm-up
        for index in range(args.rounds):
            order = (1, args.workers) if index % 2 else (args.workers, 1)
            for workers in order:
                url, process = servers[workers]
                use = CpuUse()
                with cpu_use(process.pid, use):
                    load = _measure(url, CONVERSATIONS, CONVERSE, headers, 32, args.round_seconds)
                runs[workers].append((load.rps, use))
            (rps_one, use_one), (rps_many, use_many) = runs[1][-1], runs[args.workers][-1]
            print(
                f"round {index + 1}: x{args.workers}/x1 = {ratio(rps_many, rps_one)} (machine "
                f"busy {use_one.machine_busy:.0%} -> {use_many.machine_busy:.0%}; gptactions CPU "
                f"per request {use_one.per_request_ms(rps_one)} -> "
                f"{use_many.per_request_ms(rps_many)} ms)",
                file=sys.stderr,
            )
    return runs


def _rounds_ratio(runs: dict[int, list[tuple[float, CpuUse]]], workers: int) -> dict[str, Any]:
    """The workers ratio of the rounds: of the requests summed (each round lasts as long), and
    its median and range by round."""
    pairs = zip(runs[1], runs[workers], strict=True)
    by_round = [ratio(many, one) for (one, _), (many, _) in pairs]
    return {
        "rounds": len(by_round),
        "ratio": ratio(sum(rps for rps, _ in runs[workers]), sum(rps for rps, _ in runs[1])),
        "median": round(statistics.median(by_round), 3),
        "low": min(by_round),
        "high": max(by_round),
        "by_round": by_round,
    }


def _workers_cpu(cpu: dict[int, list[tuple[float, CpuUse]]], workers: int) -> dict[str, Any]:
    """Why the workers ratio is what it is, from the rounds' CPU figures.

    Requests/s = busy cores / CPU per request, for the machine as a whole (the load generator
    and the mock included): so the ratio of two runs is the ratio of how busy the machine was
    times the inverse ratio of what each request cost it. With one worker at `busy` of the
    machine, `1 / busy` is the most any number of workers can gain.
    """
    if not cpu[1] or not all(use.machine_busy for _, use in cpu[1] + cpu[workers]):
        return {}

    def medians(runs: list[tuple[float, CpuUse]]) -> tuple[float, float, float]:
        return (
            round(statistics.median(use.machine_busy for _, use in runs), 3),
            round(statistics.median(use.per_request_ms(rps, machine=True) for rps, use in runs), 3),
            round(statistics.median(use.per_request_ms(rps) for rps, use in runs), 3),
        )

    (busy1, machine1, server1), (busy_n, machine_n, server_n) = (
        medians(cpu[1]),
        medians(cpu[workers]),
    )
    return {
        "busy": [busy1, busy_n],
        "machine_cpu_ms_per_request": [machine1, machine_n],
        "server_cpu_ms_per_request": [server1, server_n],
        "busy_ratio": ratio(busy_n, busy1),
        "machine_cpu_per_request_ratio": ratio(machine_n, machine1),
        "ceiling": ratio(1, busy1),
    }


if __name__ == "__main__":
    main()
