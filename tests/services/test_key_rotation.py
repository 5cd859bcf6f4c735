"""Rotating a key: a successor with the same settings, the old key revoked at once or after a
grace period that every replica's cache honours; updating a key reaches the caches too."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from gptactions.config import Rate
from gptactions.services.keycache import CHECK_INTERVAL
from gptactions.services.keys import (
    AmbiguousKey,
    InvalidScope,
    KeyService,
    KeyUnchangeable,
)
from gptactions.store.db import Database


class Clocks:
    """The monotonic clock of the caches' checks and the wall clock of expiries, moved by hand."""

    def __init__(self) -> None:
        self.monotonic = 1000.0
        self.wall = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

    def advance(self, seconds: float) -> None:
        self.monotonic += seconds
        self.wall += timedelta(seconds=seconds)


@pytest.fixture
async def database(migrated_database_url: str) -> AsyncIterator[Database]:
    """A migrated database on SQLite and on PostgreSQL."""
    database = Database(migrated_database_url)
    yield database
    await database.close()


@pytest.fixture
async def replicas(database: Database) -> AsyncIterator[tuple[KeyService, KeyService, Clocks]]:
    """Two key services on one database (an admin command and a server), on clocks of the test."""
    clocks = Clocks()
    pair = [
        KeyService(database, clock=lambda: clocks.monotonic, now=lambda: clocks.wall)
        for _ in range(2)
    ]
    yield pair[0], pair[1], clocks
    for keys in pair:
        await keys.close()


async def test_a_rotated_key_is_replaced_by_one_with_its_settings(
    replicas: tuple[KeyService, KeyService, Clocks],
) -> None:
    admin, server, clocks = replicas
    old = await admin.create(
        "partner", scopes=("chat", "logs"), tenant="acme", rate_limit="60/minute"
    )
    assert await server.authenticate(old.secret) is not None  # cached by the server

    rotation = await admin.rotate(old.info.prefix)

    assert rotation is not None
    new = rotation.new.info
    assert rotation.new.secret != old.secret and new.id != old.info.id
    assert (new.name, new.tenant, new.scopes) == ("partner", "acme", ("chat", "logs"))
    assert (new.rate_limit, new.token_limit) == ("60/minute", None)
    assert rotation.old.revoked_at == clocks.wall and rotation.old.expires_at is None
    principal = await server.authenticate(rotation.new.secret)
    assert principal is not None and principal.rate_limit == Rate.parse("60/minute")
    clocks.advance(CHECK_INTERVAL)  # the server's cache checks the version again
    assert await server.authenticate(old.secret) is None
    assert await admin.authenticate(old.secret) is None


async def test_a_grace_period_ends_on_every_replica_without_a_revocation(
    replicas: tuple[KeyService, KeyService, Clocks],
) -> None:
    admin, server, clocks = replicas
    old = await admin.create("ci")
    assert await server.authenticate(old.secret) is not None

    rotation = await admin.rotate(old.info.id, grace=timedelta(minutes=10))

    assert rotation is not None
    assert rotation.old.revoked_at is None
    assert rotation.old.expires_at == clocks.wall + timedelta(minutes=10)
    # Both keys work during the grace period, and the server's cache learns the expiry...
    clocks.advance(CHECK_INTERVAL)
    assert await server.authenticate(old.secret) is not None
    assert await server.authenticate(rotation.new.secret) is not None
    # ...which ends it from memory: no version is bumped when the time comes.
    clocks.advance(10 * 60 - CHECK_INTERVAL - 1)
    assert await server.authenticate(old.secret) is not None
    clocks.wall += timedelta(seconds=1)  # the monotonic clock stays: no check is due
    assert await server.authenticate(old.secret) is None
    assert await admin.authenticate(old.secret) is None  # and from the database
    assert await server.authenticate(rotation.new.secret) is not None
    # Once expired, it is listed as revoked then, and revoking it says it already was.
    listed = {key.id: key for key in await admin.list()}
    assert listed[old.info.id].revoked_at == rotation.old.expires_at
    again = await admin.revoke(old.info.id)
    assert again is not None and again.already
    assert again.key.revoked_at == rotation.old.expires_at


