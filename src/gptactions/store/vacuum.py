"""SQLite space: new files give freed pages back incrementally (`auto_vacuum=INCREMENTAL`), and
`reclaim` returns them to the file system after a purge."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

# Pages given back after one purge at most (4 KiB each: 400 MB); the next purge goes on.
MAX_PAGES_RECLAIMED = 100_000


async def reclaim(engine: AsyncEngine) -> None:
    """Give the free pages of a SQLite file back to the file system (auto_vacuum=INCREMENTAL)."""
    async with engine.connect() as connection:
        await connection.run_sync(_incremental_vacuum)
        await connection.commit()


def _incremental_vacuum(connection: Connection) -> None:
    if connection.exec_driver_sql("PRAGMA auto_vacuum").scalar() != 2:  # not INCREMENTAL
        return
    free = connection.exec_driver_sql("PRAGMA freelist_count").scalar() or 0
    # Python's sqlite3 steps a statement without result columns once, and each step of the
    # pragma frees one page: run it once per free page.
    for _ in range(min(int(free), MAX_PAGES_RECLAIMED)):
        connection.exec_driver_sql("PRAGMA incremental_vacuum")


def set_incremental_vacuum(dbapi_connection: Any, _record: Any) -> None:
    """Connect hook: a new SQLite file gives space back incrementally (before its first table)."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA auto_vacuum")
    if cursor.fetchone()[0] != 2:
        cursor.execute("PRAGMA auto_vacuum=INCREMENTAL")  # no effect once tables exist
    cursor.close()
