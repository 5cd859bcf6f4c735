"""Graceful restarts of the real server process: SIGTERM lets requests in flight finish within
the grace, ends open streams with an `error` event, stores partial replies, and exits 0."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from gptactions.config import Settings
from gptactions.graceful import GracefulServer
from gptactions.llm.fake import FakeBackend
from gptactions.serving import APP
from gptactions.workers import SUPERVISOR_DIED
from tests.conftest import ADMIN_KEY, running_app
from tests.serving import Server, children, ended_within, serve
from tests.upstream.faulty import FaultyUpstream

pytestmark = pytest.mark.upstream

API = "/api/v1/gpt"
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture
def upstream() -> Iterator[FaultyUpstream]:
    """A fault-injecting upstream: `slow-1` answers in a second, `drip-1` a word a second."""
    faulty = FaultyUpstream().start()
    try:
        yield faulty
    finally:
        faulty.stop()


def _environment(upstream: FaultyUpstream, grace: float, workers: int) -> dict[str, str]:
    backends = [
        {"name": name, "url": upstream.url(mode), "model": name, "maxConcurrency": 16}
        for name, mode in (("slow", "slow-1"), ("drip", "drip-1"))
    ]
    return {
        "GPTACTIONS_BACKENDS": json.dumps(backends),
        "GPTACTIONS_FALLBACK": "none",
        "GPTACTIONS_SHUTDOWN_GRACE": str(grace),
        "GPTACTIONS_WORKERS": str(workers),
    }


async def _until(condition: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def _stream(client: httpx.AsyncClient, events: list[tuple[str, Any]]) -> None:
    """Start a streamed conversation on the dripping backend; collect its events."""
    body = {"userId": "stream", "message": "Tell me", "model": "drip"}
    headers = {"Accept": "text/event-stream"}
    async with client.stream("POST", f"{API}/conversations", json=body, headers=headers) as reply:
        assert reply.status_code == 200
        name = ""
        async for line in reply.aiter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((name, json.loads(line.removeprefix("data: "))))


async def _logs(database_url: str) -> list[dict[str, Any]]:
    settings = Settings(database_url=database_url, api_key=ADMIN_KEY)
    async with running_app(settings, FakeBackend()) as api:
        rows: list[dict[str, Any]] = (await api.get(f"{API}/logs")).json()
    return rows


def _exit_code(server: Server) -> int:
    """The server's exit status, once it has exited; its log must hold no traceback."""
    code = server.process.wait(timeout=60)
    assert "Traceback" not in server.log.read_text(errors="replace")
    return code


# One server process, and two workers under the supervisor, which forwards the signals.
WORKERS = pytest.mark.parametrize("workers", [1, 2], ids=["1-worker", "2-workers"])


@WORKERS
async def test_sigterm_lets_requests_finish_and_ends_streams(
    tmp_path: Path, upstream: FaultyUpstream, workers: int
) -> None:
    environment = _environment(upstream, grace=3, workers=workers)
    with serve(tmp_path, key=ADMIN_KEY, env=environment, timeout=300) as server:
        events: list[tuple[str, Any]] = []
        async with httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=60) as client:
            stream = asyncio.ensure_future(_stream(client, events))
            await _until(lambda: events)  # the stream has begun
            body = {"userId": "whole", "message": "Hello", "model": "slow"}
            calls = [
                asyncio.ensure_future(client.post(f"{API}/conversations", json=body))
                for _ in range(10)
            ]
            await _until(lambda: len(upstream.requests) >= 11)
            server.process.send_signal(signal.SIGTERM)
            replies = await asyncio.gather(*calls)
            await stream
            # No new connection is accepted meanwhile.
            with pytest.raises(httpx.TransportError):
                await client.get("/healthz")
        assert _exit_code(server) == 0

    assert [reply.status_code for reply in replies] == [200] * 10
    names = [name for name, _ in events]
    assert names[0] == "token" and names[-1] == "error" and "done" not in names
    error = events[-1][1]["error"]
    assert error["code"] == "server_restarting" and "restarting" in error["message"]
    received = "".join(data["text"] for name, data in events if name == "token")

    rows = await _logs(f"sqlite:///{tmp_path / 'server.db'}")
    assert sorted(row["status"] for row in rows) == ["cancelled"] + ["ok"] * 10
    cancelled = next(row for row in rows if row["status"] == "cancelled")
    assert cancelled["reply"] == received and received


