"""SQLite's group writer in a process of its own (store/writer_process.py): a real child process,
on a real file; killed, signalled, closed; and its WAL sync after its turn."""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gptactions.config import Settings
from gptactions.llm.fake import FakeBackend
from gptactions.services.interactions import InteractionLog
from gptactions.store import writer_process
from gptactions.store.db import Database
from gptactions.store.models import utcnow
from gptactions.store.outage import DatabaseUnavailable
from gptactions.store.writer import Write, _sqlite_statements
from gptactions.store.writer_process import Config, WriterProcess
from tests.conftest import ADMIN_KEY, running_app
from tests.serving import ended_within
from tests.store.test_writer import _messages, _turn, held_off, writers_turn_taken


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite:///{tmp_path}/w.db")
    await database.upgrade()
    try:
        yield database
    finally:
        await database.close()


def _process(database: Database) -> WriterProcess:
    process = database.writer._process
    assert process is not None, "SQLite on a file: the writer is a process by default"
    return process


async def test_a_killed_writer_process_fails_its_batch_only_and_a_new_one_writes_the_next(
    database: Database, tmp_path: Path
) -> None:
    log = InteractionLog(database)
    await log.record(_turn(0))
    first = _process(database).pid
    assert first is not None
    # Another "process" holds the writers' lock file: the child waits for it with our batch.
    with writers_turn_taken(tmp_path / "w.db"):
        waiting = await held_off(log.record(_turn(1)))
        os.kill(first, signal.SIGKILL)
        # Its batch fails as an outage (a 503 with Retry-After for the API), not a hang.
        with pytest.raises(DatabaseUnavailable, match="writer process ended"):
            await asyncio.wait_for(waiting, 10)
    await log.record(_turn(2))  # a new process takes the next batch
    assert _process(database).pid not in (None, first)
    assert await _messages(database) == ["m0", "m2"]


async def test_the_writer_process_outlives_stop_signals_and_ends_when_closed(
    tmp_path: Path,
) -> None:
    """A terminal's Ctrl+C and a service manager's SIGTERM reach the whole process group: the
    writer stays until the server has drained its requests and closes it."""
    database = Database(f"sqlite:///{tmp_path}/w.db")
    await database.upgrade()
    log = InteractionLog(database)
    await log.record(_turn(0))
    pid = _process(database).pid
    assert pid is not None
    with open(f"/proc/{pid}/environ", "rb") as environment:
        assert environment.read() == b""  # none of the server's secrets
    os.kill(pid, signal.SIGINT)
    os.kill(pid, signal.SIGTERM)
    await log.record(_turn(1))
    assert _process(database).pid == pid
    await database.close()
    assert ended_within(pid, 0)  # closed: its input ended, it exited and was waited for
    reopened = Database(f"sqlite:///{tmp_path}/w.db")
    try:
        assert await _messages(reopened) == ["m0", "m1"]
    finally:
        await reopened.close()


async def test_the_writer_process_is_configured_as_the_writer_connection(tmp_path: Path) -> None:
    """FULL: the child commits with NORMAL and syncs the WAL itself; NORMAL: no sync."""
    url = f"sqlite:///{tmp_path}/w.db"
    full = Database.from_settings(Settings(database_url=url))
    relaxed = Database.from_settings(Settings(database_url=url, sqlite_synchronous="normal"))
    thread = Database.from_settings(Settings(database_url=url, sqlite_writer="thread"))
    try:
        assert _process(full).config == Config(
            str(tmp_path / "w.db"), "NORMAL", 5.0, f"{tmp_path}/w.db-writer.lock", f"{url[10:]}-wal"
        )
        assert _process(relaxed).config.wal_path is None
        assert _process(relaxed).config.synchronous == "NORMAL"
        assert thread.writer._process is None
    finally:
        for database in (full, relaxed, thread):
            await database.close()


async def test_the_child_syncs_the_wal_after_its_turn_before_answering(
    database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The child's transaction, run here to see its system calls: the statements and the
    commit during its turn on the lock file, the WAL's sync after it, then the answer."""
    synced: list[bool] = []  # whether the writers' lock was free at each sync
    fdatasync = os.fdatasync
    lock_path = f"{tmp_path}/w.db-writer.lock"

    def recording_fdatasync(descriptor: int) -> None:
        assert os.readlink(f"/proc/self/fd/{descriptor}") == f"{tmp_path}/w.db-wal"
        lock = os.open(lock_path, os.O_RDWR)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises if the child holds it
            fcntl.flock(lock, fcntl.LOCK_UN)
            synced.append(True)
        except BlockingIOError:
            synced.append(False)
        finally:
            os.close(lock)
        fdatasync(descriptor)

    monkeypatch.setattr(os, "fdatasync", recording_fdatasync)
    config = Config(f"{tmp_path}/w.db", "NORMAL", 5.0, lock_path, f"{tmp_path}/w.db-wal")
    child = writer_process._Child(config)
    row = {"created_at": utcnow(), "tenant": "default", "key_id": "key1", "user_id": "u"}
    row |= {"kind": "conversation", "message": "m5", "reply": "r5", "status": "ok"}
    row |= dict.fromkeys(("latency_ms", "prompt_tokens", "completion_tokens", "cached_tokens"), 0)
    write = Write(row)
    last, seconds, error = child.transaction(_sqlite_statements([write]))
    assert error is None and last is not None and seconds > 0
    assert synced == [True]
    assert child.connection is not None
    assert child.connection.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL
    assert await _messages(database) == ["m5"]
    # A statement SQLite refuses: its error as the child sends it, rebuilt as what it was.
    sent = child.transaction([("INSERT INTO nowhere VALUES (1)", (), False)])
    assert sent[:2] == (None, 0.0) and sent[2] is not None
    rebuilt = writer_process._error(sent[2])
    assert isinstance(rebuilt, sqlite3.OperationalError) and "nowhere" in str(rebuilt)


async def test_the_app_starts_its_writer_process_before_the_first_write(tmp_path: Path) -> None:
    """An interpreter takes ~20 ms to start: the app starts the child with itself, not with the
    first request, and that child writes the first request's row."""
    settings = Settings(database_url=f"sqlite:///{tmp_path}/w.db", api_key=ADMIN_KEY)
    async with running_app(settings, FakeBackend()) as api:
        process = _process(api.runtime.database)
        started = process.pid
        assert started is not None, "no writer process before the first write"
        assert os.path.exists(f"/proc/{started}")
        answer = await api.post("/api/v1/gpt/conversations", {"userId": "u", "message": "hi"})
        assert answer.status_code == 200, answer.text
        assert process.pid == started
    assert ended_within(started, 10)
