"""Migrations: from an empty database, twice, matching the models, and one replica at a time."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from alembic import command as alembic_command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import ProgrammingError

from gptactions.services.keys import KeyService
from gptactions.services.oauth import AuthorizationRequest, ClientCredentials, OAuthService
from gptactions.services.users import UserService
from gptactions.store.db import _PG_MIGRATION_LOCK, Database, alembic_config
from gptactions.store.models import Base
from gptactions.store.search import FTS_TABLE, PG_INDEX, SCHEMA_NAMES

CALLBACK = "https://chat.openai.com/aip/g-0123456789abcdef/oauth/callback"
TABLES = {
    "api_keys",
    "conversations",
    "interactions",
    "key_versions",
    "users",
    "oauth_clients",
    "oauth_codes",
    "oauth_tokens",
    "user_identities",
    "oidc_logins",
}


def _schema(connection: Connection) -> dict[str, Any]:
    inspector = inspect(connection)
    return {
        "tables": set(inspector.get_table_names()),
        "indexes": {
            table: {index["name"] for index in inspector.get_indexes(table)}
            for table in TABLES & set(inspector.get_table_names())
        },
    }


def _modelled(name: str | None, _type: str, _parents: Any) -> bool:
    """Whether the models describe this table or index (search's are SQL of its own)."""
    return name not in SCHEMA_NAMES


def _differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "include_name": _modelled}
    )
    return list(compare_metadata(context, Base.metadata))


def _head() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def _versions(database: Database) -> list[str]:
    async with database.engine.connect() as connection:
        result = await connection.execute(text("SELECT version_num FROM alembic_version"))
        return [row[0] for row in result]


@pytest.fixture
async def database(database_url: str) -> Any:
    """A Database on the parametrized URL, not yet migrated."""
    database = Database(database_url)
    yield database
    await database.close()


async def test_upgrade_from_empty_creates_the_models_tables_and_indexes(
    database: Database,
) -> None:
    async with database.engine.connect() as connection:
        before = await connection.run_sync(_schema)
    assert before["tables"] == set()

    await database.upgrade()

    async with database.engine.connect() as connection:
        after = await connection.run_sync(_schema)
    fts_tables = {name for name in SCHEMA_NAMES if name.startswith(FTS_TABLE)}
    if database.is_sqlite:
        assert after["tables"] == TABLES | {"alembic_version"} | fts_tables
    else:
        assert after["tables"] == TABLES | {"alembic_version"}
        assert PG_INDEX in after["indexes"]["interactions"]
    for table in Base.metadata.sorted_tables:
        expected = {index.name for index in table.indexes}
        assert expected <= after["indexes"][table.name], table.name
    assert await _versions(database) == [_head()]


async def test_migrated_schema_matches_the_models(database: Database) -> None:
    await database.upgrade()
    async with database.engine.connect() as connection:
        differences = await connection.run_sync(_differences)
    assert differences == []


async def test_upgrade_twice_is_a_no_op_that_keeps_the_data(database: Database) -> None:
    await database.upgrade()
    created = await KeyService(database).create("kept")

    await database.upgrade()

    assert await _versions(database) == [_head()]
    assert [key.id for key in await KeyService(database).list()] == [created.info.id]
    async with database.engine.connect() as connection:
        assert await connection.run_sync(_differences) == []


async def test_undoing_0008_keeps_the_search_triggers(database: Database) -> None:
    """0008 alters `interactions` in place: a rebuild would drop 0007's triggers on SQLite."""
    await database.upgrade()

    def downgrade_to_0007(connection: Connection) -> list[str]:
        alembic_command.downgrade(alembic_config(connection), "0007")
        if connection.dialect.name != "sqlite":
            return []
        rows = connection.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger'"))
        return sorted(row[0] for row in rows)

    async with database.engine.begin() as connection:
        triggers = await connection.run_sync(downgrade_to_0007)
    assert await _versions(database) == ["0007"]
    if database.is_sqlite:
        assert triggers == [f"{FTS_TABLE}_{event}" for event in ("delete", "insert", "update")]
    await database.upgrade()
    async with database.engine.connect() as connection:
        assert await connection.run_sync(_differences) == []


async def test_tokens_issued_before_0010_keep_working(database: Database) -> None:
    """0010 records the code a token pair descends from; pairs from before have none, and go on
    working (they are the rows a downgrade and upgrade again keep)."""
    await database.upgrade()
    oauth = OAuthService(database)
    user = await UserService(database).create("alice", "password-1234")
    client = await oauth.create_client("GPT", (CALLBACK,))
    request = AuthorizationRequest("code", client.info.id, CALLBACK, state="s")
    ticket = await oauth.open_consent(await oauth.validate(request), user.id)
    code = parse_qs(urlsplit(await oauth.decide(ticket, allow=True)).query)["code"][0]
    credentials = ClientCredentials(client.info.id, client.secret)
    issued = await oauth.exchange_code(
        credentials, code=code, redirect_uri=CALLBACK, code_verifier=None
    )

    async with database.engine.begin() as connection:
        await connection.run_sync(
            lambda sync: alembic_command.downgrade(alembic_config(sync), "0009")
        )
    await database.upgrade()

    async with database.engine.connect() as connection:
        kept = await connection.scalar(text("SELECT count(*) FROM oauth_tokens"))
        assert kept == 1
        assert await connection.run_sync(_differences) == []
    assert (await oauth.authenticate(issued.access_token)) is not None
    refreshed = await oauth.refresh(credentials, refresh_token=issued.refresh_token, scope=None)
    assert (await oauth.authenticate(refreshed.access_token)) is not None