@WORKERS
async def test_a_second_signal_ends_the_grace_and_still_stores_the_partial_reply(
    tmp_path: Path, upstream: FaultyUpstream, workers: int
) -> None:
    environment = _environment(upstream, grace=600, workers=workers)
    with serve(tmp_path, key=ADMIN_KEY, env=environment, timeout=300) as server:
        events: list[tuple[str, Any]] = []
        async with httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=60) as client:
            stream = asyncio.ensure_future(_stream(client, events))
            await _until(lambda: events)
            server.process.send_signal(signal.SIGTERM)
            await _until(lambda: len(events) >= 2)  # still streaming within the grace
            server.process.send_signal(signal.SIGINT)
            await stream
        assert _exit_code(server) == 0

    assert events[-1][0] == "error"
    received = "".join(data["text"] for name, data in events if name == "token")
    rows = await _logs(f"sqlite:///{tmp_path / 'server.db'}")
    assert [(row["status"], row["reply"]) for row in rows] == [("cancelled", received)]


def _workers(supervisor: int) -> list[int]:
    """The supervisor's workers (not multiprocessing's resource tracker)."""
    return [
        pid
        for pid in children(supervisor)
        if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]


async def test_a_supervisor_killed_lets_its_workers_finish_their_requests(
    tmp_path: Path, upstream: FaultyUpstream
) -> None:
    environment = _environment(upstream, grace=60, workers=2)
    with serve(tmp_path, key=ADMIN_KEY, env=environment, timeout=300) as server:
        workers = _workers(server.process.pid)
        assert len(workers) == 2
        try:
            events: list[tuple[str, Any]] = []
            async with httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=60) as client:
                stream = asyncio.ensure_future(_stream(client, events))
                await _until(lambda: events)
                server.process.kill()
                server.process.wait(timeout=60)
                # The kernel signals a worker once per thread of the supervisor that exits while
                # it is the worker's parent: once or twice here, by the order they end in. Once
                # more, as it may: the grace must still hold.
                for pid in workers:
                    os.kill(pid, SUPERVISOR_DIED)
                await stream
            assert all(ended_within(pid, 60) for pid in workers)
        finally:
            for pid in workers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    log = server.log.read_text(errors="replace")
    assert "second signal" not in log and "Traceback" not in log
    assert [name for name, _ in events][-1] == "done"
    received = "".join(data["text"] for name, data in events if name == "token")
    rows = await _logs(f"sqlite:///{tmp_path / 'server.db'}")
    assert [(row["status"], row["reply"]) for row in rows] == [("ok", received)]


def test_a_stop_signal_only_starts_the_grace_and_sigterm_still_ends_it() -> None:
    server = GracefulServer(uvicorn.Config(APP), grace=30, stop_signals=(SUPERVISOR_DIED,))
    server.handle_stop(SUPERVISOR_DIED, None)
    server.handle_stop(SUPERVISOR_DIED, None)
    assert server.should_exit and not server.force_exit
    server.handle_exit(signal.SIGTERM, None)  # an operator's, after the supervisor died
    assert server.force_exit


