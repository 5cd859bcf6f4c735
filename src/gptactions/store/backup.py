"""Backups: SQLite's online backup API (consistent while the server writes); for PostgreSQL,
the `pg_dump` command to run."""

from __future__ import annotations

import shlex
import sqlite3
from pathlib import Path

from sqlalchemy import make_url

from gptactions.store.db import create_private


def backup_sqlite(source: str, target: Path) -> None:
    """Copy the SQLite database at `source` to `target`, page by page, while others use it."""
    if target.exists():
        raise FileExistsError(f"{target} exists; name a new file")
    target.parent.mkdir(parents=True, exist_ok=True)
    create_private(target)  # every conversation and the keys' hashes: the owner's only
    with (
        sqlite3.connect(f"file:{source}?mode=ro", uri=True) as origin,
        sqlite3.connect(target) as copy,
    ):
        origin.backup(copy)
    origin.close()
    copy.close()


def pg_dump_command(url: str, target: Path) -> str:
    """The `pg_dump` line that backs up the PostgreSQL database at `url` to `target`."""
    parsed = make_url(url)
    parts = ["pg_dump", "--format=custom", f"--file={target}"]
    if parsed.host:
        parts.append(f"--host={parsed.host}")
    if parsed.port:
        parts.append(f"--port={parsed.port}")
    if parsed.username:
        parts.append(f"--username={parsed.username}")
    # libpq's own connection parameters in the URL (sslmode, sslrootcert...) go to pg_dump as a
    # connection string, or a backup would connect with other TLS settings than the server.
    # asyncpg spells libpq's `sslmode` as `ssl`.
    options = {
        ("sslmode" if name == "ssl" else name): value for name, value in parsed.query.items()
    }
    if options:
        pairs = [f"dbname={_conninfo(parsed.database or '')}"]
        for name, value in options.items():
            for item in (value,) if isinstance(value, str) else value:
                pairs.append(f"{name}={_conninfo(item)}")
        parts.append(f"--dbname={' '.join(pairs)}")
    else:
        parts.append(parsed.database or "")
    line = shlex.join(parts)
    return f"PGPASSWORD=... {line}" if parsed.password else line


def _conninfo(value: str) -> str:
    """`value` quoted as a libpq connection string's value."""
    if value and not any(c in value for c in " '\\"):
        return value
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"
