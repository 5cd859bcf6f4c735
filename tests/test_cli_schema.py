"""The schema from the command line: GPTACTIONS_AUTO_MIGRATE=false leaves migrating to `db upgrade`,
a database a newer version migrated is used with a warning (by the CLI and by an older server),
`db downgrade` undoes migrations, and no command creates a database without a word (in
production, at all), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from gptactions.store import schema
from gptactions.store.db import Database
from tests.conftest import ADMIN_KEY
from tests.serving import free_port, serve
from tests.store.revisions import migrate_to
from tests.test_cli import gptactions
from tests.test_cli import never_serving as never_serving  # `serve` stops before serving here

HEAD = schema.head()
BEFORE_HEAD = schema.known()[-2]


def _revision(url: str, set_to: str | None = None) -> str:
    """The database's revision, after setting it to `set_to` (as a newer version's migration)."""

    async def read() -> str:
        database = Database(url)
        try:
            async with database.engine.begin() as connection:
                if set_to is not None:
                    await connection.execute(
                        text("UPDATE alembic_version SET version_num = :v"), {"v": set_to}
                    )
                found = await connection.scalar(text("SELECT version_num FROM alembic_version"))
                return str(found)
        finally:
            await database.close()

    return asyncio.run(read())


def test_with_auto_migrate_false_only_db_upgrade_migrates(
    isolated: Path, database_url: str
) -> None:
    """`keys list` migrated a database at 0005 to the head with GPTACTIONS_AUTO_MIGRATE=false;
    every command, `serve` too, now stops with one line naming both revisions."""
    location = asyncio.run(migrate_to(database_url, "0005"))
    off = {"GPTACTIONS_DATABASE_URL": database_url, "GPTACTIONS_AUTO_MIGRATE": "false"}
    for command in (
        ("keys", "list"),
        ("keys", "create", "--name", "ops"),
        ("users", "list"),
        ("logs", "purge", "--older-than", "30d"),
        ("serve", "--port", str(free_port())),
    ):
        stopped = gptactions(*command, cwd=isolated, env=off)
        assert stopped.returncode == 1, command
        assert stopped.stderr.splitlines()[-1] == (
            f"Error: the database {location} is at revision 0005; this version needs {HEAD}: "
            "run `gptactions db upgrade` (GPTACTIONS_AUTO_MIGRATE=false)"
        )
        assert "Traceback" not in stopped.stderr and "gpta_" not in stopped.stdout
    assert _revision(database_url) == "0005"

    upgraded = gptactions("db", "upgrade", cwd=isolated, env=off)
    assert upgraded.stdout.strip() == (
        f"upgraded the database at {location} from revision 0005 to {HEAD}"
    )
    assert gptactions("keys", "list", cwd=isolated, env=off).returncode == 0


def test_by_default_a_command_migrates_and_says_so(isolated: Path, database_url: str) -> None:
    location = asyncio.run(migrate_to(database_url, "0005"))
    listed = gptactions("keys", "list", cwd=isolated, env={"GPTACTIONS_DATABASE_URL": database_url})
    assert listed.returncode == 0, listed.stderr
    assert listed.stderr.strip() == (
        f"upgraded the database at {location} from revision 0005 to {HEAD}"
    )
    assert _revision(database_url) == HEAD


def test_a_database_a_newer_version_migrated_is_used_with_a_warning(
    isolated: Path, database_url: str
) -> None:
    """A replica of the old version restarting after the new one migrated (a rolling upgrade, a
    rollback): a 109-line traceback from every command; now a warning naming both revisions."""
    location = asyncio.run(migrate_to(database_url, "head"))
    _revision(database_url, set_to="0099")
    env = {"GPTACTIONS_DATABASE_URL": database_url}
    warning = (
        f"Warning: the database {location} is at revision 0099, newer than this version's "
        f"{HEAD} (a newer gptactions migrated it): using it as it is, since migrations only add"
    )
    created = gptactions("keys", "create", "--name", "ops", cwd=isolated, env=env)
    assert created.returncode == 0, created.stderr
    assert created.stderr.splitlines()[0] == warning
    assert created.stdout.strip().startswith("gpta_")
    listed = gptactions("keys", "list", cwd=isolated, env=env)
    assert listed.returncode == 0 and "ops" in listed.stdout
    assert listed.stderr.strip() == warning

    # `db upgrade` has nothing to add: it says so, and exits 0 (a deploy script goes on).
    upgrade = gptactions("db", "upgrade", cwd=isolated, env=env)
    assert upgrade.returncode == 0, upgrade.stderr
    assert upgrade.stdout.strip() == f"{warning.removeprefix('Warning: ')}; nothing to do"
    # Only the version that migrated it can undo its migrations.
    downgrade = gptactions("db", "downgrade", BEFORE_HEAD, "--yes", cwd=isolated, env=env)
    assert downgrade.returncode == 1
    assert downgrade.stderr.strip() == (
        "Error: the database is at revision 0099, which this version does not know: downgrade "
        "it with the version that migrated it"
    )
    for ran in (created, listed, upgrade, downgrade):
        assert "Traceback" not in ran.stderr
    assert _revision(database_url) == "0099"


def test_an_older_server_serves_a_database_a_newer_one_migrated(
    tmp_path: Path, database_url: str
) -> None:
    location = asyncio.run(migrate_to(database_url, "head"))
    _revision(database_url, set_to="0099")
    env = {
        "GPTACTIONS_DATABASE_URL": database_url,
        # No model to load: the log's routes do not need one.
        "GPTACTIONS_BACKENDS": json.dumps([{"name": "up", "url": "http://127.0.0.1:9/v1"}]),
        "GPTACTIONS_FALLBACK": "none",
    }
    with serve(tmp_path, key=ADMIN_KEY, env=env) as server:
        logs = httpx.get(
            f"{server.url}/api/v1/gpt/logs", headers={"Authorization": f"Bearer {ADMIN_KEY}"}
        )
        assert logs.status_code == 200, logs.text
        log = server.log.read_text(errors="replace")
    assert "Traceback" not in log
    assert f"the database {location} is at revision 0099, newer than this version's {HEAD}" in log
    assert _revision(database_url) == "0099"


def test_db_downgrade_undoes_migrations_once_confirmed(isolated: Path, database_url: str) -> None:
    env = {"GPTACTIONS_DATABASE_URL": database_url}
    location = asyncio.run(migrate_to(database_url, "head"))

    declined = gptactions("db", "downgrade", BEFORE_HEAD, cwd=isolated, env=env, stdin="n\n")
    assert declined.returncode == 1 and "Aborted" in declined.stderr
    assert _revision(database_url) == HEAD
    done = gptactions("db", "downgrade", BEFORE_HEAD, cwd=isolated, env=env, stdin="y\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith(
        f"downgraded the database at {location} from revision {HEAD} to {BEFORE_HEAD}"
    )
    # The next command of this version would migrate it back: said, unless it would not.
    assert "migrates it back at its next command" in done.stderr
    again = gptactions("db", "downgrade", BEFORE_HEAD, "--yes", cwd=isolated, env=env)
    assert again.stdout.strip() == (
        f"the database at {location} is already at revision {BEFORE_HEAD}; nothing to do"
    )
    upward = gptactions("db", "downgrade", HEAD, "--yes", cwd=isolated, env=env)
    assert upward.returncode == 1
    assert f"is at revision {BEFORE_HEAD}, below {HEAD}" in upward.stderr
    unknown = gptactions("db", "downgrade", "0099", "--yes", cwd=isolated, env=env)
    assert unknown.returncode == 1
    assert unknown.stderr.strip() == (
        f"Error: this version has no revision '0099' (it has 0001 to {HEAD})"
    )
    # Every migration's own downgrade, down to the first, and back up.
    first = gptactions("db", "downgrade", "0001", "--yes", cwd=isolated, env=env)
    assert first.returncode == 0, first.stderr
    assert _revision(database_url) == "0001"
    upgraded = gptactions("db", "upgrade", cwd=isolated, env=env)
    assert upgraded.stdout.strip() == (
        f"upgraded the database at {location} from revision 0001 to {HEAD}"
    )


def test_a_command_that_creates_the_database_says_where(isolated: Path) -> None:
    """In an empty directory, `keys create` made ./gptactions.db and printed a key no server
    knows, without a word."""
    default = {"GPTACTIONS_DATABASE_URL": ""}  # the default, ./gptactions.db
    path = (isolated / "gptactions.db").resolve()
    created = gptactions("keys", "create", "--name", "ops", cwd=isolated, env=default)
    assert created.returncode == 0, created.stderr
    assert created.stderr.splitlines()[0] == (
        f"Warning: created a new, empty database at {path} (schema revision {HEAD}): if the "
        "server's is elsewhere, set GPTACTIONS_DATABASE_URL as the server has it, or run this "
        "where it runs"
    )
    listed = gptactions("keys", "list", cwd=isolated, env=default)
    assert listed.returncode == 0 and listed.stderr == ""


@pytest.mark.parametrize("setting", ["GPTACTIONS_ENVIRONMENT", "GPTACTIONS_AUTO_MIGRATE"])
def test_in_production_or_without_auto_migrate_no_command_creates_a_database(
    isolated: Path, setting: str
) -> None:
    value = "production" if setting == "GPTACTIONS_ENVIRONMENT" else "false"
    env = {"GPTACTIONS_DATABASE_URL": "", setting: value}
    path = (isolated / "gptactions.db").resolve()
    why = (
        "with GPTACTIONS_ENVIRONMENT=production only `gptactions db upgrade` or `gptactions "
        "serve` creates it (is GPTACTIONS_DATABASE_URL the server's?)"
        if value == "production"
        else f"this version needs revision {HEAD}: run `gptactions db upgrade` "
        "(GPTACTIONS_AUTO_MIGRATE=false)"
    )
    separator = ":" if value == "production" else ";"
    for command in (("keys", "create", "--name", "ops"), ("users", "list"), ("chat",)):
        refused = gptactions(*command, cwd=isolated, env=env)
        assert refused.returncode == 1, command
        assert refused.stderr.splitlines()[-1] == (
            f"Error: there is no database at {path}{separator} {why}"
        )
        assert "gpta_" not in refused.stdout
        assert list(isolated.iterdir()) == [], "it created the database all the same"
    # `db upgrade` creates it, as it is asked to; then the commands work on it.
    assert gptactions("db", "upgrade", cwd=isolated, env=env).returncode == 0
    created = gptactions("keys", "create", "--name", "ops", cwd=isolated, env=env)
    assert created.returncode == 0 and "Warning" not in created.stderr


@pytest.mark.postgres
def test_an_empty_postgresql_database_gets_its_schema_with_a_word(
    isolated: Path, postgres_url: str
) -> None:
    production = {"GPTACTIONS_DATABASE_URL": postgres_url, "GPTACTIONS_ENVIRONMENT": "production"}
    refused = gptactions("keys", "list", cwd=isolated, env=production)
    assert refused.returncode == 1
    location = refused.stderr.split("Error: the database ", 1)[1].split(" ", 1)[0]
    assert refused.stderr.strip() == (
        f"Error: the database {location} has no schema yet: with GPTACTIONS_ENVIRONMENT="
        "production only `gptactions db upgrade` or `gptactions serve` creates it (is "
        "GPTACTIONS_DATABASE_URL the server's?)"
    )
    created = gptactions(
        "keys", "list", cwd=isolated, env={"GPTACTIONS_DATABASE_URL": postgres_url}
    )
    assert created.returncode == 0
    assert created.stderr.startswith(f"Warning: created a new, empty database at {location} ")
    assert _revision(postgres_url) == HEAD


def test_db_backup_names_a_database_that_is_not_there(isolated: Path) -> None:
    missing = isolated / "elsewhere" / "server.db"
    result = gptactions(
        "db",
        "backup",
        str(isolated / "backup.db"),
        cwd=isolated,
        env={"GPTACTIONS_DATABASE_URL": f"sqlite:///{missing}"},
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"Error: there is no database at {missing.resolve()} (is GPTACTIONS_DATABASE_URL the "
        "server's?)"
    )
    assert list(isolated.iterdir()) == []


def test_the_schema_commands_and_rule_are_documented() -> None:
    root = Path(__file__).parents[1]
    readme = (root / "README.md").read_text()
    deploy = (root / "docs" / "deploy.md").read_text()
    assert "gptactions db downgrade REVISION" in readme
    assert "gptactions db downgrade" in deploy.split("## Upgrading", 1)[1]
    from gptactions.store import migrations

    assert "a migration only adds" in (migrations.__doc__ or "")
