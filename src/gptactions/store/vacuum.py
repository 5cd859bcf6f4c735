"""SQLite space: new files give freed pages back incrementally (`auto_vacuum=INCREMENTAL`),
`reclaim` returns them to the file system after a purge, and the WAL file shrinks back after.

A purge frees pages by the thousands. Freed one a transaction, each commit appends the moved
page, its parent, the pointer-map page and page 1 to the WAL, so the WAL grew to several times
the pages freed, and kept that size (a WAL is reused from its start, never truncated, unless told
to). Here pages go `CHUNK_PAGES` a transaction (short still: requests' writes interleave), and at
the end a checkpoint truncates the WAL file; connections also cap what a reset WAL keeps
(`JOURNAL_SIZE_LIMIT`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger(__name__)

# Pages given back after one purge at most (4 KiB each: 400 MB); the next purge goes on.
MAX_PAGES_RECLAIMED = 100_000
# Pages given back a transaction (4 KiB each: 8 MB): the write lock is held for milliseconds.
CHUNK_PAGES = 2_000
# Bytes a WAL file keeps once it is reset (after a checkpoint): 64 MiB.
JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024


async def reclaim(engine: AsyncEngine) -> None:
    """Give the free pages of a SQLite file back to the file system (auto_vacuum=INCREMENTAL),
    `CHUNK_PAGES` a transaction, then truncate the WAL file (`truncate_wal`)."""
    async with engine.connect() as connection:
        free = await connection.run_sync(_free_pages)
        await connection.commit()
        # Python's sqlite3 steps a statement without result columns once, and each step of the
        # pragma frees one page; a script steps each of its statements to the end.
        driver: Any = (await connection.get_raw_connection()).driver_connection
        left = min(free, MAX_PAGES_RECLAIMED)
        while left > 0:
            pages = min(left, CHUNK_PAGES)
            try:
                await driver.executescript(
                    f"BEGIN IMMEDIATE; PRAGMA incremental_vacuum({pages}); COMMIT;"
                )
            except BaseException:
                if driver.in_transaction:
                    await driver.rollback()
                raise
            left -= pages
            await asyncio.sleep(0)  # let requests in between chunks
    await truncate_wal(engine)


def _free_pages(connection: Connection) -> int:
    """The free pages of the file, or 0 when it does not give them back (not INCREMENTAL)."""
    if connection.exec_driver_sql("PRAGMA auto_vacuum").scalar() != 2:
        return 0
    return int(connection.exec_driver_sql("PRAGMA freelist_count").scalar() or 0)


async def truncate_wal(engine: AsyncEngine) -> bool:
    """Checkpoint the WAL and truncate its file to nothing, without waiting: a reader or writer
    in the way leaves it as it is (logged), for a later checkpoint. Whether it was truncated."""
    try:
        async with engine.connect() as connection:
            truncated = await connection.run_sync(_truncate_wal)
            await connection.commit()
    except DBAPIError as error:
        log.warning("could not checkpoint the SQLite WAL after a purge: %s", error)
        return False
    return truncated


def _truncate_wal(connection: Connection) -> bool:
    if connection.exec_driver_sql("PRAGMA journal_mode").scalar() != "wal":
        return True
    # PASSIVE copies what it can back into the database and never waits.
    busy, frames, copied = connection.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()
    if busy or frames != copied:
        log.info(
            "SQLite WAL not truncated after a purge: %s of %s frame(s) checkpointed, "
            "readers or writers still on it",
            copied,
            frames,
        )
        return False
    # TRUNCATE waits for readers with the busy handler: not at all here.
    waited = connection.exec_driver_sql("PRAGMA busy_timeout").scalar()
    connection.exec_driver_sql("PRAGMA busy_timeout=0")
    try:
        busy, frames, copied = connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()
    finally:
        connection.exec_driver_sql(f"PRAGMA busy_timeout={int(waited or 0)}")
    if busy:
        log.info("SQLite WAL not truncated after a purge: readers or writers still on it")
        return False
    return True


def set_incremental_vacuum(dbapi_connection: Any, _record: Any) -> None:
    """Connect hook: a new SQLite file gives space back incrementally (before its first table),
    and a WAL file reset after a checkpoint keeps `JOURNAL_SIZE_LIMIT` bytes at most."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA auto_vacuum")
    if cursor.fetchone()[0] != 2:
        cursor.execute("PRAGMA auto_vacuum=INCREMENTAL")  # no effect once tables exist
    cursor.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")
    cursor.close()
