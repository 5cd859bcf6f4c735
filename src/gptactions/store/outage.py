"""A database that does not answer: how to tell, what callers get, and a quiet log of it.

An outage is reported once when it begins, then summarised at most every `SUMMARY_EVERY`
seconds while it lasts, and once more when the database answers again: a 20 s outage under load
is a handful of lines, not one traceback per request.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from sqlalchemy import exc as sa

log = logging.getLogger(__name__)

# Seconds a client is told to wait before retrying.
RETRY_AFTER = 5
# Seconds between two summaries of an outage.
SUMMARY_EVERY = 10.0
# Bounds on reaching PostgreSQL: connecting, one statement, waiting for a pooled connection.
CONNECT_TIMEOUT = 5.0
STATEMENT_TIMEOUT = 30.0
POOL_TIMEOUT = 5.0
# Seconds a pooled PostgreSQL connection has to answer its check when it is taken from the pool:
# a round trip, which a database that hangs would otherwise hold for the statement timeout.
PING_TIMEOUT = 2.0
# Seconds /healthz (and /status) wait for the database's answer before saying it is unreachable.
PROBE_TIMEOUT = 2.0


def postgres_options() -> dict[str, object]:
    """The engine options that bound every wait on PostgreSQL (asyncpg)."""
    return {
        "pool_timeout": POOL_TIMEOUT,
        "connect_args": {"timeout": CONNECT_TIMEOUT, "command_timeout": STATEMENT_TIMEOUT},
    }


def ping_on_checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    """The pool's check of a PostgreSQL connection it hands out, bounded by `PING_TIMEOUT`.

    A connection that fails it is closed at once (the database may not answer a polite close)
    and the pool replaced, as SQLAlchemy's pre-ping does; the caller gets a new connection.
    """
    try:
        # The simple protocol (no arguments): one round trip, no prepared statement (so
        # PgBouncer in transaction mode is fine with it).
        dbapi_connection.run_async(lambda driver: driver.execute("SELECT 1", timeout=PING_TIMEOUT))
    except Exception as error:  # timed out, cut, or refused: the connection is no use
        dbapi_connection.run_async(_terminate)
        raise sa.InvalidatePoolError(f"the connection's check failed: {short(error)}") from error


async def _terminate(driver: Any) -> None:
    driver.terminate()


class DatabaseUnavailable(Exception):
    """The database cannot be reached (down, refusing, too slow, locked, read-only or full)."""

    def __init__(self, location: str, cause: BaseException) -> None:
        super().__init__(f"the database is unavailable: {short(cause)}")
        self.location = location
        self.cause = cause
        self.retry_after = RETRY_AFTER


def is_unavailable(error: BaseException) -> bool:
    """Whether `error` says the database is out of reach rather than the query is wrong."""
    if isinstance(error, sa.DBAPIError):
        return (
            error.connection_invalidated
            or isinstance(error, sa.OperationalError | sa.InterfaceError)
            or _refused_connection(error.orig)
        )
    # Pool exhausted; refused or timed-out connections (asyncpg raises these bare).
    return isinstance(error, sa.TimeoutError | OSError)


_REFUSED_CONNECTION = ("08", "28", "3D", "53", "57P", "42P01", "42703")
"""PostgreSQL's SQLSTATEs of a database this server cannot use: a connection it would not open
(connection exceptions, a role or password it does not know, a database it does not have, too
many connections, a server shutting down or starting), and a schema that is not this version's
(a table or column missing: `gptactions db downgrade` run under a running server), as SQLite's
"no such table" is an OperationalError. asyncpg's errors reach SQLAlchemy as a bare DBAPIError."""


def _refused_connection(cause: BaseException | None) -> bool:
    state = getattr(cause, "sqlstate", None)
    return isinstance(state, str) and state.startswith(_REFUSED_CONNECTION)


def short(error: BaseException) -> str:
    """The error's first line, without SQLAlchemy's background link."""
    cause = error.orig if isinstance(error, sa.DBAPIError) and error.orig else error
    if isinstance(cause, TimeoutError) and not str(cause).strip():
        return "no answer in time (TimeoutError)"
    text = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
    return text[:200]


class OutageLog:
    """Logs an outage's start, a summary while it lasts, and its end."""

    def __init__(self, location: str) -> None:
        self.location = location
        self.down_since: float | None = None
        self.last_error = ""
        self._failures = 0
        self._summarised = 0.0

    @property
    def down(self) -> bool:
        """Whether the last attempt failed."""
        return self.down_since is not None

    def failed(self, error: BaseException) -> None:
        """Count a failure; log it if it starts an outage, or summarise now and then."""
        now = time.monotonic()
        self.last_error = short(error)
        self._failures += 1
        if self.down_since is None:
            self.down_since = self._summarised = now
            log.error("database %s unreachable: %s", self.location, self.last_error)
        elif now - self._summarised >= SUMMARY_EVERY:
            log.error(
                "database %s still unreachable after %.0f s (%d failed attempts): %s",
                self.location,
                now - self.down_since,
                self._failures,
                self.last_error,
            )
            self._summarised = now

    def succeeded(self) -> None:
        """The database answered: log the end of an outage."""
        if self.down_since is not None:
            log.warning(
                "database %s is back after %.0f s (%d failed attempts)",
                self.location,
                time.monotonic() - self.down_since,
                self._failures,
            )
            self.down_since = None
            self._failures = 0
