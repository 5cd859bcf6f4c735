"""`gptactions keys rotate` and `keys update` through the command line's entry point, on a real
SQLite database, and a rotated key's old secret refused by a running app."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path

from gptactions.config import Settings
from tests.conftest import ApiClient
from tests.test_cli import Ran, gptactions

STATUS = "/api/v1/gpt/status"


def _created(*args: str, cwd: Path) -> str:
    made = gptactions("keys", "create", *args, cwd=cwd)
    assert made.returncode == 0, made.stderr
    return made.stdout.splitlines()[-1]


def _listed(cwd: Path) -> dict[str, dict[str, object]]:
    return {k["id"]: k for k in json.loads(gptactions("keys", "list", "--json", cwd=cwd).stdout)}


def test_keys_rotate_prints_the_new_key_alone_and_revokes_the_old(isolated: Path) -> None:
    old_secret = _created(
        "--name", "partner", "--scope", "chat", "--tenant", "acme", "--rate-limit", "60/minute",
        cwd=isolated,
    )  # fmt: skip
    [old_id] = _listed(isolated)

    rotated = gptactions("keys", "rotate", old_secret[:12], cwd=isolated)

    assert rotated.returncode == 0, rotated.stderr
    new_secret = rotated.stdout.strip()
    assert new_secret.startswith("gpta_") and "\n" not in new_secret and new_secret != old_secret
    assert f"rotated key {old_secret[:12]}… (partner, tenant acme)" in rotated.stderr
    assert f"the old key (id {old_id}) is revoked" in rotated.stderr
    assert "limits: requests 60/minute" in rotated.stderr
    assert "scopes: chat; it is shown only now:" in rotated.stderr
    listed = _listed(isolated)
    assert listed[old_id]["revokedAt"] is not None
    [new] = [key for key in listed.values() if key["id"] != old_id]
    assert new["prefix"] == new_secret[:12] and new["revokedAt"] is None
    assert (new["name"], new["tenant"], new["scopes"]) == ("partner", "acme", ["chat"])
    assert (new["rateLimit"], new["tokenLimit"]) == ("60/minute", None)


def test_keys_rotate_with_a_grace_period_lists_the_expiry(isolated: Path) -> None:
    _created("--name", "ci", cwd=isolated)
    [old_id] = _listed(isolated)

    rotated = gptactions("keys", "rotate", old_id, "--grace", "12h", cwd=isolated)

    assert rotated.returncode == 0, rotated.stderr
    assert f"the old key (id {old_id}) works until " in rotated.stderr
    assert f"(12h from now), then stops; `keys revoke {old_id}` ends it sooner" in rotated.stderr
    old = _listed(isolated)[old_id]
    assert old["revokedAt"] is None and old["expiresAt"] is not None
    table = gptactions("keys", "list", cwd=isolated).stdout
    row = next(line for line in table.splitlines() if line.startswith(old_id))
    assert row.split()[-3] == "expires"
    # The old key is on its way out: rotating it again is refused, revoking it is not.
    again = gptactions("keys", "rotate", old_id, cwd=isolated)
    assert again.returncode == 1 and "rotated already" in again.stderr
    assert gptactions("keys", "revoke", old_id, cwd=isolated).returncode == 0
    assert _listed(isolated)[old_id]["revokedAt"] is not None


def test_keys_rotate_refuses_what_it_cannot_do(isolated: Path) -> None:
    secret = _created("--name", "ci", cwd=isolated)
    cases: list[tuple[tuple[str, ...], int, str]] = [
        (("gpta_nothing",), 1, "no key with id or prefix 'gpta_nothing'"),
        ((secret[:12], "--grace", "soon"), 2, "Invalid value for --grace: not a duration"),
        ((secret[:12], "--grace", "0s"), 2, "'0s' is not a duration: it must be at least 1s"),
        ((secret[:12], "--grace", "99999999d"), 2, "'99999999d' is too long: at most 36500d"),
        ((), 2, "Missing argument 'KEY_ID'"),
    ]
    for args, code, message in cases:
        refused = gptactions("keys", "rotate", *args, cwd=isolated)
        assert (refused.returncode, refused.stdout) == (code, ""), (args, refused)
        assert message in refused.stderr, (args, refused.stderr)
    assert gptactions("keys", "revoke", secret[:12], cwd=isolated).returncode == 0
    revoked = gptactions("keys", "rotate", secret[:12], cwd=isolated)
    assert revoked.returncode == 1 and "cannot be rotated" in revoked.stderr
    assert len(_listed(isolated)) == 1  # no successor was made by any of them


def test_the_imported_key_is_rotated_by_its_variable_not_the_command(isolated: Path) -> None:
    imported = "an-imported-admin-key-0123456789"
    assert gptactions("db", "upgrade", cwd=isolated).returncode == 0
    _import_key(isolated, imported)
    [key_id] = _listed(isolated)

    refused = gptactions("keys", "rotate", key_id, cwd=isolated)

    assert refused.returncode == 1 and "GPTACTIONS_API_KEY" in refused.stderr


def _import_key(cwd: Path, secret: str) -> None:
    """What `serve` does at start-up with GPTACTIONS_API_KEY set."""
    from gptactions.services.keys import KeyService
    from gptactions.store.db import Database

    async def run() -> None:
        database = Database(f"sqlite:///{cwd / 'server.db'}")
        try:
            await KeyService(database).ensure_bootstrap_key(secret)
        finally:
            await database.close()

    asyncio.run(run())


def test_keys_update_changes_what_is_given(isolated: Path) -> None:
    secret = _created("--name", "ci", "--scope", "chat", "--rate-limit", "10/minute", cwd=isolated)

    updated = gptactions(
        "keys", "update", secret[:12], "--name", "ci-bot", "--scope", "chat", "--scope", "logs",
        "--rate-limit", "default", "--token-limit", "1000/day", cwd=isolated,
    )  # fmt: skip

    assert updated.returncode == 0, updated.stderr
    [key] = _listed(isolated).values()
    assert updated.stdout.splitlines() == [
        f"updated {secret[:12]}… (ci-bot, id {key['id']})",
        "scopes: chat logs",
        "limits: requests as the server (GPTACTIONS_RATE_LIMIT), tokens 1000/day",
    ]
    assert (key["name"], key["scopes"]) == ("ci-bot", ["chat", "logs"])
    assert (key["rateLimit"], key["tokenLimit"]) == (None, "1000/day")
    renamed = gptactions("keys", "update", str(key["id"]), "--name", "ci", cwd=isolated)
    assert renamed.returncode == 0
    assert _listed(isolated)[str(key["id"])]["scopes"] == ["chat", "logs"]  # the rest stays


def test_keys_update_refuses_what_it_cannot_do(isolated: Path) -> None:
    secret = _created("--name", "ci", cwd=isolated)
    prefix = secret[:12]
    cases: list[tuple[tuple[str, ...], int, str]] = [
        ((prefix,), 2, "nothing to change: give --name, --scope, --rate-limit or --token-limit"),
        ((prefix, "--scope", "root"), 2, "'root' is not one of 'chat', 'actions', 'logs'"),
        ((prefix, "--rate-limit", "60"), 2, "rate limit '60' is not a rate"),
        ((prefix, "--name", " "), 2, "a key needs a name"),
        (("gpta_nothing", "--name", "x"), 1, "no key with id or prefix 'gpta_nothing'"),
    ]
    for args, code, message in cases:
        refused = gptactions("keys", "update", *args, cwd=isolated)
        assert (refused.returncode, refused.stdout) == (code, ""), (args, refused)
        assert message in refused.stderr, (args, refused.stderr)
    [key] = _listed(isolated).values()
    assert (key["name"], key["rateLimit"]) == ("ci", None)
    assert gptactions("keys", "revoke", prefix, cwd=isolated).returncode == 0
    revoked = gptactions("keys", "update", prefix, "--name", "x", cwd=isolated)
    assert revoked.returncode == 1 and "cannot be updated" in revoked.stderr


async def _command(settings: Settings, cwd: Path, *args: str) -> Ran:
    """The command line on the running app's database, in a thread (it runs its own loop)."""
    environment = {"GPTACTIONS_DATABASE_URL": settings.database_url}
    ran = await asyncio.to_thread(gptactions, *args, cwd=cwd, env=environment)
    assert ran.returncode == 0, ran.stderr
    return ran


