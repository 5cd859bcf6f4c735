"""The schema's revision: the one this code's migrations lead to, the database's, and what to
say about the difference (the same words from the command line and from the server's log).

Migrations only add (`store/migrations/__init__.py`), so a database a newer version migrated
still serves this one: it is used with a warning, never upgraded or refused.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

MIGRATIONS = Path(__file__).parent / "migrations"


@functools.cache
def _scripts() -> ScriptDirectory:
    return ScriptDirectory(str(MIGRATIONS))


def head() -> str:
    """The revision this version's migrations lead to."""
    found = _scripts().get_current_head()
    assert found is not None, "the migrations have no head"
    return found


@functools.cache
def known() -> tuple[str, ...]:
    """Every revision this version has a migration for, oldest first."""
    return tuple(reversed([script.revision for script in _scripts().walk_revisions()]))


@dataclass(frozen=True)
class Revisions:
    """The database's schema revision (None: no schema yet) beside this version's head."""

    current: str | None
    head: str

    @property
    def newer(self) -> bool:
        """Whether a version newer than this one migrated the database (a revision unknown)."""
        return self.current is not None and self.current not in known()

    @property
    def behind(self) -> bool:
        """Whether this version needs migrations the database lacks (or has no schema)."""
        return not self.newer and self.current != self.head


class UnknownRevision(ValueError):
    """A downgrade's target this version has no migration for, or cannot reach from here."""


def require_known(revision: str) -> None:
    """Raise `UnknownRevision` unless this version has a migration for `revision`."""
    if revision not in known():
        raise UnknownRevision(
            f"this version has no revision {revision!r} (it has {known()[0]} to {head()})"
        )


def read(connection: Connection) -> Revisions:
    """The revisions, read on `connection` (through `run_sync`)."""
    return Revisions(MigrationContext.configure(connection).get_current_revision(), head())


def needs_upgrade(location: str, revisions: Revisions) -> str:
    """The one line that stops a command (or holds the server back) when the schema is behind."""
    state = (
        "has no schema yet" if revisions.current is None else f"is at revision {revisions.current}"
    )
    return (
        f"the database {location} {state}; this version needs {revisions.head}: "
        "run `gptactions db upgrade`"
    )


def newer(location: str, revisions: Revisions) -> str:
    """The warning for a database a newer version migrated, naming both revisions."""
    return (
        f"the database {location} is at revision {revisions.current}, newer than this version's "
        f"{revisions.head} (a newer gptactions migrated it): using it as it is, since migrations "
        "only add"
    )


def upgraded(location: str, before: str | None, after: str | None) -> str:
    """What an upgrade did, in one line."""
    if before is None:
        return f"created the database at {location} (schema revision {after})"
    if before != after:
        return f"upgraded the database at {location} from revision {before} to {after}"
    return f"the database at {location} is already at revision {after}; nothing to do"