async def test_sigterm_to_every_process_of_the_unit_still_lets_requests_finish(
    tmp_path: Path, upstream: FaultyUpstream
) -> None:
    # systemd's default KillMode=control-group sends its SIGTERM to the supervisor and to every
    # worker at once; the supervisor forwards its own: each worker gets two, and must keep the
    # grace (only the supervisor's explicit hurry ends it).
    environment = _environment(upstream, grace=30, workers=2)
    with serve(tmp_path, key=ADMIN_KEY, env=environment, timeout=300) as server:
        workers = _workers(server.process.pid)
        assert len(workers) == 2
        streams: list[list[tuple[str, Any]]] = [[] for _ in range(4)]
        limits = httpx.Limits(max_keepalive_connections=0)  # spread over both workers
        async with httpx.AsyncClient(
            base_url=server.url, headers=AUTH, timeout=60, limits=limits
        ) as client:
            running = [asyncio.ensure_future(_stream(client, events)) for events in streams]
            await _until(lambda: all(streams))
            # In either order; the workers' first, so that the supervisor's arrives after they
            # handled it (two signals pending at once are one).
            for pid in workers:
                os.kill(pid, signal.SIGTERM)
            await asyncio.sleep(0.5)
            server.process.send_signal(signal.SIGTERM)
            await asyncio.gather(*running)
        assert _exit_code(server) == 0

    assert "second signal" not in server.log.read_text(errors="replace")
    assert [[name for name, _ in events][-1] for events in streams] == ["done"] * 4
    rows = await _logs(f"sqlite:///{tmp_path / 'server.db'}")
    assert [row["status"] for row in rows] == ["ok"] * 4


@WORKERS
async def test_sighup_only_ever_starts_the_grace_of_a_server_process(
    tmp_path: Path, upstream: FaultyUpstream, workers: int
) -> None:
    # One process: SIGHUP (a closed terminal) is a graceful stop. The supervisor's workers only
    # ever start their grace on SIGHUP (systemd's SendSIGHUP=yes sends it to every process).
    environment = _environment(upstream, grace=30, workers=workers)
    with serve(tmp_path, key=ADMIN_KEY, env=environment, timeout=300) as server:
        targets = [server.process.pid] if workers == 1 else _workers(server.process.pid)
        events: list[tuple[str, Any]] = []
        async with httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=60) as client:
            stream = asyncio.ensure_future(_stream(client, events))
            await _until(lambda: events)
            for _ in range(2):
                for pid in targets:
                    os.kill(pid, signal.SIGHUP)
            await stream
        if workers == 1:
            assert _exit_code(server) == 0
        else:
            assert all(ended_within(pid, 60) for pid in targets)

    assert "second signal" not in server.log.read_text(errors="replace")
    assert [name for name, _ in events][-1] == "done"
    rows = await _logs(f"sqlite:///{tmp_path / 'server.db'}")
    assert [row["status"] for row in rows] == ["ok"]


async def test_sighup_to_the_supervisor_replaces_every_worker_without_dropping_a_request(
    tmp_path: Path, upstream: FaultyUpstream
) -> None:
    environment = _environment(upstream, grace=30, workers=2)
    with serve(tmp_path, key=ADMIN_KEY, env=environment, timeout=300) as server:
        old = set(_workers(server.process.pid))
        streams: list[list[tuple[str, Any]]] = [[] for _ in range(4)]
        probes: list[int | str] = []
        replaced = asyncio.Event()
        limits = httpx.Limits(max_keepalive_connections=0)  # a new connection each time

        async def probe(client: httpx.AsyncClient) -> None:
            while not replaced.is_set():
                try:
                    probes.append((await client.get("/healthz")).status_code)
                except httpx.TransportError as error:
                    probes.append(repr(error))
                await asyncio.sleep(0.02)

        async with httpx.AsyncClient(
            base_url=server.url, headers=AUTH, timeout=60, limits=limits
        ) as client:
            running = [asyncio.ensure_future(_stream(client, events)) for events in streams]
            await _until(lambda: all(streams))
            probing = asyncio.ensure_future(probe(client))
            server.process.send_signal(signal.SIGHUP)

            def renewed() -> bool:
                workers = set(_workers(server.process.pid))
                return len(workers) == 2 and not workers & old

            await _until(renewed, timeout=120)
            replaced.set()
            await asyncio.gather(probing, *running)
            assert server.process.poll() is None  # still serving
            new = set(_workers(server.process.pid))
            assert (await client.get("/healthz")).status_code == 200
        server.process.send_signal(signal.SIGTERM)
        assert _exit_code(server) == 0

    assert all(ended_within(pid, 1) for pid in old)
    assert len(new) == 2 and not new & old
    assert probes and set(probes) == {200}, probes
    assert [[name for name, _ in events][-1] for events in streams] == ["done"] * 4
    rows = await _logs(f"sqlite:///{tmp_path / 'server.db'}")
    assert [row["status"] for row in rows] == ["ok"] * 4
