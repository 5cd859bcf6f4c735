"""The database: an async engine for SQLite (WAL) or PostgreSQL, and migrations at start-up."""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import event, make_url, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from gptactions.config import to_async_url
from gptactions.store import outage, vacuum
from gptactions.store.outage import DatabaseUnavailable, OutageLog

MIGRATIONS = Path(__file__).parent / "migrations"
# Any constant works: every replica must take the same advisory lock before migrating.
_PG_MIGRATION_LOCK = 7_434_201_113
# Seconds a SQLite statement waits for another connection's lock before failing (503).
DEFAULT_BUSY_TIMEOUT = 5.0
# Migrations wait longer for another process's: a big one may take minutes, and a replica that
# gave up would not start.
_MIGRATION_BUSY_TIMEOUT = 600.0


@dataclass(frozen=True)
class Upgrade:
    """What `Database.upgrade` did: the schema revision before (None: no schema) and after."""

    before: str | None
    after: str | None


class Database:
    """An engine and its session factory."""

    def __init__(self, url: str, *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> None:
        self.url = to_async_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        self.busy_timeout = busy_timeout
        options: dict[str, Any] = {}
        if self.is_sqlite:
            _ensure_sqlite_directory(self.url)
            options["connect_args"] = {"timeout": busy_timeout}
        else:
            options.update(pool_size=10, max_overflow=10, pool_pre_ping=True)
            options.update(outage.postgres_options())
        self.engine: AsyncEngine = create_async_engine(self.url, **options)
        if self.is_sqlite:
            event.listen(
                self.engine.sync_engine, "connect", functools.partial(_sqlite_pragmas, busy_timeout)
            )
            # Before the pragmas: switching to WAL writes the header, fixing the vacuum mode.
            event.listen(
                self.engine.sync_engine, "connect", vacuum.set_incremental_vacuum, insert=True
            )
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self.outage = OutageLog(self.location)
        # Whether the schema is known to be current (set by whoever applied or checked it).
        self.ready = False
        self.commit_observer: Callable[[float], None] | None = None
        """Told how many seconds each commit of `session` took (the metrics listen)."""

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session whose transaction commits on success and rolls back on error.

        Raises `DatabaseUnavailable` when the database cannot be reached.
        """
        try:
            async with self.sessions() as session, session.begin() as transaction:
                yield session
                started = time.perf_counter()
                await transaction.commit()
                if self.commit_observer is not None:
                    self.commit_observer(time.perf_counter() - started)
        except Exception as error:
            if not outage.is_unavailable(error):
                raise
            self.outage.failed(error)
            raise DatabaseUnavailable(self.location, error) from error
        self.outage.succeeded()

    @property
    def location(self) -> str:
        """Where the database is, for messages: a SQLite file, or the URL without its password."""
        if self.is_sqlite:
            return self.url.split(":///", 1)[-1].split("?", 1)[0]
        return make_url(self.url).render_as_string(hide_password=True)

    async def upgrade(self) -> Upgrade:
        """Apply every pending migration; replicas starting together take turns."""
        async with self.engine.connect() as connection:
            if self.is_sqlite:
                # The write lock from the start: a second process (or engine) waits here, then
                # finds the migrations applied, instead of racing to create the same tables.
                await connection.exec_driver_sql(_busy_pragma(_MIGRATION_BUSY_TIMEOUT))
                await connection.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                await connection.execute(
                    text("SELECT pg_advisory_lock(:k)"), {"k": _PG_MIGRATION_LOCK}
                )
            try:
                done = await connection.run_sync(_run_upgrade)
                await connection.commit()
            finally:
                if self.is_sqlite:  # the connection goes back to the pool: requests wait less
                    await connection.exec_driver_sql(_busy_pragma(self.busy_timeout))
                else:
                    # A failed migration leaves the transaction aborted: roll it back so the
                    # unlock runs (the lock is the session's, it would outlive the transaction)
                    # and the migration's own error is the one raised.
                    if connection.in_transaction():
                        await connection.rollback()
                    await connection.execute(
                        text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_MIGRATION_LOCK}
                    )
                    await connection.commit()
        return done

    async def ping(self) -> bool:
        """Whether the database answers."""
        try:
            async with self.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except Exception as error:
            self.outage.failed(error)
            return False
        self.outage.succeeded()
        return True

    async def close(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration, pointing at the packaged migrations."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _run_upgrade(connection: Connection) -> Upgrade:
    before = _revision(connection)
    command.upgrade(alembic_config(connection), "head")
    return Upgrade(before, _revision(connection))


def _busy_pragma(seconds: float) -> str:
    return f"PRAGMA busy_timeout={round(seconds * 1000)}"


def _sqlite_pragmas(busy_timeout: float, dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # The busy timeout first, so that what follows waits for other connections' locks.
    cursor.execute(_busy_pragma(busy_timeout))
    # WAL is a property of the file: switch only once. The switch needs the database to itself,
    # and SQLite does not wait for that, so connections opening together retry for a while.
    cursor.execute("PRAGMA journal_mode")
    if str(cursor.fetchone()[0]).lower() != "wal":
        deadline = time.monotonic() + 30
        while True:
            try:
                cursor.execute("PRAGMA journal_mode=WAL")
                break
            except Exception as error:  # the driver's OperationalError, whichever adapter wraps it
                if "locked" not in str(error) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _ensure_sqlite_directory(url: str) -> None:
    path = url.split(":///", 1)[-1].split("?", 1)[0]
    if path and path != ":memory:":
        Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
