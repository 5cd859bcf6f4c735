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
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
BENCH_KEY = "gpta_bench_admin_key_0123456789abcdefghijklmnop"


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def server(database_url: str, **settings: str) -> Iterator[str]:
    """`gptactions serve` in a subprocess (the embedded model included); yields its base URL."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPTACTIONS_")}
    env.update(
        GPTACTIONS_DATABASE_URL=database_url,
        GPTACTIONS_API_KEY=BENCH_KEY,
        GPTACTIONS_PORT=str(port),
        GPTACTIONS_LOG_LEVEL="warning",
        **{f"GPTACTIONS_{name.upper()}": value for name, value in settings.items()},
    )
    # A file, not a pipe: nobody reads the server's log while it runs, and a full pipe blocks it.
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gptactions", "serve"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(url, process, log)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_ready(
    url: str, process: subprocess.Popen[bytes], log: IO[str], timeout: float = 120
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"the server exited:\n{log.read()}")
        try:
            headers = {"Authorization": f"Bearer {BENCH_KEY}"}
            response = httpx.get(f"{url}/api/v1/gpt/status", headers=headers, timeout=2)
            if response.status_code == 200 and response.json()["status"] == "online":
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"the server at {url} did not become ready in {timeout}s")


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
