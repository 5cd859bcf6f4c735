"""Several workers: each listens on a socket of its own, gets a share of the connections, is
replaced when it dies, and stops gracefully with the others (tests/test_graceful.py runs its
tests with two workers too)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from gptactions.config import Settings
from gptactions.workers import Supervisor, _Worker, supported
from tests.conftest import ADMIN_KEY
from tests.serving import Server, free_port, serve

pytestmark = pytest.mark.skipif(not supported(), reason="needs SO_REUSEPORT (Linux, the BSDs)")

# /proc/net/tcp's states
LISTEN, ESTABLISHED = "0A", "01"


def _sockets(port: int, state: str) -> set[str]:
    """The inodes of the IPv4 TCP sockets on local `port` in `state`."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == state:
            inodes.add(fields[9])
    return inodes


def _owners(server: Server, port: int, state: str) -> Counter[int]:
    """How many of those sockets each worker process holds."""
    inodes = _sockets(port, state)
    owners: Counter[int] = Counter()
    children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children")
    for pid in map(int, children.read_text().split()):
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    owners[pid] += 1
        except FileNotFoundError:  # a worker that just ended
            continue
    return owners


def _until(condition: Callable[[], bool], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def _port(server: Server) -> int:
    return int(server.url.rsplit(":", 1)[1])


@contextmanager
def _serving_two_workers(directory: Path) -> Iterator[Server]:
    environment = {
        "GPTACTIONS_WORKERS": "2",
        "PROMETHEUS_MULTIPROC_DIR": str(directory / "metrics"),
    }
    with serve(directory, key=ADMIN_KEY, env=environment, timeout=300) as server:
        yield server


def _both_started(server: Server) -> Server:
    port = _port(server)
    _until(lambda: len(_owners(server, port, LISTEN)) == 2)
    return server


@pytest.fixture(scope="module")
def shared_two_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server of two workers for the tests that leave it serving with two (a supervisor and
    its workers take seconds to start)."""
    with _serving_two_workers(tmp_path_factory.mktemp("workers")) as server:
        yield server


@pytest.fixture
def two_workers(shared_two_workers: Server) -> Server:
    """The shared server, once both its workers listen (a test may have replaced one)."""
    return _both_started(shared_two_workers)


@pytest.fixture
def own_two_workers(tmp_path: Path) -> Iterator[Server]:
    """A server of two workers of the test's own, which it may stop."""
    with _serving_two_workers(tmp_path) as server:
        yield _both_started(server)


def test_each_worker_listens_on_its_own_socket_and_gets_connections(two_workers: Server) -> None:
    port = _port(two_workers)
    assert list(_owners(two_workers, port, LISTEN).values()) == [1, 1]
    clients = [httpx.Client(base_url=two_workers.url) for _ in range(32)]
    try:
        for client in clients:
            assert client.get("/healthz").status_code == 200  # each keeps its connection open
        # The kernel spread the 32 connections over both sockets (all on one: 1 in 2**31).
        shares = _owners(two_workers, port, ESTABLISHED)
        assert len(shares) == 2 and sum(shares.values()) == 32, shares
    finally:
        for client in clients:
            client.close()


def _live_gauges(server: Server, pid: int) -> list[Path]:
    """The files holding worker `pid`'s live gauges (the model's queue depth...)."""
    return list((server.log.parent / "metrics").glob(f"*/gauge_live*_{pid}.db"))


def test_a_worker_that_dies_is_replaced(two_workers: Server) -> None:
    port = _port(two_workers)
    first, second = _owners(two_workers, port, LISTEN)
    for _ in range(200):  # a scrape sets the worker's live gauges; the kernel picks the worker
        if _live_gauges(two_workers, first) and _live_gauges(two_workers, second):
            break
        httpx.get(f"{two_workers.url}/metrics", headers={"Connection": "close"})
    assert _live_gauges(two_workers, first) and _live_gauges(two_workers, second)
    os.kill(first, signal.SIGKILL)
    _until(lambda: len(workers := _owners(two_workers, port, LISTEN)) == 2 and first not in workers)
    assert second in _owners(two_workers, port, LISTEN)
    for _ in range(8):
        reply = httpx.get(f"{two_workers.url}/healthz", headers={"Connection": "close"})
        assert reply.status_code == 200
    assert f"worker [{first}] died" in two_workers.log.read_text()
    # Its live gauges no longer count on /metrics; the other worker's still do.
    assert not _live_gauges(two_workers, first) and _live_gauges(two_workers, second)


def test_sigterm_stops_every_worker_and_the_supervisor_exits_0(own_two_workers: Server) -> None:
    port = _port(own_two_workers)
    workers = list(_owners(own_two_workers, port, LISTEN))
    own_two_workers.process.send_signal(signal.SIGTERM)
    assert own_two_workers.process.wait(timeout=60) == 0
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
    assert not _sockets(port, LISTEN)
    assert "Traceback" not in own_two_workers.log.read_text()


def test_a_worker_that_cannot_start_stops_the_server_with_status_3(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a GGUF file")
    environment = {k: v for k, v in os.environ.items() if not k.startswith("GPTACTIONS_")} | {
        "GPTACTIONS_WORKERS": "2",
        "GPTACTIONS_PORT": str(free_port()),
        "GPTACTIONS_API_KEY": ADMIN_KEY,
        "GPTACTIONS_DATABASE_URL": f"sqlite:///{tmp_path / 'server.db'}",
        # There, but no model: `serve` checks that the file exists; the worker, loading it, fails.
        "GPTACTIONS_MODEL_PATH": str(broken),
    }
    finished = subprocess.run(
        [sys.executable, "-m", "gptactions", "serve"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert finished.returncode == 3, finished.stderr[-2000:]
    assert "failed to start: stopping" in finished.stderr


class _Process:
    """A worker process as the supervisor sees it, ended by `join`."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.exitcode: int | None = None

    def join(self, timeout: float | None = None) -> None:
        self.exitcode = 0

    def kill(self) -> None:
        self.exitcode = -9


def _supervising(count: int) -> tuple[Supervisor, list[_Process]]:
    supervisor = Supervisor(Settings(workers=2))
    processes = [_Process(1000 + number) for number in range(count)]
    for process in processes:
        supervisor._workers.append(_Worker(process, threading.Event(), 0.0))  # type: ignore[arg-type]
    return supervisor, processes


def test_stopping_counts_the_workers_that_were_running_when_the_signal_came(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    told: list[tuple[int, int]] = []
    monkeypatch.setattr("gptactions.workers.os.kill", lambda pid, sig: told.append((pid, sig)))
    caplog.set_level(logging.INFO, logger="gptactions.workers")
    supervisor, (first, second) = _supervising(2)

    supervisor._on_signal(signal.SIGTERM, None)
    first.exitcode = 0  # an idle worker ends before the supervisor wakes up
    supervisor._stop()

    assert {pid for pid, _ in told} == {first.pid, second.pid}
    assert "stopping 2 workers" in caplog.messages
    assert second.exitcode == 0


def test_stopping_one_worker_says_worker(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("gptactions.workers.os.kill", lambda pid, sig: None)
    caplog.set_level(logging.INFO, logger="gptactions.workers")
    supervisor, (failed, _) = _supervising(2)
    failed.exitcode = 3  # it could not start: the supervisor stops the other

    supervisor._stop()

    assert "stopping 1 worker" in caplog.messages