async def test_revoking_a_key_in_its_grace_period_ends_it_at_once(
    replicas: tuple[KeyService, KeyService, Clocks],
) -> None:
    admin, server, clocks = replicas
    old = await admin.create("ci")
    rotation = await admin.rotate(old.info.id, grace=timedelta(hours=1))
    assert rotation is not None
    assert await server.authenticate(old.secret) is not None

    revocation = await admin.revoke(old.info.id)

    assert revocation is not None and not revocation.already
    assert revocation.key.revoked_at == clocks.wall
    clocks.advance(CHECK_INTERVAL)
    assert await server.authenticate(old.secret) is None


async def test_keys_that_cannot_be_rotated_say_why(
    database: Database, replicas: tuple[KeyService, KeyService, Clocks]
) -> None:
    admin, _, _ = replicas
    assert await admin.rotate("gpta_nothing") is None
    revoked = await admin.create("gone")
    await admin.revoke(revoked.info.id)
    with pytest.raises(KeyUnchangeable, match=r"was revoked on .* cannot be rotated"):
        await admin.rotate(revoked.info.id)
    retiring = await admin.create("retiring")
    await admin.rotate(retiring.info.id, grace=timedelta(hours=1))
    with pytest.raises(KeyUnchangeable, match="rotated already"):
        await admin.rotate(retiring.info.id)
    imported = await admin.ensure_bootstrap_key("an-imported-admin-key-0123456789")
    assert imported is not None
    with pytest.raises(KeyUnchangeable, match="GPTACTIONS_API_KEY"):
        await admin.rotate(imported.info.prefix)
    # Two keys stored by an older version with the same visible prefix: neither is rotated.
    for _ in range(2):
        await admin.create("twin")
    async with database.session() as session:
        await session.execute(
            text("UPDATE api_keys SET prefix = 'gpta_twinned' WHERE name = 'twin'")
        )
    before = len(await admin.list())
    with pytest.raises(AmbiguousKey):
        await admin.rotate("gpta_twinned")
    assert len(await admin.list()) == before


async def test_an_update_reaches_every_replicas_cache(
    replicas: tuple[KeyService, KeyService, Clocks],
) -> None:
    admin, server, clocks = replicas
    created = await admin.create("ci", scopes=("chat",), rate_limit="10/minute")
    before = await server.authenticate(created.secret)
    assert before is not None and before.scopes == {"chat"}

    updated = await admin.update(
        created.info.prefix,
        name="ci-bot",
        scopes=("chat", "logs"),
        rate_limit="default",
        token_limit="1000/day",
    )

    assert updated is not None
    assert (updated.name, updated.scopes) == ("ci-bot", ("chat", "logs"))
    assert (updated.rate_limit, updated.token_limit) == (None, "1000/day")
    clocks.advance(CHECK_INTERVAL)
    after = await server.authenticate(created.secret)
    assert after is not None and after.scopes == {"chat", "logs"}
    assert after.rate_limit is None and after.token_limit == Rate.parse("1000/day")
    assert after.name == "ci-bot"


async def test_an_update_is_checked_before_anything_changes(
    replicas: tuple[KeyService, KeyService, Clocks],
) -> None:
    admin, _, _ = replicas
    created = await admin.create("ci", scopes=("chat",))
    with pytest.raises(InvalidScope):
        await admin.update(created.info.id, scopes=("root",))
    with pytest.raises(InvalidScope):
        await admin.update(created.info.id, scopes=())
    with pytest.raises(ValueError, match="not a rate"):
        await admin.update(created.info.id, name="renamed", token_limit="lots")
    with pytest.raises(ValueError, match="needs a name"):
        await admin.update(created.info.id, name=" ")
    assert await admin.update("gpta_nothing", name="x") is None
    [listed] = await admin.list()
    assert (listed.name, listed.scopes, listed.token_limit) == ("ci", ("chat",), None)
    await admin.revoke(created.info.id)
    with pytest.raises(KeyUnchangeable, match="cannot be updated"):
        await admin.update(created.info.id, name="x")
