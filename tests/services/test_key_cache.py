"""Keys are verified from memory, and a key revoked anywhere stops working on every replica."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import ExitStack
from typing import TypeVar

import httpx
import pytest
from sqlalchemy import text

from gptactions.services.keycache import CHECK_INTERVAL
from gptactions.services.keys import KeyService
from gptactions.store.db import Database
from tests.conftest import ADMIN_KEY, fresh_postgres_database, postgres_reachable
from tests.serving import Server, serve

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


ServerPair = tuple[str, list[Server]]


@pytest.fixture(scope="module")
def server_pairs(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[[str, str | None], ServerPair]]:
    """Two servers on one database (SQLite or PostgreSQL), with or without Redis: started when a
    test asks for them, and kept for the next test if it asks for the same (each test revokes a
    key of its own; a server takes seconds to start). One pair runs at a time."""
    current: list[tuple[tuple[str, str | None], ServerPair, ExitStack]] = []

    def pair(kind: str, redis_url: str | None) -> ServerPair:
        if current and current[0][0] == (kind, redis_url):
            return current[0][1]
        while current:
            current.pop()[2].close()
        stack = ExitStack()
        try:
            directory = tmp_path_factory.mktemp(f"servers-{kind}")
            if kind == "sqlite":
                database_url = f"sqlite:///{directory / 'shared.db'}"
            else:
                database_url = stack.enter_context(fresh_postgres_database())
            environment = {"GPTACTIONS_DATABASE_URL": database_url} | (
                {"GPTACTIONS_REDIS_URL": redis_url} if redis_url else {}
            )
            servers = []
            for name in ("a", "b"):
                (directory / name).mkdir()
                servers.append(
                    stack.enter_context(serve(directory / name, key=ADMIN_KEY, env=environment))
                )
        except BaseException:
            stack.close()
            raise
        current.append(((kind, redis_url), (database_url, servers), stack))
        return database_url, servers

    try:
        yield pair
    finally:
        while current:
            current.pop()[2].close()


# Redis down at revocation is the in-process test's above (`redis-down`): with real servers,
# one revocation Redis never hears of stands for both (each such server takes ~6 s here).
# In this order, the two variants whose servers use Redis share them.
VARIANTS = [(None, None), (REDIS_URL, REDIS_URL), (REDIS_URL, None)]
VARIANT_IDS = ["database", "redis", "revoked-without-redis"]


@pytest.mark.parametrize(
    ("kind", "redis_url", "revoker_redis_url"),
    [
        pytest.param(kind, *variant, id=f"{kind}-{name}", marks=marks)
        for kind, marks in (("sqlite", ()), ("postgres", pytest.mark.postgres))
        for variant, name in zip(VARIANTS, VARIANT_IDS, strict=True)
    ],
)
def test_a_key_revoked_stops_working_on_two_servers(
    server_pairs: Callable[[str, str | None], ServerPair],
    kind: str,
    redis_url: str | None,
    revoker_redis_url: str | None,
) -> None:
    """The servers may use Redis and the revoking command not, or not reach it: still refused."""
    if kind == "postgres" and not postgres_reachable():
        pytest.skip("PostgreSQL is not reachable")
    database_url, servers = server_pairs(kind, redis_url)
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
