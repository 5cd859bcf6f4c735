"""Start the real server in a subprocess, as a user would with `gptactions serve`."""

from __future__ import annotations

import functools
import os
import random
import resource
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

FIRST_PORT = 10_000
"""Where the ports `free_port` picks from begin (well above the well-known ones)."""


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_port() -> int:
    """A TCP port nobody listens on right now, for a server started later.

    Not one the kernel picks (`bind(0)`): those are in its ephemeral range, where every
    outgoing connection of the other tests takes its own port too, and one did take such a
    port between the pick and the server's bind ("already in use"). Below that range nothing
    is given out by itself; each xdist worker picks from its own share of it, so that two
    workers do not pick the same port either.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    index = int(worker) if worker.isdigit() else 0
    share = (_ephemeral_start() - FIRST_PORT) // max(workers, 1)
    low = FIRST_PORT + index * share
    for _ in range(200):
        port = random.randrange(low, low + share)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port between {low} and {low + share}")


@dataclass(frozen=True)
class Server:
    """A running server: its URL, its admin key, where its output goes, and its process."""

    url: str
    key: str
    log: Path
    process: subprocess.Popen[bytes]


def _limit_files(count: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (count, count))


@contextmanager
def serve(
    directory: Path,
    *,
    key: str,
    env: dict[str, str] | None = None,
    timeout: float = 60,
    open_files: int | None = None,
    ready: bool = True,
    port: int | None = None,
) -> Iterator[Server]:
    """Run `python -m gptactions serve` in `directory` until the block ends.

    `open_files` sets the server's limit on open files (soft and hard), as a small machine has.
    The block starts once `/healthz` says 200, or, without `ready`, once it answers at all.
    `port` is a free one unless given (a replica restarting where it was).
    """
    port = port or free_port()
    environment = (
        {k: v for k, v in os.environ.items() if not k.startswith("GPTACTIONS_")}
        | {
            "GPTACTIONS_PORT": str(port),
            "GPTACTIONS_API_KEY": key,
            "GPTACTIONS_DATABASE_URL": f"sqlite:///{directory / 'server.db'}",
            "GPTACTIONS_LOG_LEVEL": "warning",
            # As the shared test model: one thread, since parallel test runs share the cores
            # and llama.cpp's spinning threads slow down badly when they are oversubscribed.
            "GPTACTIONS_MODEL_THREADS": "1",
        }
        | (env or {})
    )
    log = directory / "server.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "gptactions", "serve"],
            cwd=directory,
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
            preexec_fn=None if open_files is None else functools.partial(_limit_files, open_files),
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited: {log.read_text(errors='replace')}")
            try:
                answer = httpx.get(f"{url}/healthz", timeout=10)
                if answer.status_code == 200 or not ready:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start: {log.read_text(errors='replace')}")
            time.sleep(0.2)
        yield Server(url, key, log, process)
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes], timeout: float = 15) -> None:
    """End a process that may still run: SIGTERM, and SIGKILL if it lingers."""
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def run_cli(server: Server, *args: str, stdin: str | None = None) -> str:
    """Run the command line against a running server's database; its standard output."""
    database_url = f"sqlite:///{server.log.parent / 'server.db'}"
    return gptactions_cli(*args, database_url=database_url, stdin=stdin)


def gptactions_cli(
    *args: str, database_url: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> str:
    """`gptactions ARGS` in a process of its own, on `database_url` (and the GPTACTIONS_* of
    `env`), as an operator runs it; its standard output."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("GPTACTIONS_")}
    environment |= {"GPTACTIONS_DATABASE_URL": database_url} | (env or {})
    result = subprocess.run(
        [sys.executable, "-m", "gptactions", *args],
        env=environment,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return result.stdout


def children(pid: int) -> list[int]:
    """The processes `pid` started (Linux)."""
    found: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as children:
            found += [int(child) for child in children.read().split()]
    return found


def ended_within(pid: int, timeout: float) -> bool:
    """Whether process `pid` (any, not only a child of ours) ended within `timeout` seconds."""
    try:
        descriptor = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([descriptor], [], [], timeout)[0])
    finally:
        os.close(descriptor)
