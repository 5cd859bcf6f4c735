"""SQLite space after a big purge: the freed pages go back to the file system a chunk a
transaction, and the WAL file is truncated at the end, not left at the size the purge grew it to;
a reader in the way of the truncation leaves the WAL for later, without failing the purge."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert

from gptactions.config import Settings
from gptactions.llm.fake import FakeBackend
from gptactions.store.db import Database
from gptactions.store.models import Conversation, Interaction
from gptactions.store.vacuum import JOURNAL_SIZE_LIMIT, truncate_wal
from tests.conftest import ADMIN_KEY, ApiClient, running_app

from .rows import Shape, conversation_rows, interaction_rows

SHAPE = Shape(conversations=50)
# Old rows of 2 KB each: purged, they free thousands of 4 KiB pages (about 6,000).
ROWS = 12_000
PAD = "x" * 2_000
# A WAL truncated after the purge holds at most the odd write of the server since.
SMALL_WAL = 256 * 1024


def _old_rows() -> Iterator[list[dict[str, Any]]]:
    chunk = []
    for row in interaction_rows(ROWS, SHAPE):
        chunk.append(row | {"message": PAD + row["message"]})
        if len(chunk) == 2_000:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


async def _fill(database: Database) -> None:
    async with database.session() as session:
        await session.execute(insert(Conversation), conversation_rows(SHAPE))
    for chunk in _old_rows():
        async with database.session() as session:
            await session.execute(insert(Interaction), chunk)


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _pragma(path: Path, pragma: str) -> Any:
    with sqlite3.connect(path) as connection:
        value = connection.execute(f"PRAGMA {pragma}").fetchone()[0]
    connection.close()
    return value


@contextlib.asynccontextmanager
async def _filled_server(path: Path) -> AsyncIterator[ApiClient]:
    """A server on the SQLite file `path`, its log filled with the old rows."""
    settings = Settings(database_url=f"sqlite:///{path}", api_key=ADMIN_KEY)
    async with running_app(settings, FakeBackend()) as api:
        await _fill(api.runtime.database)
        yield api


async def test_a_big_purge_gives_the_space_back_and_leaves_a_small_wal(tmp_path: Path) -> None:
    path = tmp_path / "server.db"
    wal = tmp_path / "server.db-wal"
    async with _filled_server(path) as api:
        # All of it in the database file, by the test's own connection.
        assert _pragma(path, "wal_checkpoint(TRUNCATE)") == 0
        before = _size(path)
        assert _size(wal) == 0

        done = await api.runtime.retention.purge_older_than(86_400)  # as the server does
        assert (done.interactions, done.conversations) == (ROWS, SHAPE.conversations)

        # Measured while the server runs: it holds the WAL open, so nothing else removes it.
        assert _pragma(path, "freelist_count") == 0
        assert _size(path) < before // 4, (before, _size(path))
        assert _size(wal) < SMALL_WAL, _size(wal)


async def test_a_reader_in_the_way_of_the_truncation_does_not_fail_the_purge(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "server.db"
    wal = tmp_path / "server.db-wal"
    async with _filled_server(path) as api:
        database = api.runtime.database
        reader = sqlite3.connect(path, isolation_level=None)
        try:
            # A read transaction open on the WAL from before the purge to after it.
            reader.execute("BEGIN")
            assert reader.execute("SELECT count(*) FROM interactions").fetchone()[0] == ROWS
            with caplog.at_level(logging.INFO, logger="gptactions.store.vacuum"):
                done = await api.runtime.retention.purge_older_than(86_400)
            assert done.interactions == ROWS
            assert "WAL not truncated" in caplog.text
            assert _size(wal) > 0
            reader.execute("COMMIT")
        finally:
            reader.close()

        # The reader gone, the next checkpoint truncates it.
        assert await truncate_wal(database.engine)
        assert _size(wal) == 0
        assert _pragma(path, "freelist_count") == 0


async def test_server_connections_cap_a_reset_wal(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'server.db'}", api_key=ADMIN_KEY)
    async with running_app(settings, FakeBackend()) as api:
        engine = api.runtime.database.engine
        async with engine.connect() as connection:
            limit = await connection.exec_driver_sql("PRAGMA journal_size_limit")
        assert limit.scalar() == JOURNAL_SIZE_LIMIT
