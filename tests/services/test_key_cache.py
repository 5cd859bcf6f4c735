"""Keys are verified from memory, and a key revoked anywhere stops working on every replica."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import ExitStack
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
from sqlalchemy import text

from gptactions.services.keycache import CHECK_INTERVAL
from gptactions.services.keys import KeyService
from gptactions.store.db import Database
from tests.conftest import ADMIN_KEY
from tests.serving import serve

T = TypeVar("T")
REDIS_URL = "redis://127.0.0.1:6379/0"
UNREACHABLE_REDIS_URL = "redis://127.0.0.1:1/0"


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    """A migrated database on SQLite and on PostgreSQL."""
    database = Database(database_url)
    await database.upgrade()
    yield database
    await database.close()


def _replica(database: Database, clock: Clock, redis_url: str | None = None) -> KeyService:
    return KeyService(database, redis_url=redis_url, clock=clock)


async def _revoke_behind_the_caches_back(database: Database, key_id: str) -> None:
    async with database.session() as session:
        await session.execute(
            text("UPDATE api_keys SET revoked_at = CURRENT_TIMESTAMP WHERE id = :id"),
            {"id": key_id},
        )


@pytest.mark.parametrize("redis_url", [None, REDIS_URL], ids=["database", "redis"])
async def test_a_revocation_on_one_replica_reaches_the_others_cache(
    database: Database, redis_url: str | None
) -> None:
    clock = Clock()
    admin, replica = _replica(database, clock, redis_url), _replica(database, clock, redis_url)
    try:
        kept = await admin.create("kept")
        doomed = await admin.create("doomed")
        assert await replica.authenticate(doomed.secret) is not None
        assert await replica.authenticate(kept.secret) is not None
        # The replica answers from memory: a change it is not told about goes unseen...
        await _revoke_behind_the_caches_back(database, doomed.info.id)
        assert await replica.authenticate(doomed.secret) is not None

        await admin.revoke(kept.info.id)  # ...a revocation bumps the version,
        assert await replica.authenticate(kept.secret) is not None  # read within the interval,
        clock.now += CHECK_INTERVAL  # and once it is due, every cached key is checked again.
        assert await replica.authenticate(kept.secret) is None
        assert await replica.authenticate(doomed.secret) is None
        # The revoking replica forgets at once.
        assert await admin.authenticate(kept.secret) is None
    finally:
        await admin.close()
        await replica.close()


@pytest.mark.parametrize(
    "revoker_redis_url", [None, UNREACHABLE_REDIS_URL], ids=["without-redis", "redis-down"]
)
async def test_a_revocation_redis_never_hears_of_reaches_a_replica_using_redis(
    database: Database, revoker_redis_url: str | None
) -> None:
    # The database is the version every cache reads: a bump only it holds is never lost.
    clock = Clock()
    admin, replica = (
        _replica(database, clock, revoker_redis_url),
        _replica(database, clock, REDIS_URL),
    )
    try:
        doomed = await admin.create("doomed")
        assert await replica.authenticate(doomed.secret) is not None
        await admin.revoke(doomed.info.id)
        clock.now += CHECK_INTERVAL
        assert await replica.authenticate(doomed.secret) is None
    finally:
        await admin.close()
        await replica.close()


async def test_a_lookup_that_began_before_a_revocation_is_not_cached(database: Database) -> None:
    clock = Clock()
    keys = _replica(database, clock)
    try:
        await _race(keys)
    finally:
        await keys.close()


async def _race(keys: KeyService) -> None:
    created = await keys.create("racing")
    assert await keys.cache.get("nothing") is None  # the first check, done
    generation = keys.cache.generation
    principal = await keys.authenticate(created.secret)
    assert principal is not None
    keys.cache.forget()
    keys.cache.put("late", principal, generation)  # a lookup from before the forgetting
    assert await keys.cache.get("late") is None


# Redis down at revocation is the in-process test's above (`redis-down`): with real servers,
# one revocation Redis never hears of stands for both (each such server takes ~6 s here).
@pytest.mark.parametrize(
    ("redis_url", "revoker_redis_url"),
    [(None, None), (REDIS_URL, REDIS_URL), (REDIS_URL, None)],
    ids=["database", "redis", "revoked-without-redis"],
)
def test_a_key_revoked_stops_working_on_two_servers(
    database_url: str, tmp_path: Path, redis_url: str | None, revoker_redis_url: str | None
) -> None:
    """The servers may use Redis and the revoking command not, or not reach it: still refused."""
    if database_url.startswith("sqlite"):
        database_url = f"sqlite:///{tmp_path / 'shared.db'}"
    environment = {"GPTACTIONS_DATABASE_URL": database_url} | (
        {"GPTACTIONS_REDIS_URL": redis_url} if redis_url else {}
    )
    with ExitStack() as stack:
        servers = []
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            servers.append(
                stack.enter_context(serve(tmp_path / name, key=ADMIN_KEY, env=environment))
            )
        created = _run_keys(database_url, redis_url, lambda keys: keys.create("shared"))
        headers = {"Authorization": f"Bearer {created.secret}"}
        for server in servers:
            assert _status(server.url, headers) == 200

        _run_keys(database_url, revoker_redis_url, lambda keys: keys.revoke(created.info.id))

        # Each server may trust its cache for CHECK_INTERVAL; poll a bounded number of times.
        for server in servers:
            statuses = []
            deadline = time.monotonic() + 30 * CHECK_INTERVAL  # generous: the machine is shared
            while time.monotonic() < deadline:
                statuses.append(_status(server.url, headers))
                if statuses[-1] == 401:
                    break
            assert statuses[-1] == 401, f"{server.url} still accepts the revoked key"


def _status(url: str, headers: dict[str, str]) -> int:
    return httpx.get(f"{url}/api/v1/gpt/logs", headers=headers, timeout=10).status_code


def _run_keys(
    database_url: str, redis_url: str | None, work: Callable[[KeyService], Awaitable[T]]
) -> T:
    """What `gptactions keys ...` does: a process of its own, outside the servers."""

    async def run() -> T:
        database = Database(database_url)
        keys = KeyService(database, redis_url=redis_url)
        try:
            return await work(keys)
        finally:
            await keys.close()
            await database.close()

    return asyncio.run(run())
