"""The database: async engines for SQLite (WAL) or PostgreSQL, the group writer, and migrations.

SQLite gets the Datasette pattern: one long-lived connection that only the group writer uses
(`store/writer.py`: the interactions of concurrent requests, one commit per batch; a plain
sqlite3 connection in the writer's own thread, not aiosqlite) and a small
fixed pool of connections for everything else (reads, and the rare writes of keys and users),
none of them opened per request. PostgreSQL gets one pool, sized from the settings, that the
writer shares.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, event, make_url, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from gptactions.config import POSTGRES_TLS_FILES, Settings, to_async_url
from gptactions.store import outage, schema, search, vacuum, writer_process
from gptactions.store.outage import DatabaseUnavailable, OutageLog
from gptactions.store.schema import Revisions, UnknownRevision
from gptactions.store.writer import GroupWriter, Write, is_sqlite_file

MIGRATIONS = schema.MIGRATIONS
# Any constant works: every replica must take the same advisory lock before migrating.
_PG_MIGRATION_LOCK = 7_434_201_113
# Seconds a SQLite statement waits for another connection's lock before failing (503).
DEFAULT_BUSY_TIMEOUT = 5.0
# Migrations wait longer for another process's: a big one may take minutes, and a replica that
# gave up would not start.
_MIGRATION_BUSY_TIMEOUT = 600.0
# Connections of the pool when the settings do not say (SQLite: besides the writer's own).
SQLITE_POOL_SIZE = 4
POSTGRES_POOL_SIZE = 10
POSTGRES_MAX_OVERFLOW = 10
# Seconds a request waits for a free pooled SQLite connection under load before a 503.
SQLITE_POOL_TIMEOUT = 30.0


@dataclass(frozen=True)
class Upgrade:
    """What `Database.upgrade` (or `downgrade`) did: the schema revision before (None: no schema)
    and after; `newer` when the database was at a revision this version does not know, and left
    as it was."""

    before: str | None
    after: str | None
    newer: bool = False


class Database:
    """The engines, the session factory, and the group writer."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int | None = None,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        max_overflow: int = POSTGRES_MAX_OVERFLOW,
        sqlite_synchronous: str = "full",
        sqlite_writer: str = "process",
    ) -> None:
        self.url = to_async_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        self.busy_timeout = busy_timeout
        if self.is_sqlite:
            _ensure_sqlite_directory(self.url)
            self.engine: AsyncEngine = self._sqlite_engine(
                pool_size or SQLITE_POOL_SIZE, sqlite_synchronous
            )
            # The writer's one connection: opened once, kept for the life of the process, used
            # only by the writer's thread (synchronous: a batch is one hand-off to that thread).
            # With FULL, the writer commits with NORMAL and syncs the WAL itself, outside the
            # writers' turn (store/writer.py): as durable, without holding the lock through it.
            database = make_url(self.url).database
            sync_wal = sqlite_synchronous.lower() == "full" and is_sqlite_file(database)
            writer_synchronous: str | None = "normal" if sync_wal else sqlite_synchronous
            self.writer_engine: AsyncEngine | Engine = self._sqlite_writer_engine(
                str(writer_synchronous)
            )
            # Its connection in a process of its own by default (store/writer_process.py).
            process = (
                writer_process.Config(str(database), str(writer_synchronous).upper(), busy_timeout)
                if sqlite_writer == "process" and is_sqlite_file(database)
                else None
            )
        else:
            url, tls = tls_options(self.url)
            options = outage.postgres_options()
            if tls is not None:
                options["connect_args"] = {**options["connect_args"], "ssl": tls}  # type: ignore[dict-item]
            self.engine = create_async_engine(
                url, pool_size=pool_size or POSTGRES_POOL_SIZE, max_overflow=max_overflow, **options
            )
            # SQLAlchemy's own pre-ping waits the whole statement timeout (30 s) on a database
            # that hangs; this one waits `outage.PING_TIMEOUT`.
            event.listen(self.engine.sync_engine, "checkout", outage.ping_on_checkout)
            self.writer_engine = self.engine
            sync_wal = False
            writer_synchronous = None
            process = None
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self.outage = OutageLog(self.location)
        # Whether the schema is known to be current (set by whoever applied or checked it), and
        # if not, why, for /healthz and the 503s.
        self.ready = False
        self.waiting_for = "migrations not applied yet"
        self._probe: asyncio.Task[bool] | None = None
        self.commit_observer: Callable[[float], None] | None = None
        """Told how many seconds each commit took (the metrics listen)."""
        self.writer = GroupWriter(
            self.writer_engine,
            committed=self._committed,
            failed=self._unavailable,
            succeeded=self.outage.succeeded,
            sync_wal=sync_wal,
            synchronous=writer_synchronous.upper() if writer_synchronous else None,
            busy_timeout=busy_timeout,
            process=process,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> Database:
        """The database of `settings`, with its pool sizes and durability."""
        return cls(
            settings.database_url,
            busy_timeout=settings.sqlite_busy_timeout,
            pool_size=settings.database_pool_size,
            max_overflow=settings.database_max_overflow,
            sqlite_synchronous=settings.sqlite_synchronous,
            sqlite_writer=settings.sqlite_writer,
        )

    def _sqlite_engine(self, connections: int, synchronous: str) -> AsyncEngine:
        """A SQLite engine whose pool holds `connections`, never more, never closed on return."""
        engine = create_async_engine(
            self.url,
            connect_args={"timeout": self.busy_timeout},
            pool_size=connections,
            max_overflow=0,
            pool_timeout=SQLITE_POOL_TIMEOUT,
        )
        self._sqlite_hooks(engine.sync_engine, synchronous)
        return engine

    def _sqlite_writer_engine(self, synchronous: str) -> Engine:
        """The group writer's synchronous engine: one connection, never closed on return."""
        engine = create_engine(
            make_url(self.url).set(drivername="sqlite"),
            # Opened in the writer's thread, and only used there (or, idle, to be closed).
            connect_args={"timeout": self.busy_timeout, "check_same_thread": False},
            pool_size=1,
            max_overflow=0,
            pool_timeout=SQLITE_POOL_TIMEOUT,
        )
        self._sqlite_hooks(engine, synchronous)
        return engine

    def _sqlite_hooks(self, engine: Engine, synchronous: str) -> None:
        event.listen(engine, "connect", _SqlitePragmas(synchronous, self.busy_timeout))
        # Before the pragmas: switching to WAL writes the header, fixing the vacuum mode.
        event.listen(engine, "connect", vacuum.set_incremental_vacuum, insert=True)

    def _committed(self, seconds: float) -> None:
        if self.commit_observer is not None:
            self.commit_observer(seconds)

    def _unavailable(self, error: BaseException) -> BaseException:
        """What callers raise for `error`: `DatabaseUnavailable` (logged quietly) or itself."""
        if not outage.is_unavailable(error):
            return error
        self.outage.failed(error)
        return DatabaseUnavailable(self.location, error)

    async def write(self, write: Write) -> int:
        """Store an interaction (and its new conversation) with the next group commit.

        Returns the interaction's id once its transaction has committed. Raises
        `DatabaseUnavailable` when the database cannot be reached.
        """
        return await self.writer.write(write)

    async def catch_up_search(self) -> None:
        """SQLite: the rows the search index lacks indexed, before a search reads it: its own
        short transaction, outside the writers' turns (searches are rare), and none at all when
        nothing is missing (store/search.py). PostgreSQL's index follows every insert."""
        if not self.is_sqlite:
            return
        async with self.session() as session:
            if not await search.behind(session):
                return
        async with self.session() as session:
            await search.catch_up(session)

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
                self._committed(time.perf_counter() - started)
        except Exception as error:
            unavailable = self._unavailable(error)
            if unavailable is error:
                raise
            raise unavailable from error
        self.outage.succeeded()

    @property
    def location(self) -> str:
        """Where the database is, for messages: a SQLite file, or the URL without its password."""
        if self.is_sqlite:
            return self.url.split(":///", 1)[-1].split("?", 1)[0]
        return make_url(self.url).render_as_string(hide_password=True)

    async def revisions(self) -> Revisions:
        """The database's schema revision beside this version's."""
        async with self.engine.connect() as connection:
            return await connection.run_sync(schema.read)

    async def upgrade(self) -> Upgrade:
        """Apply every pending migration; replicas starting together take turns. A database a
        newer version migrated is left as it is (`newer`)."""
        async with self._migrating() as connection:
            return await connection.run_sync(_run_upgrade)

    async def downgrade(self, revision: str) -> Upgrade:
        """Undo the migrations after `revision`, each through its own downgrade.

        Raises `UnknownRevision` for a revision this version does not have, a database it does
        not know (newer), or one below `revision`.
        """
        schema.require_known(revision)
        async with self._migrating() as connection:
            return await connection.run_sync(_run_downgrade, revision)

    @asynccontextmanager
    async def _migrating(self) -> AsyncIterator[AsyncConnection]:
        """A connection holding the migration lock, committed when the block succeeds."""
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
                yield connection
                await connection.commit()
            finally:
                if self.is_sqlite:  # the connection goes back to the pool: requests wait less
                    if connection.in_transaction():
                        await connection.rollback()
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

    async def ping(self, within: float = outage.PROBE_TIMEOUT) -> bool:
        """Whether the database answers within `within` seconds.

        The probe goes on after a caller stops waiting, and the next caller waits for the same
        one: a database that hangs costs each caller `within` seconds, and never piles probes up.
        """
        probe = self._probe
        if probe is None or probe.done():
            probe = self._probe = asyncio.create_task(self._ping())
        done, _ = await asyncio.wait({probe}, timeout=within)
        if not done:
            self.outage.failed(TimeoutError(f"no answer within {within:g} s"))
            return False
        # The probe waited for, not `self._probe`: another caller may have started the next
        # one between this probe's end and this caller waking.
        return probe.result()

    async def _ping(self) -> bool:
        """Whether the database answers; once its schema is known to be this version's
        (`ready`), whether it still is: `gptactions db downgrade` run under a running server
        left /healthz saying ok while every request failed."""
        try:
            async with self.engine.connect() as connection:
                if not self.ready:
                    await connection.execute(text("SELECT 1"))
                else:
                    current = await connection.scalar(
                        text("SELECT version_num FROM alembic_version")
                    )
                    _check_not_behind(current)
        except Exception as error:
            self.outage.failed(error)
            return False
        self.outage.succeeded()
        return True

    async def close(self) -> None:
        """Commit what the writer holds, then close every pooled connection."""
        if self._probe is not None and not self._probe.done():
            self._probe.cancel()
            with suppress(asyncio.CancelledError):
                await self._probe
        try:
            await self.writer.close()
        finally:
            await self.engine.dispose()
            self.writer.dispose()


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration, pointing at the packaged migrations."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _run_upgrade(connection: Connection) -> Upgrade:
    before = schema.read(connection)
    if before.newer:  # Alembic would fail to find the revision: this version has nothing to add
        return Upgrade(before.current, before.current, newer=True)
    command.upgrade(alembic_config(connection), "head")
    return Upgrade(before.current, schema.read(connection).current)


def _run_downgrade(connection: Connection, revision: str) -> Upgrade:
    before = schema.read(connection)
    if before.newer:
        raise UnknownRevision(
            f"the database is at revision {before.current}, which this version does not know: "
            "downgrade it with the version that migrated it"
        )
    order = schema.known()
    if before.current is None or order.index(before.current) < order.index(revision):
        raise UnknownRevision(
            f"the database is at revision {before.current or 'none (no schema)'}, below "
            f"{revision}: nothing to undo (`gptactions db upgrade` goes up)"
        )
    command.downgrade(alembic_config(connection), revision)
    return Upgrade(before.current, schema.read(connection).current)


def _busy_pragma(seconds: float) -> str:
    return f"PRAGMA busy_timeout={round(seconds * 1000)}"


class _SqlitePragmas:
    """Sets each new SQLite connection up: waits for locks, WAL, durability, foreign keys.

    `synchronous=FULL` (the default) makes a commit durable against a power cut, not only a
    killed process; with group commit its fsync is paid once per batch, not once per request.
    """

    def __init__(self, synchronous: str, busy_timeout: float) -> None:
        if synchronous.lower() not in SQLITE_SYNCHRONOUS:
            raise ValueError(f"not a SQLite synchronous mode: {synchronous!r}")
        self.synchronous = synchronous.upper()
        self.busy_timeout = busy_timeout

    def __call__(self, dbapi_connection: Any, record: Any) -> None:
        _sqlite_pragmas(dbapi_connection, self.synchronous, self.busy_timeout)


SQLITE_SYNCHRONOUS = ("extra", "full", "normal", "off")


def _sqlite_pragmas(dbapi_connection: Any, synchronous: str, busy_timeout: float) -> None:
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
    cursor.execute(f"PRAGMA synchronous={synchronous}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _ensure_sqlite_directory(url: str) -> None:
    """The SQLite file's directory, and the file itself, new, readable by its owner only."""
    path = url.split(":///", 1)[-1].split("?", 1)[0]
    if path and path != ":memory:" and not path.startswith("file:"):
        file = Path(path).expanduser()
        file.parent.mkdir(parents=True, exist_ok=True)
        create_private(file)


def create_private(file: Path) -> None:
    """Create `file` empty with mode 0600 unless it exists (whose mode is the operator's).

    A database holds every conversation and the keys' hashes: not for other users of the
    machine, whatever the umask. SQLite gives its `-wal` and `-shm` files the database's mode.
    """
    with suppress(FileExistsError):
        os.close(os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


class SchemaBehind(Exception):
    """The database's schema is behind this version's: taken back under a running server."""


def _check_not_behind(current: str | None) -> None:
    """SchemaBehind when the revision `current` is behind this version's head (a revision it
    does not know is a newer version's, which serves it)."""
    revisions = schema.Revisions(current, schema.head())
    if revisions.behind:
        raise SchemaBehind(
            f"its schema is at revision {current or 'none'}, behind this version's "
            f"{revisions.head} (was `gptactions db downgrade` run?); `gptactions db upgrade` "
            "brings it back"
        )


def tls_options(url: str) -> tuple[str, ssl.SSLContext | None]:
    """The URL asyncpg is given, and the SSL context its libpq TLS files ask for, if any.

    asyncpg takes `ssl` (libpq's `sslmode` values) but not `sslrootcert`, `sslcert` or
    `sslkey`, which are what a managed PostgreSQL's URL carries: with any of them, the context
    holds them, verifying as libpq does (verify-full: the CA and the host name; verify-ca, or a
    root certificate with require: the CA; require alone: nothing), and they leave the URL.
    """
    parsed = make_url(url)
    query = dict(parsed.query)
    files = {name: str(query.pop(name)) for name in POSTGRES_TLS_FILES if name in query}
    if not files:
        return url, None
    mode = str(query.pop("ssl", "prefer"))
    context = ssl.create_default_context(cafile=files.get("sslrootcert"))
    context.check_hostname = mode == "verify-full"
    if mode not in ("verify-full", "verify-ca") and "sslrootcert" not in files:
        context.verify_mode = ssl.CERT_NONE
    if "sslcert" in files:
        context.load_cert_chain(files["sslcert"], files.get("sslkey"))
    return parsed.set(query=query).render_as_string(hide_password=False), context
