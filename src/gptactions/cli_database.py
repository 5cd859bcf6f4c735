"""The database as every command opens it: migrated first, and a clear error when it is down."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import click

if TYPE_CHECKING:  # imported when a command opens the database (SQLAlchemy, Alembic: slow)
    from gptactions.config import Settings
    from gptactions.store.db import Database

T = TypeVar("T")


class DatabaseUnreachable(click.ClickException):
    """The command needs the database, which does not answer."""


def unreachable(location: str, error: BaseException) -> DatabaseUnreachable:
    """The one-line error a command ends with when its database is out of reach."""
    from gptactions.store import outage
    from gptactions.store.outage import DatabaseUnavailable

    cause = error.cause if isinstance(error, DatabaseUnavailable) else error
    return DatabaseUnreachable(f"the database {location} is unreachable: {outage.short(cause)}")


async def with_database(settings: Settings, work: Callable[[Database], Awaitable[T]]) -> T:
    """Run `work` on the migrated database, closed after; an outage is `DatabaseUnreachable`."""
    from gptactions.store import outage
    from gptactions.store.db import Database
    from gptactions.store.outage import DatabaseUnavailable

    database = Database.from_settings(settings)
    try:
        await database.upgrade()
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
