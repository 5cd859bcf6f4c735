"""A request alone in its process commits on the event loop (store/writer.py, `_Inline`): as
durable as the writer's, never waiting for a lock, and the usual way whenever it would."""

from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import exc as sa

from gptactions.config import Settings
from gptactions.llm.fake import FakeBackend
from gptactions.services.interactions import InteractionLog
from gptactions.store import writer
from gptactions.store.db import Database
from tests.conftest import ADMIN_KEY, running_app
from tests.store.test_writer import (
    _conversation,
    _messages,
    _turn,
    held_off,
    writers_turn_taken,
)


@pytest.fixture(params=["process", "thread"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """A migrated SQLite file (the writer in a process, and in a thread), each write alone."""
    settings = Settings(database_url=f"sqlite:///{tmp_path}/w.db", sqlite_writer=request.param)
    database = Database.from_settings(settings)
    await database.upgrade()
    database.writer.serving = lambda: 1
    try:
        yield database
    finally:
        await database.close()


def _handed_over(database: Database) -> bool:
    """Whether a batch went to the writer's process or thread."""
    return database.writer.batches > database.writer.inline


async def test_a_write_alone_commits_on_the_loop_and_syncs_the_wal_after_its_turn(
    database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[tuple[str, bool]] = []  # (the file, whether the writers' lock was free then)
    fdatasync = os.fdatasync

    def recording_fdatasync(descriptor: int) -> None:
        lock = os.open(tmp_path / "w.db-writer.lock", os.O_RDWR)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(lock, fcntl.LOCK_UN)
            synced.append((os.readlink(f"/proc/self/fd/{descriptor}"), True))
        except BlockingIOError:
            synced.append((os.readlink(f"/proc/self/fd/{descriptor}"), False))
        finally:
            os.close(lock)
        fdatasync(descriptor)

    monkeypatch.setattr(os, "fdatasync", recording_fdatasync)
    log = InteractionLog(database)
    first = await log.record(_turn(1, "conv_a"), new_conversation=_conversation("conv_a"))
    second = await log.record(_turn(2, "conv_a"))
    assert second == first + 1
    assert (database.writer.inline, database.writer.batches) == (2, 2)
    assert synced == [(f"{tmp_path}/w.db-wal", True)] * 2  # FULL: durable before it returns
    assert database.writer._process is None or database.writer._process.pid is None
    # What the loop committed, another connection reads, the conversation marked active too.
    with sqlite3.connect(tmp_path / "w.db") as other:
        rows = other.execute("SELECT message, conversation_id FROM interactions ORDER BY id")
        assert rows.fetchall() == [("m1", "conv_a"), ("m2", "conv_a")]
        (updated,) = other.execute("SELECT updated_at FROM conversations").fetchone()
        created = other.execute("SELECT created_at FROM interactions WHERE id=?", (second,))
        assert created.fetchone() == (updated,)


async def test_a_write_not_alone_is_handed_over(database: Database) -> None:
    database.writer.serving = lambda: 2
    await InteractionLog(database).record(_turn(1))
    assert (database.writer.inline, database.writer.batches) == (0, 1)
    assert await _messages(database) == ["m1"]


async def test_a_write_alone_waits_for_no_lock_another_process_holds(
    database: Database, tmp_path: Path
) -> None:
    """The writers' turn taken, or SQLite's write lock: the loop does not wait for either (it
    goes the usual way, whose writer waits), and nothing is written twice."""
    log = InteractionLog(database)
    await log.record(_turn(0))
    with writers_turn_taken(tmp_path / "w.db"):
        waiting = await held_off(log.record(_turn(1)))
    await waiting
    locking = sqlite3.connect(tmp_path / "w.db", isolation_level=None)
    try:
        locking.execute("BEGIN IMMEDIATE")  # SQLite's write lock, outside the writers' turns
        waiting = await held_off(log.record(_turn(2)))
        locking.execute("COMMIT")
        await waiting
    finally:
        locking.close()
    assert (database.writer.inline, database.writer.batches) == (1, 3)
    assert await _messages(database) == ["m0", "m1", "m2"]


async def test_a_write_alone_breaking_a_constraint_fails_as_in_a_batch(database: Database) -> None:
    log = InteractionLog(database)
    with pytest.raises(sa.IntegrityError):
        await log.record(_turn(1, "conv_missing"))  # no such conversation
    await log.record(_turn(2))  # the connection goes on
    assert database.writer.inline == 2
    assert await _messages(database) == ["m2"]


async def test_the_wal_is_checkpointed_in_a_thread_not_on_the_loop(
    database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer, "CHECKPOINT_EVERY", 3)
    checkpointed = asyncio.get_running_loop().create_future()
    checkpoint = writer._checkpoint

    def recording_checkpoint(path: str, *turns: Any) -> None:
        checkpoint(path, *turns)
        checkpointed.get_loop().call_soon_threadsafe(
            checkpointed.set_result, (path, threading.current_thread() is threading.main_thread())
        )

    monkeypatch.setattr(writer, "_checkpoint", recording_checkpoint)
    log = InteractionLog(database)
    for n in range(2):
        await log.record(_turn(n))
    assert not checkpointed.done()
    await log.record(_turn(2))
    assert await asyncio.wait_for(checkpointed, 10) == (f"{tmp_path}/w.db", False)
    inline = database.writer._inline
    assert inline is not None and inline._connection is not None
    # The loop's own connection never checkpoints (SQLite's automatic checkpoint is off on it).
    assert inline._connection.execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)
    with sqlite3.connect(tmp_path / "w.db") as other:
        busy, frames, done = other.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    assert (busy, frames) == (0, done)


async def test_the_server_commits_a_lone_request_on_the_loop_and_others_together(
    tmp_path: Path,
) -> None:
    """The server tells its writer when a request is alone: the requests in flight counted."""
    settings = Settings(database_url=f"sqlite:///{tmp_path}/w.db", api_key=ADMIN_KEY)
    backend = FakeBackend(delay=0.05)
    async with running_app(settings, backend) as api:
        writer_ = api.runtime.database.writer
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        body = {"userId": "u", "message": "hello"}
        answer = await api.http.post("/api/v1/gpt/conversations", json=body, headers=headers)
        assert answer.status_code == 200, answer.text
        assert (writer_.inline, writer_.batches) == (1, 1)
        answers = await asyncio.gather(
            *(
                api.http.post("/api/v1/gpt/conversations", json=body, headers=headers)
                for _ in range(4)
            )
        )
        assert [answer.status_code for answer in answers] == [200] * 4
        # The first of them to be written had others in flight: handed over, and the
        # next ones found its batch committing; only the last may have been alone by then.
        assert writer_.inline <= 2 and writer_.batches >= 2
        assert api.runtime.metrics.in_flight == 0
