"""SQLite's search index catches up with the log (store/search.py, migration 0013): a batch
indexes its rows, a request alone leaves them to a thread or the next search, and whatever the
order of writes, deletions and searches, the index holds exactly the rows of the table."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.engine import Connection

from gptactions.config import Settings
from gptactions.llm.fake import FakeBackend
from gptactions.services.interactions import InteractionLog
from gptactions.services.retention import Retention
from gptactions.store import search, writer
from gptactions.store.db import Database, alembic_config
from tests.conftest import ADMIN_KEY, running_app
from tests.store.test_writer import _turn

LOGS = "/api/v1/gpt/logs"


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database.from_settings(Settings(database_url=f"sqlite:///{tmp_path}/s.db"))
    await database.upgrade()
    try:
        yield database
    finally:
        await database.close()


async def _behind(database: Database) -> bool:
    async with database.session() as session:
        return await search.behind(session)


async def _indexed(database: Database, word: str) -> int:
    """How many rows the FTS5 index lists for `word` (not the log's answer: the index itself)."""
    async with database.session() as session:
        statement = "SELECT count(*) FROM interactions_fts WHERE interactions_fts MATCH :word"
        return int(await session.scalar(text(statement), {"word": word}) or 0)


async def _intact(database: Database) -> None:
    """FTS5's own check of an external-content index against its table: every row indexed,
    with its text, and nothing else (it raises SQLITE_CORRUPT_VTAB otherwise)."""
    async with database.session() as session:
        await session.execute(
            text(
                "INSERT INTO interactions_fts (interactions_fts, rank) VALUES ('integrity-check', 1)"
            )
        )


async def test_a_batch_indexes_its_rows_and_a_request_alone_leaves_them(
    database: Database,
) -> None:
    log = InteractionLog(database)
    await log.record(_turn(1))  # no `alone` told: the writer's batch
    assert not await _behind(database)
    assert await _indexed(database, "m1") == 1
    database.writer.serving = lambda: 1
    await log.record(_turn(2))
    assert database.writer.inline == 1
    assert await _behind(database) and await _indexed(database, "m2") == 0
    await database.catch_up_search()
    assert not await _behind(database)
    assert await _indexed(database, "m2") == 1
    await _intact(database)
    # Nothing missing: a search writes nothing (the WAL does not grow).
    wal = Path(f"{database.writer._lock_path}".removesuffix("-writer.lock") + "-wal")
    size = wal.stat().st_size
    await database.catch_up_search()
    assert wal.stat().st_size == size


async def test_the_thread_that_checkpoints_catches_the_index_up(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer, "CHECKPOINT_EVERY", 2)
    database.writer.serving = lambda: 1
    inline = database.writer._inline
    assert inline is not None
    log = InteractionLog(database)
    await log.record(_turn(1))
    await log.record(_turn(2))  # the second: a checkpoint is due, in a thread
    assert inline._checkpointing
    while inline._checkpointing:
        await asyncio.sleep(0)  # its done-callback runs on this loop
    assert not await _behind(database)
    await _intact(database)


async def test_deleting_the_newest_rows_lowers_the_mark_so_a_reused_id_is_indexed(
    database: Database,
) -> None:
    """SQLite gives a new row the largest id plus one: after the newest rows are deleted, an
    id is used again, and must not pass for indexed."""
    log = InteractionLog(database)
    for n in range(3):
        await log.record(_turn(n))  # batches: indexed, the mark at the third
    database.writer.serving = lambda: 1
    unindexed = await log.record(_turn(3))  # alone: past the mark
    async with database.session() as session:
        await session.execute(
            text("DELETE FROM interactions WHERE id >= :id"), {"id": unindexed - 1}
        )
    await _intact(database)  # the indexed row left the index; the other was never in it
    reused = await log.record(_turn(4))
    assert reused == unindexed - 1
    await database.catch_up_search()
    assert await _indexed(database, "m4") == 1
    assert await _indexed(database, "m2") == await _indexed(database, "m3") == 0
    await _intact(database)


async def test_retention_purges_indexed_and_unindexed_rows_alike(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path}/s.db", api_key=ADMIN_KEY)
    async with running_app(settings, FakeBackend()) as api:
        database = api.runtime.database
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        for word in ("alpha", "bravo"):  # each alone: committed on the loop, not indexed
            body = {"userId": "u", "message": f"{word} words"}
            answer = await api.http.post("/api/v1/gpt/conversations", json=body, headers=headers)
            assert answer.status_code == 200, answer.text
        assert database.writer.inline == 2
        # Searched at once: found, the search having indexed them first.
        answer = await api.http.get(LOGS, params={"q": "words"}, headers=headers)
        assert [item["message"] for item in answer.json()] == ["bravo words", "alpha words"]
        body = {"userId": "u", "message": "charlie words"}
        assert (
            await api.http.post("/api/v1/gpt/conversations", json=body, headers=headers)
        ).status_code == 200
        assert await _behind(database)
        purged = await Retention(database).purge_older_than(0)
        assert purged.interactions == 3
        await _intact(database)
        assert await _indexed(database, "words") == 0
        answer = await api.http.get(LOGS, params={"q": "words"}, headers=headers)
        assert answer.json() == []


async def test_undoing_0013_indexes_what_was_missing(database: Database) -> None:
    database.writer.serving = lambda: 1
    await InteractionLog(database).record(_turn(1))
    assert await _behind(database)

    def downgrade(connection: Connection) -> list[str]:
        command.downgrade(alembic_config(connection), "0012")
        rows = connection.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger'"))
        return sorted(row[0] for row in rows)

    async with database.engine.begin() as connection:
        triggers = await connection.run_sync(downgrade)
    assert triggers == [f"interactions_fts_{event}" for event in ("delete", "insert", "update")]
    assert await _indexed(database, "m1") == 1
    await _intact(database)
    await database.upgrade()
    assert not await _behind(database)
