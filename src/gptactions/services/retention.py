"""Retention of the interaction log: `GPTACTIONS_LOG_RETENTION` in the background, and by hand."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from gptactions.store import retention
from gptactions.store.db import Database
from gptactions.store.models import utcnow
from gptactions.store.retention import Purged

log = logging.getLogger(__name__)

# Seconds between two background purges, and between checks for a database not ready yet.
PURGE_EVERY = 600.0
READY_CHECK_EVERY = 5.0


class Retention:
    """Deletes interactions older than a given age, and the conversations left empty."""

    def __init__(self, database: Database, keep_seconds: int | None = None) -> None:
        self._database = database
        self.keep_seconds = keep_seconds

    async def purge_older_than(self, seconds: int) -> Purged:
        """Delete what was created more than `seconds` ago, in small batches."""
        return await retention.purge(self._database, utcnow() - timedelta(seconds=seconds))

    async def run(self) -> None:
        """Purge now and every `PURGE_EVERY` seconds, forever (a background task)."""
        if self.keep_seconds is None:
            return
        while True:
            if not self._database.ready:
                await asyncio.sleep(READY_CHECK_EVERY)
                continue
            try:
                purged = await self.purge_older_than(self.keep_seconds)
            except Exception as error:  # the next round tries again
                log.warning("purging old interactions failed: %s", error)
            else:
                if purged.interactions or purged.conversations:
                    log.info(
                        "retention: deleted %d interaction(s) and %d empty conversation(s)",
                        purged.interactions,
                        purged.conversations,
                    )
            await asyncio.sleep(PURGE_EVERY)