async def test_0011_moves_the_signed_in_users_data_to_their_tenant(database: Database) -> None:
    """Before 0011, OAuth users' rows were in `default`, where any key naming them reached them:
    the rows under a registered user's name move to `@users`; the others stay."""
    await database.upgrade()
    await UserService(database).create("alice", "password-1234")
    async with database.engine.begin() as connection:
        await connection.run_sync(
            lambda sync: alembic_command.downgrade(alembic_config(sync), "0010")
        )
        for conversation, user in (("c-alice", "alice"), ("c-bob", "bob")):
            await connection.execute(
                text(
                    "INSERT INTO conversations (id, tenant, user_id, created_at, updated_at) "
                    "VALUES (:id, 'default', :user, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                ),
                {"id": conversation, "user": user},
            )
    await database.upgrade()
    async with database.engine.connect() as connection:
        rows = await connection.execute(text("SELECT id, tenant FROM conversations ORDER BY id"))
        assert [tuple(row) for row in rows] == [("c-alice", "@users"), ("c-bob", "default")]


async def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path: Path) -> None:
    path = tmp_path / "wal.db"
    database = Database(f"sqlite:///{path}")
    try:
        await database.upgrade()
        async with database.engine.connect() as connection:
            mode = (await connection.exec_driver_sql("PRAGMA journal_mode")).scalar()
            foreign_keys = (await connection.exec_driver_sql("PRAGMA foreign_keys")).scalar()
        assert mode == "wal"
        assert foreign_keys == 1
    finally:
        await database.close()
    # WAL is a property of the file: a plain connection, without our pragmas, sees it too.
    with sqlite3.connect(path) as plain:
        assert plain.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_replicas_starting_together_migrate_once(database_url: str) -> None:
    replicas = [Database(database_url) for _ in range(3)]
    try:
        await asyncio.gather(*(replica.upgrade() for replica in replicas))
        assert await _versions(replicas[0]) == [_head()]
        async with replicas[1].engine.connect() as connection:
            assert await connection.run_sync(_differences) == []
    finally:
        for replica in replicas:
            await replica.close()


@pytest.mark.postgres
async def test_upgrade_waits_for_the_replica_holding_the_migration_lock(
    postgres_url: str,
) -> None:
    holder, waiter = Database(postgres_url), Database(postgres_url)
    try:
        async with holder.engine.connect() as connection:
            await connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
            upgrade = asyncio.create_task(waiter.upgrade())
            await asyncio.sleep(1.0)
            assert not upgrade.done(), "upgrade ran while another replica held the lock"
            async with waiter.engine.connect() as probe:
                tables = await probe.run_sync(lambda c: inspect(c).get_table_names())
            assert tables == []
            await connection.execute(
                text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_MIGRATION_LOCK}
            )
            await asyncio.wait_for(upgrade, timeout=30)
        assert await _versions(waiter) == [_head()]
    finally:
        await holder.close()
        await waiter.close()


@pytest.mark.postgres
async def test_a_failed_migration_reports_its_error_and_frees_the_lock(postgres_url: str) -> None:
    database, other = Database(postgres_url), Database(postgres_url)
    try:
        async with database.engine.begin() as connection:
            await connection.execute(text("CREATE TABLE interactions (x integer)"))
        with pytest.raises(ProgrammingError, match="already exists"):
            await database.upgrade()
        # `database` still holds its pooled connection: the lock must be free all the same.
        async with other.engine.connect() as connection:
            taken = await connection.scalar(
                text("SELECT pg_try_advisory_lock(:k)"), {"k": _PG_MIGRATION_LOCK}
            )
        assert taken is True
    finally:
        await database.close()
        await other.close()


def test_sqlite_worker_processes_starting_together_migrate_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'workers.db'}"
    script = (
        "import asyncio, sys\n"
        "from gptactions.store.db import Database\n"
        "async def main():\n"
        "    database = Database(sys.argv[1])\n"
        "    await database.upgrade()\n"
        "    await database.close()\n"
        "asyncio.run(main())\n"
    )
    workers = [
        subprocess.Popen([sys.executable, "-c", script, url], stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    errors = [worker.communicate(timeout=120)[1] for worker in workers]
    assert [worker.returncode for worker in workers] == [0] * 4, errors
    with sqlite3.connect(tmp_path / "workers.db") as plain:
        versions = plain.execute("SELECT version_num FROM alembic_version").fetchall()
    assert versions == [(_head(),)]
