"""Shared fixtures: an isolated directory per test, apps on SQLite or PostgreSQL, the real model."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from gptactions.app import create_app
from gptactions.config import Settings
from gptactions.llm.base import Backend
from gptactions.llm.fake import FakeBackend
from gptactions.llm.local import LocalBackend
from gptactions.llm.router import BackendRouter
from gptactions.runtime import Runtime
from gptactions.services.keys import DEFAULT_SCOPES
from gptactions.store.db import Database

PG_HOST, PG_PORT = "127.0.0.1", 5432
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/0"
ADMIN_KEY = "gpta_test_admin_key_0123456789abcdefghijklmnop"


def reachable(host: str, port: int) -> bool:
    """Whether something answers on `host`:`port`."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def postgres_reachable() -> bool:
    """Whether the PostgreSQL server of the machine answers."""
    return reachable(PG_HOST, PG_PORT)


def redis_reachable() -> bool:
    """Whether the Redis server of the machine answers."""
    return reachable(REDIS_HOST, REDIS_PORT)


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test runs in its own directory, with no GPTACTIONS_* variable from outside."""
    for name in list(os.environ):
        if name.startswith("GPTACTIONS_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


async def _postgres_admin(sql: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(
        host=PG_HOST, port=PG_PORT, user="postgres", database="postgres"
    )
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


@contextmanager
def fresh_postgres_database(template: str | None = None) -> Iterator[str]:
    """The URL of a new PostgreSQL database, dropped when the block ends: empty, or a copy of
    the database named `template`."""
    name = f"gptactions_test_{uuid.uuid4().hex[:12]}"
    copy = f' TEMPLATE "{template}"' if template else ""
    asyncio.run(_postgres_admin(f'CREATE DATABASE "{name}"{copy}'))
    try:
        yield f"postgresql://postgres@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        asyncio.run(_postgres_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _migrate(url: str) -> None:
    database = Database(url)
    try:
        await database.upgrade()
    finally:
        await database.close()


# Most tests want a database the app has migrated, and nothing in it. Migrating anew took ~0.1 s
# on SQLite and ~1 s on PostgreSQL (on these 2 cores), for each of some 750 tests (`settings`,
# `app_factory`): their databases are copies of one migrated once a run instead (the app's start
# still checks the revision, and finds it current). Migrating itself is tested on empty databases
# (`database_url`), and by every server the tests start.


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite database at the schema's head, with no rows: the source of `copy_sqlite`."""
    path = tmp_path_factory.mktemp("migrated") / "head.db"
    asyncio.run(_migrate(f"sqlite:///{path}"))
    return path


def copy_sqlite(source: Path, target: Path) -> None:
    """A copy of the SQLite database `source`, which no one has open: its write-ahead log was
    folded into the file when it closed, so the file alone is the whole database."""
    assert not source.with_name(source.name + "-wal").exists(), f"{source} is in use"
    shutil.copyfile(source, target)


@pytest.fixture(scope="session")
def migrated_postgres() -> Iterator[str]:
    """The name of a PostgreSQL database at the schema's head, with no rows, for the run: the
    template of `migrated_database_url`'s."""
    if not postgres_reachable():
        pytest.skip(f"PostgreSQL is not reachable on {PG_HOST}:{PG_PORT}")
    with fresh_postgres_database() as url:
        asyncio.run(_migrate(url))
        yield url.rsplit("/", 1)[1]


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    if not postgres_reachable():
        pytest.skip(f"PostgreSQL is not reachable on {PG_HOST}:{PG_PORT}")
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each storage test runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def migrated_database_url(
    request: pytest.FixtureRequest, tmp_path: Path, migrated_sqlite: Path
) -> Iterator[str]:
    """`database_url`, already migrated: a new copy of the run's migrated database."""
    if request.param == "sqlite":
        copy_sqlite(migrated_sqlite, tmp_path / "test.db")
        yield f"sqlite:///{tmp_path / 'test.db'}"
        return
    template: str = request.getfixturevalue("migrated_postgres")
    with fresh_postgres_database(template) as url:
        yield url


@pytest.fixture
def settings(tmp_path: Path, migrated_sqlite: Path) -> Settings:
    """Settings on a SQLite file in the test's directory (migrated already, empty), with a known
    admin key."""
    copy_sqlite(migrated_sqlite, tmp_path / "test.db")
    return Settings(database_url=f"sqlite:///{tmp_path / 'test.db'}", api_key=ADMIN_KEY)


@pytest.fixture(scope="session")
def local_backend() -> Iterator[LocalBackend]:
    """The real embedded model, loaded once for the whole run.

    One thread: the machine's cores are shared by parallel test runs, and llama.cpp's threads
    wait for each other spinning, which gets very slow when the cores are oversubscribed.
    """
    backend = LocalBackend(threads=1)
    asyncio.run(backend.start())
    yield backend
    asyncio.run(backend.close())


class ApiClient:
    """An in-process client of a running app, with helpers to make keys."""

    def __init__(self, client: httpx.AsyncClient, runtime: Runtime) -> None:
        self.http = client
        self.runtime = runtime

    async def key(
        self,
        *,
        scopes: tuple[str, ...] = DEFAULT_SCOPES,
        tenant: str = "default",
        name: str = "test",
    ) -> str:
        """A new key's secret."""
        return (await self.runtime.keys.create(name, scopes=scopes, tenant=tenant)).secret

    async def post(
        self, path: str, body: Any, key: str | None = ADMIN_KEY, **kw: Any
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        headers.update(kw.pop("headers", {}))
        return await self.http.post(path, json=body, headers=headers, **kw)

    async def get(self, path: str, key: str | None = ADMIN_KEY, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        headers.update(kw.pop("headers", {}))
        return await self.http.get(path, headers=headers, **kw)


@asynccontextmanager
async def running_app(settings: Settings, backend: Backend) -> AsyncIterator[ApiClient]:
    """The app with its lifespan running, and a client that talks to it in-process."""
    runtime = Runtime(settings, router=BackendRouter([backend]))
    app = create_app(runtime=runtime)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield ApiClient(client, runtime)


class _KeepLoaded:
    """Wraps the shared real backend so an app's shutdown does not unload it for other tests."""

    def __init__(self, inner: LocalBackend) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None


@pytest.fixture
def fake() -> FakeBackend:
    """A fake backend: canned replies, else an echo."""
    return FakeBackend()


@pytest.fixture
async def api(settings: Settings, fake: FakeBackend) -> AsyncIterator[ApiClient]:
    """The app on SQLite with the fake backend."""
    async with running_app(settings, fake) as client:
        yield client


@pytest.fixture
def app_factory(migrated_database_url: str) -> Callable[..., Any]:
    """Apps on the parametrized database (SQLite and PostgreSQL), migrated already."""

    def make(backend: Backend | None = None, **overrides: Any) -> Any:
        settings = Settings(database_url=migrated_database_url, api_key=ADMIN_KEY, **overrides)
        return running_app(settings, backend or FakeBackend())

    return make


@pytest.fixture
async def model_api(settings: Settings, local_backend: LocalBackend) -> AsyncIterator[ApiClient]:
    """The app on SQLite with the real embedded model."""
    async with running_app(settings, _KeepLoaded(local_backend)) as client:  # type: ignore[arg-type]
        yield client
