"""Verified keys kept in memory, forgotten when any replica revokes a key.

Every revocation bumps a version, a row of the database in the revocation's own transaction. The
cache reads that row at most every `CHECK_INTERVAL` seconds, from the request that finds it due,
and forgets every key when it has changed: a key revoked anywhere stops working everywhere within
that interval and one query. The database is the only version read: a revocation committed there
is never missed, whatever else was or was not told of it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from gptactions.store import queries
from gptactions.store.db import Database

log = logging.getLogger(__name__)

CHECK_INTERVAL = 0.5
"""Seconds a cached key is trusted without asking whether a key was revoked since."""
MAX_KEYS = 10_000
REDIS_VERSION_KEY = "gptactions:keys:version"

PrincipalT = TypeVar("PrincipalT")
"""What a verified key stands for (`services.keys.Principal`); the cache never looks inside."""


class KeyVersions:
    """The revocation version: the database's, bumped in Redis too for older servers."""

    def __init__(self, database: Database, redis_url: str | None = None) -> None:
        self._database = database
        self._redis: Any = None
        if redis_url:
            import redis.asyncio as redis

            self._redis = redis.from_url(redis_url, socket_timeout=1, socket_connect_timeout=1)

    async def current(self) -> int:
        """The version now, from the database: one indexed read of its one row."""
        async with self._database.session() as session:
            return await queries.key_version(session)

    async def bumped(self) -> None:
        """After the database's bump committed, bump Redis's copy, if Redis is configured.

        Only servers from before the database became the version they read look at Redis's
        copy (they read nothing else while Redis is set): it keeps them told during an upgrade.
        """
        if self._redis is not None:
            try:
                await self._redis.incr(REDIS_VERSION_KEY)
            except Exception as error:
                log.warning(
                    "key cache: Redis unavailable (%s); the revocation is in the database, "
                    "where every server sees it within %s s (only servers from before they "
                    "read it there, which read Redis's copy alone, miss it)",
                    error,
                    CHECK_INTERVAL,
                )

    async def close(self) -> None:
        """Close the Redis connection, if any."""
        if self._redis is not None:
            await self._redis.aclose()


class KeyCache(Generic[PrincipalT]):
    """Key hash -> principal, for keys that were valid when last checked."""

    def __init__(
        self,
        versions: KeyVersions,
        *,
        interval: float = CHECK_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._versions = versions
        self._interval = interval
        self._clock = clock
        self._keys: dict[str, PrincipalT] = {}
        self._version: int | None = None
        self._checked_at = -float("inf")
        self._check: asyncio.Future[None] | None = None
        self.generation = 0
        """Bumped each time the cache forgets: a lookup started before must not be cached."""

    async def get(self, key_hash: str) -> PrincipalT | None:
        """The cached principal of a key still valid, after a version check when one is due."""
        if self._clock() - self._checked_at >= self._interval:
            await self._refresh()
        return self._keys.get(key_hash)

    def put(self, key_hash: str, principal: PrincipalT, generation: int) -> None:
        """Remember a key found valid by a lookup that began at `generation`."""
        if generation != self.generation:
            return  # a revocation was seen meanwhile: the lookup may predate it
        if len(self._keys) >= MAX_KEYS:
            self._keys.clear()
        self._keys[key_hash] = principal

    def forget(self) -> None:
        """Drop every cached key (a key was revoked)."""
        self._keys.clear()
        self.generation += 1

    async def _refresh(self) -> None:
        # Concurrent requests that find the check due share one query.
        if self._check is None:
            self._check = asyncio.ensure_future(self._read())
        check = self._check
        try:
            await asyncio.shield(check)
        finally:
            if self._check is check and check.done():
                self._check = None

    async def _read(self) -> None:
        started = self._clock()
        version = await self._versions.current()
        if version != self._version:
            if self._version is not None:
                self.forget()
            self._version = version
        self._checked_at = started
