"""The schema's revision as the server meets it: behind with GPTACTIONS_AUTO_MIGRATE=false (503
naming both revisions until `db upgrade`, said once in the log), and the rule that lets an older
version serve a newer schema: migrations only add."""

from __future__ import annotations

import ast
import asyncio
import inspect
import logging
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import text

from gptactions.config import Settings
from gptactions.llm.fake import FakeBackend
from gptactions.services.keys import hash_fragment, hash_key
from gptactions.store import schema
from gptactions.store.db import Database, alembic_config
from tests.conftest import ADMIN_KEY, running_app
from tests.store.revisions import migrate_to

# Migrations that change data rather than only add (documented in store/migrations/__init__.py).
CHANGES_DATA = {"0011"}
# What an upgrade may not do: an older version still running would read or write what is gone.
TAKES_AWAY = ("drop_column", "drop_table", "alter_column", "rename_table", "drop_constraint")


async def test_a_server_that_may_not_migrate_waits_for_db_upgrade(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A server (a worker, or one that started before its database) finding the schema behind
    with GPTACTIONS_AUTO_MIGRATE=false answers 503 naming both revisions, then serves once
    `gptactions db upgrade` has run."""
    url = f"sqlite:///{tmp_path / 'server.db'}"
    await migrate_to(url, "0005")
    settings = Settings(database_url=url, api_key=ADMIN_KEY, auto_migrate=False)
    needs = schema.needs_upgrade(
        url.removeprefix("sqlite:///"), schema.Revisions("0005", schema.head())
    )
    caplog.set_level(logging.INFO, logger="gptactions")
    async with running_app(settings, FakeBackend()) as api:
        health = await api.get("/healthz", key=None)
        assert health.status_code == 503
        assert health.json()["error"]["details"] == [{"pointer": "/database", "message": needs}]
        refused = await api.get("/api/v1/gpt/logs")
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "database_unavailable"
        await asyncio.sleep(4.5)  # two more checks: said once all the same
        assert [r.message for r in caplog.records].count(
            f"{needs} (GPTACTIONS_AUTO_MIGRATE=false); 503 until then"
        ) == 1

        upgrading = Database(url)  # what `gptactions db upgrade` does
        try:
            await upgrading.upgrade()
        finally:
            await upgrading.close()
        for _ in range(100):
            if (await api.get("/healthz", key=None)).status_code == 200:
                break
            await asyncio.sleep(0.1)
        assert (await api.get("/healthz", key=None)).json() == {"status": "ok", "database": "ok"}
        assert (await api.get("/api/v1/gpt/logs")).status_code == 200  # the key was imported
    assert f"imported GPTACTIONS_API_KEY as admin key {hash_fragment(hash_key(ADMIN_KEY))}" in (
        caplog.text
    )


def _upgrade_tree(revision: str) -> ast.Module:
    script = ScriptDirectory.from_config(alembic_config()).get_revision(revision)
    assert script is not None and script.module is not None
    return ast.parse(inspect.getsource(script.module.upgrade))


async def test_a_schema_taken_back_under_a_running_server_is_a_503(database_url: str) -> None:
    """`gptactions db downgrade` run while a server runs: what it reads is gone. A 503 that
    says the database cannot be used, as for an outage (on PostgreSQL it was a 500 and a
    traceback; SQLite's "no such column" already was one)."""
    settings = Settings(database_url=database_url, api_key=ADMIN_KEY)
    async with running_app(settings, FakeBackend()) as api:
        assert (await api.get("/api/v1/gpt/logs")).status_code == 200
        before = schema.known()[-2]
        async with api.runtime.database.session() as session:
            await session.execute(text("ALTER TABLE interactions RENAME COLUMN reply TO gone"))
            await session.execute(text(f"UPDATE alembic_version SET version_num = '{before}'"))
        response = await api.get("/api/v1/gpt/logs")
        # The load balancer is told too: /healthz was 200 "ok" while every request failed.
        health = await api.get("/healthz", key=None)
        async with api.runtime.database.session() as session:
            await session.execute(text("ALTER TABLE interactions RENAME COLUMN gone TO reply"))
            await session.execute(
                text(f"UPDATE alembic_version SET version_num = '{schema.head()}'")
            )
        healed = await api.get("/healthz", key=None)
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "database_unavailable"
    assert "Retry-After" in response.headers
    assert health.status_code == 503, health.text
    assert f"its schema is at revision {before}, behind" in health.json()["error"]["message"]
    assert healed.status_code == 200, healed.text


@pytest.mark.parametrize("revision", schema.known())
def test_migrations_only_add(revision: str) -> None:
    """The rule that lets an older version serve a newer schema (a rolling upgrade, a rollback):
    nothing an upgrade takes away, and no new column an older version's inserts would break."""
    tree = _upgrade_tree(revision)
    source = ast.unparse(tree)
    assert not [word for word in TAKES_AWAY if word in source], revision
    if revision not in CHANGES_DATA:
        assert "UPDATE " not in source and "DELETE " not in source, revision
    for call in ast.walk(tree):
        if not (isinstance(call, ast.Call) and getattr(call.func, "attr", "") == "add_column"):
            continue
        for column in (arg for arg in call.args if isinstance(arg, ast.Call)):
            words = {keyword.arg: keyword.value for keyword in column.keywords}
            required = isinstance(words.get("nullable"), ast.Constant) and not getattr(
                words["nullable"], "value", True
            )
            assert not required or "server_default" in words, (revision, ast.unparse(column))
