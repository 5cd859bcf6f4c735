"""`gptactions users disable|enable|password|delete` and `oauth clients list|update` through the
command line's entry point, on a real SQLite database: what they print, refuse, and do to tokens
and codes."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import TypeVar

import pytest

from gptactions.services.keys import hash_key
from gptactions.services.oauth import OAuthService
from gptactions.services.oauth_types import AuthorizationRequest, BadClient
from gptactions.services.users import UserService
from gptactions.store import accounts
from gptactions.store.db import Database
from gptactions.store.models import OAuthCode, OAuthToken, utcnow
from tests.test_cli import gptactions, gptactions_process

T = TypeVar("T")
OLD_CALLBACK = "https://chat.openai.com/aip/g-placeholder/oauth/callback"
NEW_CALLBACK = "https://chat.openai.com/aip/g-abc/oauth/callback"


def _on(cwd: Path, work: Callable[[Database], Awaitable[T]]) -> T:
    """`work` on the database the commands use."""

    async def run() -> T:
        database = Database(f"sqlite:///{cwd / 'server.db'}")
        try:
            return await work(database)
        finally:
            await database.close()

    return asyncio.run(run())


def _user(cwd: Path, username: str, password: str = "pw-12345678") -> str:
    made = gptactions("users", "create", "--username", username, cwd=cwd, stdin=password + "\n")
    assert made.returncode == 0, made.stderr
    found = _on(cwd, lambda db: UserService(db).get(username))
    assert found is not None
    return found.id


def _client(cwd: Path, *scopes: str) -> str:
    options = [arg for scope in scopes for arg in ("--scope", scope)]
    made = gptactions(
        "oauth", "clients", "create", "--name", "GPT", "--redirect-uri", OLD_CALLBACK, *options,
        cwd=cwd,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    return made.stdout.splitlines()[0].removeprefix("client_id=")


def _token(cwd: Path, client_id: str, user_id: str, scopes: str) -> str:
    """An access token issued to the client for the user (as the token endpoint stores one)."""
    access = f"gpto_{uuid.uuid4().hex}"
    now = utcnow()
    token = OAuthToken(
        id=uuid.uuid4().hex,
        access_hash=hash_key(access),
        refresh_hash=hash_key(f"gptr_{uuid.uuid4().hex}"),
        client_id=client_id,
        user_id=user_id,
        scopes=scopes,
        created_at=now,
        access_expires_at=now + timedelta(hours=1),
        refresh_expires_at=now + timedelta(days=30),
    )

    async def add(db: Database) -> None:
        async with db.session() as session:
            await accounts.add_token(session, token)

    _on(cwd, add)
    return access


def _code(cwd: Path, client_id: str, user_id: str, redirect_uri: str, scopes: str) -> str:
    """The hash of an authorization code issued and not redeemed yet."""
    code_hash = hash_key(uuid.uuid4().hex)
    code = OAuthCode(
        code_hash=code_hash,
        stage="code",
        client_id=client_id,
        user_id=user_id,
        redirect_uri=redirect_uri,
        scopes=scopes,
        expires_at=utcnow() + timedelta(minutes=1),
    )

    async def add(db: Database) -> None:
        async with db.session() as session:
            await accounts.add_code(session, code)

    _on(cwd, add)
    return code_hash


def _valid(cwd: Path, access: str) -> bool:
    return _on(cwd, lambda db: OAuthService(db).authenticate(access)) is not None


def _code_kept(cwd: Path, code_hash: str) -> bool:
    async def find(db: Database) -> bool:
        async with db.session() as session:
            return await accounts.code_by_hash(session, code_hash) is not None

    return _on(cwd, find)


def _signs_in(cwd: Path, username: str, password: str) -> bool:
    found = _on(cwd, lambda db: UserService(db).sign_in(username, password, address="test"))
    return found is not None


def test_users_enable_undoes_disable(isolated: Path) -> None:
    _user(isolated, "alice")
    assert gptactions("users", "disable", "alice", cwd=isolated).returncode == 0
    assert not _signs_in(isolated, "alice", "pw-12345678")

    enabled = gptactions("users", "enable", "alice", cwd=isolated)

    assert enabled.returncode == 0, enabled.stderr
    assert enabled.stdout.startswith("enabled alice (disabled since ")
    assert "the tokens revoked then stay revoked: they sign in again" in enabled.stdout
    assert _signs_in(isolated, "alice", "pw-12345678")
    listed = json.loads(gptactions("users", "list", "--json", cwd=isolated).stdout)
    assert listed[0]["disabledAt"] is None
    again = gptactions("users", "enable", "alice", cwd=isolated)
    assert (again.returncode, again.stdout) == (0, "alice is already enabled\n")
    nobody = gptactions("users", "enable", "bob", cwd=isolated)
    assert nobody.returncode == 1 and "no user 'bob'" in nobody.stderr
    missing = gptactions("users", "enable", cwd=isolated)
    assert missing.returncode == 2 and "Missing argument 'USERNAME'" in missing.stderr


def test_users_disable_says_when_the_user_already_was(isolated: Path) -> None:
    _user(isolated, "alice")
    first = gptactions("users", "disable", "alice", cwd=isolated)
    assert (first.returncode, first.stdout) == (0, "disabled alice\n")
    [listed] = json.loads(gptactions("users", "list", "--json", cwd=isolated).stdout)

    again = gptactions("users", "disable", "alice", cwd=isolated)

    since = f"{datetime.fromisoformat(listed['disabledAt']):%Y-%m-%d %H:%M}"
    assert (again.returncode, again.stdout) == (
        0,
        f"alice is already disabled (since {since} UTC)\n",
    )
    assert json.loads(gptactions("users", "list", "--json", cwd=isolated).stdout) == [listed]
    nobody = gptactions("users", "disable", "bob", cwd=isolated)
    assert nobody.returncode == 1 and "no user 'bob'" in nobody.stderr


def test_users_delete_says_it_once_and_advises_the_users_own_export(isolated: Path) -> None:
    """A process of its own: pytest's log capture would hide a warning Python prints on stderr
    when no logging is configured."""
    _user(isolated, "alice")

    deleted = gptactions_process("users", "delete", "alice", cwd=isolated)

    assert deleted.returncode == 0, deleted.stderr
    assert deleted.stdout == "deleted alice, with 0 conversations and 0 interactions\n"
    assert deleted.stderr == ""
    # An OAuth user's data is in the tenant @users: a userId alone would export other tenants'.
    advice = " ".join(gptactions("users", "delete", "--help", cwd=isolated).stdout.split())
    assert "`gptactions logs export --tenant @users --user USERNAME`" in advice


def test_oauth_clients_list_prints_its_header_with_no_client(isolated: Path) -> None:
    empty = gptactions("oauth", "clients", "list", cwd=isolated)
    assert (empty.returncode, empty.stdout.split()) == (
        0,
        ["ID", "NAME", "SCOPES", "CREATED", "REVOKED", "REDIRECT", "URIS"],
    )
    client = _client(isolated, "chat")
    header, row = gptactions("oauth", "clients", "list", cwd=isolated).stdout.splitlines()
    assert row.startswith(f"{client}  GPT   chat  ") and row.endswith(f"  -        {OLD_CALLBACK}")
    assert header.index("REDIRECT URIS") == row.index(OLD_CALLBACK)  # the columns line up


def test_users_password_sets_it_and_signs_the_user_out(isolated: Path) -> None:
    alice, bob = _user(isolated, "alice"), _user(isolated, "bob")
    client = _client(isolated, "chat")
    tokens = [_token(isolated, client, alice, "chat") for _ in range(2)]
    bobs = _token(isolated, client, bob, "chat")
    pending = _code(isolated, client, alice, OLD_CALLBACK, "chat")

    changed = gptactions("users", "password", "alice", cwd=isolated, stdin="new-password-1\n")

    assert changed.returncode == 0, changed.stderr
    assert changed.stdout == (
        "changed the password of alice and revoked their 2 token(s): they sign in again\n"
    )
    assert not any(_valid(isolated, token) for token in tokens)
    assert not _code_kept(isolated, pending)  # a sign-in midway is not finished either
    assert _valid(isolated, bobs)  # other users' are theirs
    assert _signs_in(isolated, "alice", "new-password-1")
    assert not _signs_in(isolated, "alice", "pw-12345678")
    again = gptactions("users", "password", "alice", cwd=isolated, stdin="new-password-2\n")
    assert again.stdout == "changed the password of alice (they had no token to revoke)\n"


def test_users_password_of_a_disabled_user_says_they_stay_disabled(isolated: Path) -> None:
    _user(isolated, "alice")
    assert gptactions("users", "disable", "alice", cwd=isolated).returncode == 0
    changed = gptactions("users", "password", "alice", cwd=isolated, stdin="new-password-1\n")
    assert changed.returncode == 0, changed.stderr
    assert changed.stdout.splitlines()[-1] == (
        "alice is still disabled (`gptactions users enable alice`)"
    )
    assert not _signs_in(isolated, "alice", "new-password-1")


@pytest.mark.parametrize(
    ("username", "stdin", "code", "message"),
    [
        ("alice", "short\n", 2, "a password must be at least 8 characters long"),
        ("alice", "", 2, "no password on standard input"),
        ("bob", "new-password-1\n", 1, "no user 'bob'"),
    ],
    ids=["too-short", "no-stdin", "no-such-user"],
)
def test_users_password_refuses_and_changes_nothing(
    isolated: Path, username: str, stdin: str, code: int, message: str
) -> None:
    alice = _user(isolated, "alice")
    token = _token(isolated, _client(isolated, "chat"), alice, "chat")

    refused = gptactions("users", "password", username, cwd=isolated, stdin=stdin)

    assert (refused.returncode, refused.stdout) == (code, "")
    assert message in refused.stderr
    assert _signs_in(isolated, "alice", "pw-12345678") and _valid(isolated, token)


def _secret_hash(cwd: Path, client_id: str) -> str:
    with sqlite3.connect(cwd / "server.db") as database:
        row = database.execute(
            "SELECT secret_hash FROM oauth_clients WHERE id = ?", (client_id,)
        ).fetchone()
    return str(row[0])


def _authorizes(cwd: Path, client_id: str, redirect_uri: str) -> bool:
    request = AuthorizationRequest("code", client_id, redirect_uri, "chat", "state")
    try:
        _on(cwd, lambda db: OAuthService(db).validate(request))
    except BadClient:
        return False
    return True


def test_oauth_clients_update_keeps_the_id_and_secret(isolated: Path) -> None:
    alice = _user(isolated, "alice")
    client = _client(isolated, "chat", "logs")
    secret_hash = _secret_hash(isolated, client)
    chat, chat_logs, logs = (
        _token(isolated, client, alice, scopes) for scopes in ("chat", "chat logs", "logs")
    )
    old_code = _code(isolated, client, alice, OLD_CALLBACK, "chat")

    updated = gptactions(
        "oauth", "clients", "update", client, "--redirect-uri", NEW_CALLBACK, "--scope", "chat",
        cwd=isolated,
    )  # fmt: skip

    assert updated.returncode == 0, updated.stderr
    assert updated.stdout.splitlines() == [
        f"updated {client} GPT [chat]",
        f"    {NEW_CALLBACK}",
        "dropped the scope(s) logs: revoked the 2 token(s) holding one (their users sign in again)",
    ]
    assert _valid(isolated, chat)
    assert not _valid(isolated, chat_logs) and not _valid(isolated, logs)
    assert not _code_kept(isolated, old_code)  # it would redirect to a URI no longer registered
    assert _authorizes(isolated, client, NEW_CALLBACK)
    assert not _authorizes(isolated, client, OLD_CALLBACK)
    assert _secret_hash(isolated, client) == secret_hash

    second = "https://chatgpt.com/aip/g-abc/oauth/callback"
    added = gptactions(
        "oauth", "clients", "update", client, "--add-redirect-uri", second,
        "--add-redirect-uri", NEW_CALLBACK, "--name", "Trip planner", "--scope", "chat",
        "--scope", "actions", cwd=isolated,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert "dropped" not in added.stdout
    [listed] = json.loads(gptactions("oauth", "clients", "list", "--json", cwd=isolated).stdout)
    assert listed["clientId"] == client and listed["name"] == "Trip planner"
    assert listed["redirectUris"] == [NEW_CALLBACK, second]
    assert listed["scopes"] == ["chat", "actions"]
    assert _valid(isolated, chat)  # widening the scopes ends no token


def test_oauth_clients_update_refuses_and_changes_nothing(isolated: Path) -> None:
    client = _client(isolated, "chat")
    cases: list[tuple[tuple[str, ...], int, str]] = [
        ((client,), 2, "nothing to change: give --name, --redirect-uri, --add-redirect-uri"),
        ((client, "--redirect-uri", "http://x.example/cb"), 2, "must use https"),
        ((client, "--add-redirect-uri", "https://x.example/#f"), 2, "not a redirect URI"),
        ((client, "--scope", "admin"), 2, "'admin' is not one of 'chat', 'actions', 'logs'"),
        ((client, "--name", " "), 2, "a client needs a name"),
        (("nope", "--name", "x"), 1, "no client 'nope'"),
    ]
    for args, code, message in cases:
        refused = gptactions("oauth", "clients", "update", *args, cwd=isolated)
        assert (refused.returncode, refused.stdout) == (code, ""), (args, refused)
        assert message in refused.stderr, (args, refused.stderr)
    [listed] = json.loads(gptactions("oauth", "clients", "list", "--json", cwd=isolated).stdout)
    assert (listed["name"], listed["redirectUris"]) == ("GPT", [OLD_CALLBACK])
    assert gptactions("oauth", "clients", "revoke", client, cwd=isolated).returncode == 0
    revoked = gptactions("oauth", "clients", "update", client, "--name", "x", cwd=isolated)
    assert revoked.returncode == 1
    assert f"the client {client} (GPT) was revoked on " in revoked.stderr
    assert "cannot be updated: create a new one" in revoked.stderr
