"""Retention: interactions older than a cutoff deleted in small batches, the conversations left
empty with them, and the space given back (SQLite: `incremental_vacuum` in chunks of short
transactions, then the WAL file truncated, see store/vacuum.py; PostgreSQL's autovacuum keeps up
with small batches).

Each batch is one short transaction, so writers never wait long. Replicas do not purge at the
same time: on PostgreSQL a batch runs only under a transaction-level advisory lock that another
replica's purge holds (it skips its turn), on SQLite under `BEGIN IMMEDIATE` (one writer).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text

from gptactions.store.db import Database
from gptactions.store.vacuum import reclaim

# Rows per batch: a batch holds the write lock for milliseconds.
BATCH = 500
# Any constant works: every replica takes the same lock before a batch.
_PG_PURGE_LOCK = 7_434_201_114

_OLD_INTERACTIONS = """
    DELETE FROM interactions WHERE id IN (
        SELECT id FROM interactions WHERE created_at < :cutoff ORDER BY created_at, id LIMIT :n
    )
"""
_EMPTY_CONVERSATIONS = """
    DELETE FROM conversations WHERE id IN (
        SELECT c.id FROM conversations c
        WHERE c.updated_at < :cutoff
          AND NOT EXISTS (SELECT 1 FROM interactions i WHERE i.conversation_id = c.id)
        LIMIT :n
    )
"""


@dataclass(frozen=True)
class Purged:
    """What a purge deleted."""

    interactions: int = 0
    conversations: int = 0

    def __add__(self, other: Purged) -> Purged:
        return Purged(
            self.interactions + other.interactions, self.conversations + other.conversations
        )


async def purge(database: Database, cutoff: datetime, *, batch: int = BATCH) -> Purged:
    """Delete interactions created before `cutoff` and the conversations left empty."""
    total = Purged()
    while True:
        done = await _batch(database, cutoff, batch)
        if done is None:  # another replica is purging
            break
        total += done
        if done.interactions < batch and done.conversations < batch:
            break
        await asyncio.sleep(0)  # let requests in between batches
    if database.is_sqlite and (total.interactions or total.conversations):
        await reclaim(database.engine)
    return total


async def _batch(database: Database, cutoff: datetime, batch: int) -> Purged | None:
    values: dict[str, Any] = {"cutoff": cutoff, "n": batch}
    async with database.engine.connect() as connection:
        if database.is_sqlite:
            await connection.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            got = await connection.scalar(
                text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": _PG_PURGE_LOCK}
            )
            if not got:
                await connection.rollback()
                return None
        interactions = (await connection.execute(text(_OLD_INTERACTIONS), values)).rowcount
        conversations = (await connection.execute(text(_EMPTY_CONVERSATIONS), values)).rowcount
        await connection.commit()
    return Purged(interactions or 0, conversations or 0)