async def _refused_within(api: ApiClient, secret: str, seconds: float) -> float:
    """Seconds until the app refuses the key (it may trust its cache for CHECK_INTERVAL)."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if (await api.get(STATUS, key=secret)).status_code == 401:
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError(f"the app still accepts the key after {seconds} s")


async def test_a_rotated_keys_old_secret_stops_working_on_a_running_app(
    api: ApiClient, settings: Settings, isolated: Path
) -> None:
    at_once, graced = await api.key(name="at-once"), await api.key(name="graced")
    for secret in (at_once, graced):  # each now in the app's key cache
        assert (await api.get(STATUS, key=secret)).status_code == 200

    rotated = await _command(settings, isolated, "keys", "rotate", at_once[:12])
    graced_at = time.monotonic()  # the grace period starts during the command
    extended = await _command(settings, isolated, "keys", "rotate", graced[:12], "--grace", "3s")

    successor = rotated.stdout.strip()
    assert (await api.get(STATUS, key=successor)).status_code == 200
    await _refused_within(api, at_once, seconds=10)
    # The graced key is still good once the app has re-read it (and learned its expiry)...
    if time.monotonic() - graced_at < 2:
        assert (await api.get(STATUS, key=graced)).status_code == 200
    # ...and stops when its grace period ends, with no revocation to tell the app.
    await _refused_within(api, graced, seconds=15)
    assert time.monotonic() - graced_at >= 2.5
    assert (await api.get(STATUS, key=extended.stdout.strip())).status_code == 200


def test_an_admin_key_of_one_tenant_is_refused_and_one_made_before_is_named(
    isolated: Path,
) -> None:
    for args in (("--scope", "admin", "--scope", "logs"), ("--admin",)):
        refused = gptactions(
            "keys", "create", "--name", "x", *args, "--tenant", "acme", cwd=isolated
        )
        assert (refused.returncode, refused.stdout) == (2, ""), refused
        assert "an admin key sees every tenant's logs and usage" in refused.stderr
        assert "`keys create --scope logs --tenant acme`" in refused.stderr
    assert not (isolated / "server.db").exists(), "refused after opening the database"
    secret = _created("--name", "acme-reader", "--scope", "logs", "--tenant", "acme", cwd=isolated)
    [key_id] = _listed(isolated)
    widened = gptactions("keys", "update", secret[:12], "--scope", "admin", cwd=isolated)
    assert widened.returncode == 2 and "every tenant's logs" in widened.stderr
    assert _listed(isolated)[key_id]["scopes"] == ["logs"]

    connection = sqlite3.connect(isolated / "server.db")  # as an older version let it be made
    with connection:
        connection.execute("UPDATE api_keys SET scopes = 'logs admin' WHERE id = ?", (key_id,))
    connection.close()
    for args in ((), ("--json",)):
        listed = gptactions("keys", "list", *args, cwd=isolated)
        assert listed.returncode == 0, listed.stderr
        warning = f"Warning: key {secret[:12]}… (acme-reader, id {key_id}) has the admin scope"
        assert f"{warning} and tenant 'acme'" in listed.stderr
    narrowed = gptactions("keys", "update", key_id, "--scope", "logs", cwd=isolated)
    assert narrowed.returncode == 0, narrowed.stderr
    assert "Warning" not in gptactions("keys", "list", cwd=isolated).stderr
