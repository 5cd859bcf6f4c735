"""Group commit: concurrent interactions share one transaction; a failed one fails its batch only."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from gptactions.config import Settings
from gptactions.llm.fake import FakeBackend
from gptactions.services.interactions import (
    InteractionKind,
    InteractionLog,
    NewConversation,
    NewInteraction,
)
from gptactions.services.keys import Principal
from gptactions.store import queries
from gptactions.store.db import Database
from gptactions.store.models import Interaction, utcnow
from tests.conftest import ADMIN_KEY, running_app

PRINCIPAL = Principal("key1", "test", "default", frozenset({"admin"}))
Factory = Callable[..., Any]


@pytest.fixture(
    params=["sqlite", "sqlite-thread", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> str:
    """Here SQLite twice: its writer in a process of its own (the default), and in a thread
    (`GPTACTIONS_SQLITE_WRITER=thread`, read by the settings of `_database` and of the app)."""
    if request.param == "postgres":
        url: str = request.getfixturevalue("postgres_url")
        return url
    if request.param == "sqlite-thread":
        monkeypatch.setenv("GPTACTIONS_SQLITE_WRITER", "thread")
    return f"sqlite:///{tmp_path / 'test.db'}"


def _database(database_url: str) -> Database:
    """The database as the server opens it, from the settings (and so the environment)."""
    return Database.from_settings(Settings(database_url=database_url))


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    """A migrated database on SQLite (writer process, writer thread) and on PostgreSQL."""
    database = _database(database_url)
    in_thread = os.environ.get("GPTACTIONS_SQLITE_WRITER") == "thread"
    assert (database.writer._process is not None) == (database.is_sqlite and not in_thread)
    await database.upgrade()
    try:
        yield database
    finally:
        await database.close()


def _turn(n: int, conversation_id: str | None = None) -> NewInteraction:
    return NewInteraction(
        principal=PRINCIPAL,
        kind=InteractionKind.CONVERSATION,
        user_id="u",
        message=f"m{n}",
        reply=f"r{n}",
        conversation_id=conversation_id,
    )


def _conversation(conversation_id: str) -> NewConversation:
    now = utcnow()
    return NewConversation(
        id=conversation_id, tenant="default", user_id="u", created_at=now, updated_at=now
    )


@contextlib.contextmanager
def writers_turn_taken(database_file: Path) -> Iterator[None]:
    """Another process's writer holding the writers' lock file beside `database_file`."""
    other = os.open(f"{database_file}-writer.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(other, fcntl.LOCK_EX)
        yield
    finally:
        os.close(other)  # which lets it go


async def held_off(write: Awaitable[int], seconds: float = 0.3) -> asyncio.Future[int]:
    """`write` under way and, `seconds` later, still waiting (not failed, not done)."""
    waiting = asyncio.ensure_future(write)
    done, _ = await asyncio.wait([waiting], timeout=seconds)
    assert not done
    return waiting


async def _messages(database: Database) -> list[str]:
    async with database.session() as session:
        rows = await session.execute(text("SELECT message FROM interactions ORDER BY id"))
        return [row[0] for row in rows]


async def test_concurrent_interactions_share_one_commit(database: Database) -> None:
    log = InteractionLog(database)
    ids = await asyncio.gather(
        *(
            log.record(_turn(n, f"conv_{n}"), new_conversation=_conversation(f"conv_{n}"))
            for n in range(32)
        )
    )
    # All 32 were handed over before the writer ran: one transaction, one commit.
    assert database.writer.batches == 1
    assert len(set(ids)) == 32
    async with database.session() as session:
        rows = await session.execute(text("SELECT id, message, conversation_id FROM interactions"))
        stored = {row[0]: (row[1], row[2]) for row in rows}
    # Each request got its own row's id, and its conversation went in with it.
    assert stored == {ident: (f"m{n}", f"conv_{n}") for n, ident in enumerate(ids)}


@pytest.mark.parametrize("serving", [None, 8], ids=["unset", "others-served"])
async def test_while_others_are_served_a_batch_waits_a_few_rounds_for_their_writes(
    database: Database, serving: int | None
) -> None:
    """Requests reach their writes a round or three of the event loop apart (each `sleep(0)`
    here is one): while the process serves them, the batch waits for them
    (`ROUNDS_FOR_COMPANY`) instead of leaving with the first."""
    if database.is_sqlite:
        database.writer.serving = None if serving is None else lambda: serving
    log = InteractionLog(database)

    async def request(n: int) -> int:
        for _ in range(n % 3):
            await asyncio.sleep(0)
        return await log.record(_turn(n, f"conv_{n}"), new_conversation=_conversation(f"conv_{n}"))

    ids = await asyncio.gather(*(request(n) for n in range(8)))
    assert len(set(ids)) == 8 and sorted(await _messages(database)) == [f"m{n}" for n in range(8)]
    if database.is_sqlite:
        assert database.writer.batches == (1 if serving else 2)


async def test_a_continued_conversation_is_marked_active(database: Database) -> None:
    log = InteractionLog(database)
    first = _conversation("conv_a")
    await log.record(_turn(1, "conv_a"), new_conversation=first)
    later = _turn(2, "conv_a")
    await log.record(later)
    async with database.session() as session:
        conversation = await queries.conversation_by_id(session, "conv_a")
    assert conversation is not None
    assert queries.as_utc(conversation.updated_at) > queries.as_utc(first.updated_at)


async def test_written_rows_read_back_exactly(database: Database) -> None:
    """SQLite's writer writes through the driver: every column reads back as written (times to
    the microsecond, as SQLAlchemy stores them)."""
    log = InteractionLog(database)
    conversation = _conversation("conv_x")
    turn = replace(_turn(7, "conv_x"), at=utcnow(), latency_ms=12, action="act")
    ident = await log.record(turn, new_conversation=conversation)
    later = replace(_turn(8, "conv_x"), at=utcnow())
    await log.record(later)
    async with database.session() as session:
        stored = await session.get(Interaction, ident)
        touched = await queries.conversation_by_id(session, "conv_x")
    assert stored is not None and touched is not None
    assert turn.at is not None and later.at is not None
    assert queries.as_utc(stored.created_at) == turn.at
    assert (stored.message, stored.reply, stored.action, stored.latency_ms) == (
        "m7",
        "r7",
        "act",
        12,
    )
    assert (stored.tenant, stored.key_id, stored.user_id, stored.kind) == (
        "default",
        "key1",
        "u",
        "conversation",
    )
    assert (stored.error, stored.http_status, stored.endpoint) == (None, None, None)
    assert conversation.created_at is not None
    assert queries.as_utc(touched.created_at) == conversation.created_at
    assert queries.as_utc(touched.updated_at) == later.at


async def test_a_row_breaking_a_constraint_fails_alone(database: Database) -> None:
    log = InteractionLog(database)
    results = await asyncio.gather(
        log.record(_turn(1)),
        log.record(_turn(2, "conv_missing")),  # no such conversation: a foreign key violation
        log.record(_turn(3)),
        return_exceptions=True,
    )
    assert isinstance(results[0], int) and isinstance(results[2], int)
    assert isinstance(results[1], Exception)
    assert await _messages(database) == ["m1", "m3"]


async def test_a_reply_no_database_stores_is_stored_with_replacement_characters(
    database: Database,
) -> None:
    """A backend may answer NUL (which PostgreSQL's text cannot hold) or a lone surrogate (which
    UTF-8 cannot encode): stored with U+FFFD, not a failed commit for its whole batch."""
    log = InteractionLog(database)
    odd = replace(_turn(1), reply="a\x00b\ud800c")
    ids = await asyncio.gather(log.record(odd), log.record(_turn(2)))
    assert all(isinstance(ident, int) for ident in ids)
    async with database.session() as session:
        stored = await session.get(Interaction, ids[0])
        assert stored is not None and stored.reply == "a\ufffdb\ufffdc"


def _fail_first_insert(
    monkeypatch: pytest.MonkeyPatch, sqlite: bool, failed: list[list[str]]
) -> None:
    """The first batch's insert of interactions fails ("the disk failed"), and `failed` gets
    its messages: where the writer builds its statement (in the server's process, whether
    SQLite's writer is a process or a thread; on PostgreSQL, its one statement of a batch)."""
    name = "sqlite_insert_interactions" if sqlite else "postgres_write"
    insert = getattr(queries, name)

    def fail_first(*args: Any) -> Any:
        rows = args[-1]
        if not failed:
            failed.append([row["message"] for row in rows])
            raise RuntimeError("the disk failed")
        return insert(*args)

    monkeypatch.setattr(queries, name, fail_first)


async def test_a_failed_batch_fails_exactly_its_requests_then_the_writer_recovers(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = InteractionLog(database)
    failed: list[list[str]] = []
    _fail_first_insert(monkeypatch, database.is_sqlite, failed)
    first = await asyncio.gather(*(log.record(_turn(n)) for n in range(3)), return_exceptions=True)
    assert [len(rows) for rows in failed] == [3]
    assert all(isinstance(result, RuntimeError) for result in first)
    # The next batch is written: the writer went on.
    second = await asyncio.gather(*(log.record(_turn(n)) for n in range(3, 5)))
    assert all(isinstance(ident, int) for ident in second)
    assert await _messages(database) == ["m3", "m4"]


async def test_a_failed_commit_answers_its_requests_500_and_acknowledges_none(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    failed: list[list[str]] = []
    _fail_first_insert(monkeypatch, database_url.startswith("sqlite"), failed)
    settings = Settings(database_url=database_url, api_key=ADMIN_KEY)
    async with running_app(settings, FakeBackend()) as api:
        bodies = [{"userId": "u", "message": f"m{n}"} for n in range(8)]
        responses = await asyncio.gather(
            *(api.post("/api/v1/gpt/conversations", body) for body in bodies)
        )
        refused = [b["message"] for b, r in zip(bodies, responses, strict=True) if r.is_error]
        for response in responses:
            if response.is_error:
                assert response.status_code == 500
                assert set(response.json()["error"]) == {"code", "message", "details"}
            else:
                assert response.status_code == 200, response.text
        # Exactly the requests of the failed batch failed, and none of them was stored.
        assert sorted(refused) == sorted(failed[0])
        logs = (await api.get("/api/v1/gpt/logs", params={"limit": 100})).json()
        assert sorted(row["message"] for row in logs) == sorted(
            b["message"] for b in bodies if b["message"] not in refused
        )
        again = await api.post("/api/v1/gpt/conversations", {"userId": "u", "message": "again"})
        assert again.status_code == 200, again.text


async def test_closing_the_database_commits_what_the_writer_holds(database_url: str) -> None:
    database = _database(database_url)
    await database.upgrade()
    log = InteractionLog(database)
    pending = [asyncio.ensure_future(log.record(_turn(n))) for n in range(5)]
    await asyncio.sleep(0)  # each hands its row to the writer
    await database.close()
    assert all(isinstance(ident, int) for ident in await asyncio.gather(*pending))
    reopened = _database(database_url)
    try:
        assert sorted(await _messages(reopened)) == [f"m{n}" for n in range(5)]
    finally:
        await reopened.close()


async def test_sqlite_commits_are_durable_by_default(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FULL by default. The group writer's own connection commits with NORMAL, then syncs the
    WAL file itself, after its turn on the lock file and before any request of the batch is
    woken; with NORMAL asked for, nothing is synced. (The writer in a thread here, where this
    process sees its system calls; in a process: test_writer_process.py.)"""
    settings = settings.model_copy(update={"sqlite_writer": "thread"})
    synced: list[tuple[str, bool]] = []  # (the file, whether the writers' lock was free then)
    fdatasync = os.fdatasync

    def recording_fdatasync(descriptor: int) -> None:
        path = os.readlink(f"/proc/self/fd/{descriptor}")
        lock = os.open(f"{path.removesuffix('-wal')}-writer.lock", os.O_RDWR)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises if the writer holds it
            fcntl.flock(lock, fcntl.LOCK_UN)
            synced.append((path, True))
        except BlockingIOError:
            synced.append((path, False))
        finally:
            os.close(lock)
        fdatasync(descriptor)

    monkeypatch.setattr(os, "fdatasync", recording_fdatasync)
    database = Database.from_settings(settings)
    relaxed = Database.from_settings(settings.model_copy(update={"sqlite_synchronous": "normal"}))
    await database.upgrade()
    try:
        for db, pool, writer in ((database, 2, 1), (relaxed, 1, 1)):  # FULL 2, NORMAL 1
            async with db.session() as session:
                assert await session.scalar(text("PRAGMA synchronous")) == pool
            assert isinstance(db.writer_engine, Engine)  # SQLite's writer: its own thread's
            with db.writer_engine.connect() as connection:
                assert connection.scalar(text("PRAGMA synchronous")) == writer
        await InteractionLog(database).record(_turn(1))
        assert synced == [(f"{settings.database_url.split(':///')[-1]}-wal", True)]
        await InteractionLog(relaxed).record(_turn(2))
        assert len(synced) == 1
    finally:
        await database.close()
        await relaxed.close()


async def test_sqlite_writers_of_several_processes_take_turns_through_a_lock_file(
    tmp_path: Path,
) -> None:
    """Another process's writer holding the lock file: this one's batch waits for it, then
    commits; SQLite's busy handler (which polls in sleeps of milliseconds) is not what orders
    them."""
    database = Database(f"sqlite:///{tmp_path}/turns.db")
    await database.upgrade()
    log = InteractionLog(database)
    try:
        await log.record(_turn(0))  # the writer opens the lock file with its first batch
        with writers_turn_taken(tmp_path / "turns.db"):
            waiting = await held_off(log.record(_turn(1)), 0.5)  # by the other "process"
        assert isinstance(await waiting, int)
        assert await _messages(database) == ["m0", "m1"]
    finally:
        await database.close()
