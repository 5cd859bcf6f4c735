"""Throughput of the guarded HTTP protocol (header size and time limits, connection budget)
against uvicorn's stock httptools protocol, on the same app with a fake backend.

Two servers run side by side in subprocesses, identical but for the protocol; rounds alternate
between them so the machine's noise hits both alike. Measured: requests per second of
`GET /healthz` and of `POST /api/v1/gpt/conversations` (auth, service, SQLite write; the fake
backend echoes), over keep-alive connections. Run: .venv/bin/python bench/bench_http_limits.py
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from common import BENCH_KEY, free_port, gptactions_env, process_server, ratio, report

HERE = Path(__file__).resolve()


def serve(kind: str, port: int) -> None:
    """The server side (run in a subprocess): the app with a fake backend, one protocol."""
    import uvicorn

    from gptactions.app import create_app
    from gptactions.config import Settings
    from gptactions.llm.fake import FakeBackend
    from gptactions.llm.router import BackendRouter
    from gptactions.runtime import Runtime
    from gptactions.services.keys import KeyService
    from gptactions.serving import http_limits, http_protocol, raise_open_files_limit
    from gptactions.store.db import Database

    settings = Settings()

    async def bootstrap() -> None:
        database = Database(settings.database_url)
        try:
            await database.upgrade()
            await KeyService(database).ensure_bootstrap_key(BENCH_KEY, may_generate=False)
        finally:
            await database.close()

    asyncio.run(bootstrap())
    app = create_app(runtime=Runtime(settings, router=BackendRouter([FakeBackend()])))
    protocol = {}
    if kind == "guarded":  # what `gptactions serve` does
        protocol["http"] = http_protocol(http_limits(settings, raise_open_files_limit()))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", **protocol)


@contextmanager
def server(kind: str, directory: str) -> Iterator[tuple[str, int]]:
    """One server subprocess; yields its URL and process id once `/healthz` answers."""
    port = free_port()
    command = [sys.executable, str(HERE), "--serve", kind, "--port", str(port)]
    env = gptactions_env(f"sqlite:///{directory}/{kind}.db")
    with process_server(f"the {kind} server", command, port, _healthy, env=env, timeout=60) as (
        url,
        process,
    ):
        yield url, process.pid


def _healthy(url: str) -> bool:
    return httpx.get(f"{url}/healthz", timeout=1).status_code == 200


def cpu_seconds(pid: int) -> float:
    """CPU time (user and system) the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def rate(url: str, operation: str, seconds: float, clients: int) -> tuple[int, float]:
    """How many requests `clients` keep-alive clients get done in about `seconds`, and the time."""
    headers = {"Authorization": f"Bearer {BENCH_KEY}"}
    body = {"userId": "bench", "message": "Hello there."}
    done = 0
    stop = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal done
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as http:
            while time.perf_counter() < stop:
                if operation == "healthz":
                    response = await http.get("/healthz")
                else:
                    response = await http.post("/api/v1/gpt/conversations", json=body)
                assert response.status_code == 200, response.text
                done += 1

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return done, time.perf_counter() - started


async def measure(
    servers: dict[str, tuple[str, int]], rounds: int, seconds: float, clients: int
) -> None:
    """Alternate rounds between the two servers; print rates, CPU per request, and ratios.

    The CPU time the server process spends per request is the steadier figure on a shared
    machine: the rate also depends on what else runs, the CPU cost per request much less.
    """
    operations = ("healthz", "conversations")
    rates: dict[tuple[str, str], list[float]] = {}
    cpu: dict[tuple[str, str], list[float]] = {}  # [seconds, requests]
    for operation in operations:
        for url, _pid in servers.values():  # warm-up
            await rate(url, operation, 0.5, clients)
        for _ in range(rounds):
            for kind, (url, pid) in servers.items():
                before = cpu_seconds(pid)
                done, elapsed = await rate(url, operation, seconds, clients)
                used = cpu_seconds(pid) - before
                rates.setdefault((kind, operation), []).append(done / elapsed)
                totals = cpu.setdefault((kind, operation), [0.0, 0.0])
                totals[0] += used
                totals[1] += done
    median = {key: statistics.median(values) for key, values in rates.items()}
    cpu_ms = {key: 1000 * used / done for key, (used, done) in cpu.items()}
    rows = [
        [
            op,
            round(median["stock", op], 1),
            round(median["guarded", op], 1),
            ratio(median["guarded", op], median["stock", op]),
            round(cpu_ms["stock", op], 3),
            round(cpu_ms["guarded", op], 3),
            ratio(cpu_ms["guarded", op], cpu_ms["stock", op]),
        ]
        for op in operations
    ]
    header = ["operation", "stock req/s", "guarded req/s", "ratio"]
    header += ["stock CPU ms/req", "guarded CPU ms/req", "ratio"]
    results: dict[str, object] = {"clients": clients, "rounds": rounds, "seconds": seconds}
    for op in operations:
        for kind in servers:
            results[f"{kind}_{op}_rps"] = [round(r, 1) for r in rates[kind, op]]
            results[f"{kind}_{op}_cpu_ms_per_request"] = round(cpu_ms[kind, op], 3)
        results[f"ratio_{op}_rps_median"] = ratio(median["guarded", op], median["stock", op])
        results[f"ratio_{op}_cpu_per_request"] = ratio(cpu_ms["guarded", op], cpu_ms["stock", op])
    report("http_limits", header, rows, results)


def main() -> None:
    """Start both servers, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--serve", choices=["stock", "guarded"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port)
        return
    with (
        tempfile.TemporaryDirectory() as tmp,
        server("stock", tmp) as stock,
        server("guarded", tmp) as guarded,
    ):
        servers = {"stock": stock, "guarded": guarded}
        asyncio.run(measure(servers, args.rounds, args.seconds, args.clients))


if __name__ == "__main__":
    main()
