"""The database as every command opens it: migrated first when GPTACTIONS_AUTO_MIGRATE allows
(checked otherwise), never created without a word, and a clear error when it is down."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import click

if TYPE_CHECKING:  # imported when a command opens the database (SQLAlchemy, Alembic: slow)
    from gptactions.config import Settings
    from gptactions.store.db import Database

T = TypeVar("T")
log = logging.getLogger(__name__)

_PRODUCTION_CREATES_NONE = (
    "with GPTACTIONS_ENVIRONMENT=production only `gptactions db upgrade` or `gptactions serve` "
    "creates it (is GPTACTIONS_DATABASE_URL the server's?)"
)


class DatabaseUnreachable(click.ClickException):
    """The command needs the database, which does not answer."""


def unreachable(location: str, error: BaseException) -> DatabaseUnreachable:
    """The one-line error a command ends with when its database is out of reach."""
    from gptactions.store import outage
    from gptactions.store.outage import DatabaseUnavailable

    cause = error.cause if isinstance(error, DatabaseUnavailable) else error
    return DatabaseUnreachable(f"the database {location} is unreachable: {outage.short(cause)}")


def sqlite_file(settings: Settings) -> Path | None:
    """The SQLite file of the settings, absolute; None for PostgreSQL or a database in memory."""
    from sqlalchemy import make_url

    from gptactions.store.writer import is_sqlite_file

    url = make_url(settings.database_url)
    if not url.drivername.startswith("sqlite") or not is_sqlite_file(url.database):
        return None
    return Path(str(url.database)).expanduser().resolve()


async def with_database(
    settings: Settings, work: Callable[[Database], Awaitable[T]], *, serving: bool = False
) -> T:
    """Run `work` on the database, closed after. An outage is `DatabaseUnreachable`.

    The schema is migrated first when GPTACTIONS_AUTO_MIGRATE allows, else a schema behind ends
    the command; a database a newer version migrated is used, with a warning. A command that
    creates the database says so, or, in production, refuses to: a key created in the wrong
    directory would work on no server. `serving` (the server's start) may create it, and logs
    what it did instead.
    """
    from gptactions.store import outage
    from gptactions.store.db import Database
    from gptactions.store.outage import DatabaseUnavailable

    missing = sqlite_file(settings)
    if missing is not None and missing.exists():
        missing = None
    if missing is not None:  # stopped here, before opening it creates the file
        _may_create(settings, f"there is no database at {missing}", serving=serving)
    database = Database.from_settings(settings)
    try:
        await _migrate(database, settings, serving=serving, new=missing)
        return await work(database)
    except BrokenPipeError:
        # Standard output's reader went away (`| head`), not the database: click exits quietly.
        raise
    except Exception as error:
        if isinstance(error, DatabaseUnavailable) or outage.is_unavailable(error):
            raise unreachable(database.location, error) from None
        raise
    finally:
        await database.close()


def _may_create(settings: Settings, problem: str, *, serving: bool) -> None:
    """Stop a command that would create a database where it must not: any without
    GPTACTIONS_AUTO_MIGRATE, any but the server's start in production."""
    from gptactions.store import schema

    if settings.environment == "production" and not serving:
        raise click.ClickException(f"{problem}: {_PRODUCTION_CREATES_NONE}")
    if not settings.auto_migrate:
        raise click.ClickException(
            f"{problem}; this version needs revision {schema.head()}: run `gptactions db "
            "upgrade` (GPTACTIONS_AUTO_MIGRATE=false)"
        )


async def _migrate(
    database: Database, settings: Settings, *, serving: bool, new: Path | None
) -> None:
    """Bring the schema to this version's, or check that it is (GPTACTIONS_AUTO_MIGRATE=false)."""
    from gptactions.store import schema

    location = database.location
    revisions = await database.revisions()
    if revisions.newer:
        _warn(schema.newer(location, revisions), serving)
        return
    if not revisions.behind:
        if serving and settings.auto_migrate:  # the servers say it at DEBUG only (`Runtime`)
            log.info("%s", schema.upgraded(location, revisions.current, revisions.current))
        return
    if not settings.auto_migrate:
        raise click.ClickException(
            f"{schema.needs_upgrade(location, revisions)} (GPTACTIONS_AUTO_MIGRATE=false)"
        )
    if revisions.current is None:
        _may_create(settings, f"the database {location} has no schema yet", serving=serving)
    done = await database.upgrade()
    if done.newer:  # another version migrated it meanwhile
        _warn(schema.newer(location, schema.Revisions(done.before, schema.head())), serving)
    elif serving:
        log.info("%s", schema.upgraded(location, done.before, done.after))
    elif done.before is None:
        where = new or location
        click.echo(
            f"Warning: created a new, empty database at {where} (schema revision {done.after}): "
            "if the server's is elsewhere, set GPTACTIONS_DATABASE_URL as the server has it, "
            "or run this where it runs",
            err=True,
        )
    else:
        click.echo(schema.upgraded(location, done.before, done.after), err=True)


def _warn(message: str, serving: bool) -> None:
    if serving:  # every server warns of it as it starts (`Runtime`): said once per process
        log.debug("%s", message)
    else:
        click.echo(f"Warning: {message}", err=True)
