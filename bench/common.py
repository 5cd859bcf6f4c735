"""Shared by the benchmarks: a real server subprocess, latency statistics, the printed report."""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
BENCH_KEY = "gpta_bench_admin_key_0123456789abcdefghijklmnop"
PG = ("127.0.0.1", 5432)


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def process_server(
    name: str,
    command: Sequence[str],
    port: int,
    ready: Callable[[str], bool],
    *,
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Any server in a subprocess on `port`: yields its base URL and process once `ready(url)`
    says so; stops it afterwards (SIGTERM, then SIGKILL after 20 s)."""
    # A file, not a pipe: nobody reads the server's log while it runs, and a full pipe blocks it.
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + timeout
            while True:
                if process.poll() is not None:
                    log.seek(0)
                    raise RuntimeError(f"{name} exited:\n{log.read()[-3000:]}")
                try:
                    if ready(url):
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name} at {url} did not become ready in {timeout}s")
                time.sleep(0.2)
            yield url, process
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def gptactions_env(database_url: str, port: int | None = None, **settings: str) -> dict[str, str]:
    """The environment of a `gptactions serve` subprocess: this one's, minus its GPTACTIONS_*,
    plus the bench key, the database and `settings` (`model_threads="2"` is
    GPTACTIONS_MODEL_THREADS=2)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPTACTIONS_")}
    env.update(
        GPTACTIONS_DATABASE_URL=database_url,
        GPTACTIONS_API_KEY=BENCH_KEY,
        GPTACTIONS_LOG_LEVEL="warning",
        **{f"GPTACTIONS_{name.upper()}": value for name, value in settings.items()},
    )
    if port is not None:
        env["GPTACTIONS_PORT"] = str(port)
    return env


def online(url: str) -> bool:
    """Whether the gptactions server at `url` says it is online."""
    headers = {"Authorization": f"Bearer {BENCH_KEY}"}
    response = httpx.get(f"{url}/api/v1/gpt/status", headers=headers, timeout=2)
    return response.status_code == 200 and response.json()["status"] == "online"


@contextmanager
def server(database_url: str, **settings: str) -> Iterator[str]:
    """`gptactions serve` in a subprocess (the embedded model included); yields its base URL."""
    with server_process(database_url, **settings) as (url, _):
        yield url


@contextmanager
def server_process(
    database_url: str, *, name: str = "the server", source: Path | None = None, **settings: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Like `server`, also yielding the process (to watch its memory, say). `source`: a
    gptactions checkout whose `src` goes first on the path (another version of the code)."""
    port = free_port()
    command = [sys.executable, "-m", "gptactions", "serve"]
    env = gptactions_env(database_url, port, **settings)
    if source is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(source / "src"), env.get("PYTHONPATH", "")])
    with process_server(name, command, port, online, env=env) as running:
        yield running


@contextmanager
def mock_upstream() -> Iterator[Any]:
    """An OpenAI-compatible upstream that answers at once, in a thread of this process.

    It is the test suite's (tests/upstream/faulty.py); `.url()` is the base URL of a backend.
    """
    if str(ROOT) not in sys.path:
        sys.path.append(str(ROOT))
    from tests.upstream.faulty import FaultyUpstream

    with FaultyUpstream() as upstream:
        yield upstream


def summary(seconds: Sequence[float]) -> dict[str, float]:
    """Median and 95th percentile, in milliseconds."""
    ordered = sorted(seconds)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "n": len(ordered),
        "median_ms": round(statistics.median(ordered) * 1000, 3),
        "p95_ms": round(p95 * 1000, 3),
    }


def ratio(measured: float, reference: float) -> float:
    """`measured / reference`, rounded for printing."""
    return round(measured / reference, 2) if reference else float("inf")


def report(name: str, header: Sequence[str], rows: Sequence[Sequence[Any]], results: Any) -> None:
    """A small aligned table, then one JSON line of every result."""
    cells = [[str(c) for c in header], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for index, row in enumerate(cells):
        print("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)))
        if index == 0:
            print("  ".join("-" * width for width in widths))
    print(json.dumps({"benchmark": name, **results}, sort_keys=True))


def postgres_reachable() -> bool:
    """Whether the PostgreSQL of the machine answers."""
    try:
        with socket.create_connection(PG, timeout=1):
            return True
    except OSError:
        return False


@asynccontextmanager
async def postgres_databases(names: list[str]) -> AsyncIterator[dict[str, str]]:
    """Fresh PostgreSQL databases, dropped afterwards."""
    import asyncpg

    admin = await asyncpg.connect(host=PG[0], port=PG[1], user="postgres", database="postgres")
    created = {name: f"gptactions_bench_{name}_{uuid.uuid4().hex[:8]}" for name in names}
    try:
        for database in created.values():
            await admin.execute(f'CREATE DATABASE "{database}"')
        yield {n: f"postgresql://postgres@{PG[0]}:{PG[1]}/{d}" for n, d in created.items()}
    finally:
        for database in created.values():
            await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()
