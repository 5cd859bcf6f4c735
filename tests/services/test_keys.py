"""Keys that follow the operator's intent: an imported key replaces the one before, is listed by a
hash fragment, and a prefix shared by several keys revokes none of them."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.engine import Connection

from gptactions.services.keys import (
    DEFAULT_TENANT,
    SCOPES,
    AdminOfOneTenant,
    AmbiguousKey,
    KeyService,
    KeyUnchangeable,
    admins_of_one_tenant,
    hash_key,
)
from gptactions.store.db import Database, alembic_config

FIRST = "operator-chosen-key-number-1"
SECOND = "operator-chosen-key-number-2"
# Human-chosen keys of every shape: short, long, with the generated keys' marker, unicode.
HUMAN_KEYS = [
    "twenty-chars-exactly",
    "correct horse battery staple",
    "gpta_my_own_admin_key_for_staging",
    "clé-secrète-du-serveur-2024",
    "A" * 200,
]


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    """A migrated database on SQLite and on PostgreSQL."""
    database = Database(database_url)
    await database.upgrade()
    yield database
    await database.close()


async def _active(keys: KeyService, secret: str) -> bool:
    return await keys.authenticate(secret) is not None


async def test_a_changed_api_key_replaces_the_imported_one(
    database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    keys = KeyService(database)
    first = await keys.ensure_bootstrap_key(FIRST)
    assert first is not None and first.info.imported
    caplog.set_level(logging.INFO)

    second = await keys.ensure_bootstrap_key(SECOND)

    assert second is not None
    assert await _active(keys, SECOND)
    assert not await _active(keys, FIRST), "the previous GPTACTIONS_API_KEY still works"
    assert "revoked" in caplog.text and first.info.id in caplog.text
    assert FIRST not in caplog.text and SECOND not in caplog.text
    # Starting again with the same value changes nothing and revokes nothing.
    assert await keys.ensure_bootstrap_key(SECOND) is None
    assert await _active(keys, SECOND)
    assert [k.id for k in await keys.list() if k.revoked_at is None] == [second.info.id]


async def test_replacing_the_imported_key_leaves_created_keys_alone(database: Database) -> None:
    keys = KeyService(database)
    await keys.ensure_bootstrap_key(FIRST)
    ci = await keys.create("ci", scopes=("chat",))
    ops = await keys.create("ops", scopes=("admin",))

    await keys.ensure_bootstrap_key(SECOND)

    assert await _active(keys, ci.secret) and await _active(keys, ops.secret)


async def test_a_revoked_api_key_stays_revoked(
    database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    keys = KeyService(database)
    first = await keys.ensure_bootstrap_key(FIRST)
    assert first is not None
    await keys.revoke(first.info.id)
    caplog.set_level(logging.WARNING)

    assert await keys.ensure_bootstrap_key(FIRST) is None

    assert not await _active(keys, FIRST)
    assert "revoked" in caplog.text and first.info.id in caplog.text


async def test_setting_the_variable_back_to_a_revoked_value_revokes_the_current_one(
    database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """FIRST, then SECOND (FIRST revoked), then FIRST again: FIRST stays revoked, and SECOND,
    which the variable no longer holds, stops working too (no imported key is left working)."""
    keys = KeyService(database)
    await keys.ensure_bootstrap_key(FIRST)
    second = await keys.ensure_bootstrap_key(SECOND)
    assert second is not None
    caplog.set_level(logging.INFO)

    assert await keys.ensure_bootstrap_key(FIRST) is None

    assert not await _active(keys, FIRST)
    assert not await _active(keys, SECOND), "the value the variable no longer holds still works"
    assert "stays revoked" in caplog.text and second.info.id in caplog.text
    assert "imported before" not in caplog.text.replace("the key it imported before", "")


async def test_starting_again_with_the_same_key_says_it_was_found(
    database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    keys = KeyService(database)
    first = await keys.ensure_bootstrap_key(FIRST)
    assert first is not None
    caplog.set_level(logging.INFO)

    assert await keys.ensure_bootstrap_key(FIRST) is None

    assert f"found GPTACTIONS_API_KEY's key {first.info.prefix}, imported before" in caplog.text
    assert "revoked" not in caplog.text


@pytest.mark.parametrize("secret", HUMAN_KEYS)
async def test_an_imported_key_is_listed_by_a_hash_fragment_not_its_first_characters(
    database: Database, secret: str
) -> None:
    keys = KeyService(database)
    imported = await keys.ensure_bootstrap_key(secret)
    assert imported is not None

    (listed,) = await keys.list()
    assert listed.prefix == "sha256:" + hash_key(secret)[:8]
    # Not even a short piece of the key shows: no 4 of its characters in a row.
    pieces = {secret[i : i + 4] for i in range(len(secret) - 3)}
    assert not any(piece in listed.prefix for piece in pieces)
    # The fragment is what `keys revoke` takes, like a generated key's prefix.
    revocation = await keys.revoke(listed.prefix)
    assert revocation is not None and not revocation.already
    assert not await _active(keys, secret)


async def test_a_generated_key_keeps_its_visible_prefix(database: Database) -> None:
    created = await KeyService(database).create("ci")
    assert not created.info.imported
    assert created.info.prefix == created.secret[:12]


async def test_revoking_a_revoked_key_says_so(database: Database) -> None:
    keys = KeyService(database)
    created = await keys.create("ci")
    first = await keys.revoke(created.info.prefix)
    again = await keys.revoke(created.info.id)
    assert first is not None and not first.already
    assert again is not None and again.already
    assert again.key.revoked_at == first.key.revoked_at
    assert await keys.revoke("gpta_nothing") is None


# --- databases from before keys were marked (revision 0001) -----------------------------------


async def _at_0001_with_keys(database: Database, secrets: list[str]) -> None:
    """A database left by the previous version: its keys stored with their first 12 characters."""

    def migrate(connection: Connection) -> None:
        command.upgrade(alembic_config(connection), "0001")

    async with database.engine.begin() as connection:
        await connection.run_sync(migrate)
        for number, secret in enumerate(secrets):
            await connection.execute(
                text(
                    "INSERT INTO api_keys (id, name, prefix, key_hash, tenant, scopes, created_at)"
                    " VALUES (:id, 'admin', :prefix, :hash, 'default',"
                    " 'chat actions logs admin', CURRENT_TIMESTAMP)"
                ),
                {"id": f"legacy{number}", "prefix": secret[:12], "hash": hash_key(secret)},
            )


@pytest.fixture
async def legacy(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    yield database
    await database.close()


async def test_two_keys_sharing_a_prefix_are_refused_with_their_ids(legacy: Database) -> None:
    shared = ["gpta_company_key_one_0123", "gpta_company_key_two_4567"]
    await _at_0001_with_keys(legacy, shared)
    await legacy.upgrade()
    keys = KeyService(legacy)

    with pytest.raises(AmbiguousKey) as refused:
        await keys.revoke("gpta_company")

    assert {k.id for k in refused.value.matches} == {"legacy0", "legacy1"}
    assert "legacy0" in str(refused.value) and "legacy1" in str(refused.value)
    assert all([await _active(keys, secret) for secret in shared]), "a refusal revoked a key"
    revocation = await keys.revoke("legacy1")
    assert revocation is not None and revocation.key.id == "legacy1"
    assert await _active(keys, shared[0]) and not await _active(keys, shared[1])


async def test_the_migration_hides_the_prefix_of_keys_that_were_imported(legacy: Database) -> None:
    await _at_0001_with_keys(legacy, ["my-own-secret-admin-key", "gpta_" + "x" * 43])
    await legacy.upgrade()
    keys = KeyService(legacy)

    imported, generated = await keys.list()

    assert (
        imported.imported and imported.prefix == "sha256:" + hash_key("my-own-secret-admin-key")[:8]
    )
    assert not generated.imported and generated.prefix == "gpta_xxxxxxx"
    assert await _active(keys, "my-own-secret-admin-key")


async def test_an_old_imported_key_is_marked_when_the_server_starts_with_it(
    legacy: Database,
) -> None:
    old = "gpta_chosen_by_the_operator_long_ago"
    await _at_0001_with_keys(legacy, [old])
    await legacy.upgrade()
    keys = KeyService(legacy)

    assert await keys.ensure_bootstrap_key(old) is None
    (listed,) = await keys.list()
    assert listed.imported and listed.prefix.startswith("sha256:")

    await keys.ensure_bootstrap_key(SECOND)
    assert not await _active(keys, old)


# --- an admin key sees every tenant: never given a tenant of its own ----------------------------


async def test_the_admin_scope_is_refused_on_a_key_of_another_tenant(database: Database) -> None:
    keys = KeyService(database)
    for scopes in (("admin",), ("admin", "logs"), SCOPES):
        with pytest.raises(AdminOfOneTenant) as refused:
            await keys.create("acme-admin", scopes=scopes, tenant="acme")
        assert "an admin key sees every tenant's logs" in str(refused.value)
        assert "--scope logs --tenant acme" in str(refused.value)
    assert await keys.list() == []
    # What to do instead, and an admin key of the default tenant, are accepted.
    reader = await keys.create("acme-reader", scopes=("logs",), tenant="acme")
    assert await keys.create("ops", scopes=SCOPES, tenant=f" {DEFAULT_TENANT} ") is not None

    with pytest.raises(AdminOfOneTenant):
        await keys.update(reader.info.id, scopes=("logs", "admin"))

    [listed] = [key for key in await keys.list() if key.id == reader.info.id]
    assert listed.scopes == ("logs",)
    principal = await keys.authenticate(reader.secret)
    assert principal is not None and not principal.is_admin


async def test_a_tenant_admin_made_before_is_named_and_can_only_be_narrowed(
    database: Database,
) -> None:
    keys = KeyService(database)
    made = await keys.create("acme-admin", scopes=("logs",), tenant="acme")
    async with database.engine.begin() as connection:  # as an older version let it be made
        await connection.execute(
            text("UPDATE api_keys SET scopes = 'logs admin' WHERE id = :id"), {"id": made.info.id}
        )
    [warning] = admins_of_one_tenant(await keys.list())
    assert made.info.id in warning and "'acme'" in warning
    assert f"keys update {made.info.id} --scope logs" in warning

    with pytest.raises(AdminOfOneTenant):  # a change that keeps the admin scope
        await keys.update(made.info.id, name="renamed")
    with pytest.raises(KeyUnchangeable, match="every tenant's logs"):  # its successor would too
        await keys.rotate(made.info.id)

    narrowed = await keys.update(made.info.id, scopes=("logs",))
    assert narrowed is not None and narrowed.scopes == ("logs",)
    assert admins_of_one_tenant(await keys.list()) == []
