"""The command line, as a user runs it: most commands through its entry point in this process
(with their own environment, directory, standard input and output: a subprocess would only add a
second of imports to each), and a few as `python -m gptactions ...` in a subprocess (the entry
point itself, a closed pipe, the model, the server)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import subprocess
import sys
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import click
import httpx
import pytest
import sqlalchemy
import yaml
from alembic import command as alembic_command
from alembic.script import ScriptDirectory
from click.testing import CliRunner
from openapi_spec_validator import validate

from gptactions import cli
from gptactions.config import Settings
from gptactions.services.keys import DEFAULT_SCOPES, DEFAULT_TENANT, SCOPES
from gptactions.services.oauth import DEFAULT_CLIENT_SCOPES
from gptactions.store.db import alembic_config
from tests.serving import serve


@dataclass(frozen=True)
class Ran:
    """What a command did: its exit status and its two outputs."""

    returncode: int
    stdout: str
    stderr: str


class _EntryPoint(click.Command):
    """`gptactions.cli.main` as CliRunner invokes a command. An exception that escapes it is
    printed and exits 1, as Python does at the end of a process, so that a test that looks for
    "Traceback" in the error output sees it."""

    def main(self, args: Any = None, prog_name: str | None = None, **extra: Any) -> Any:
        try:
            return cli.main(list(args or ()))
        except Exception:
            traceback.print_exc()
            raise SystemExit(1) from None


def gptactions(
    *args: str, cwd: Path, stdin: str | None = None, env: dict[str, str] | None = None
) -> Ran:
    """`gptactions ARGS` in `cwd`, on its `server.db` unless `env` says (no other GPTACTIONS_*
    variable: the `isolated` fixture removed them), with `stdin` as its standard input."""
    environment = {"GPTACTIONS_DATABASE_URL": f"sqlite:///{cwd / 'server.db'}"} | (env or {})
    with contextlib.chdir(cwd):
        result = CliRunner().invoke(_EntryPoint("gptactions"), args, input=stdin, env=environment)
    return Ran(result.exit_code, result.stdout, result.stderr)


def gptactions_process(
    *args: str, cwd: Path, stdin: str | None = None, env: dict[str, str] | None = None
) -> Ran:
    """`python -m gptactions ARGS` in a process of its own, as a user runs it."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("GPTACTIONS_")}
    environment["GPTACTIONS_DATABASE_URL"] = f"sqlite:///{cwd / 'server.db'}"
    result = subprocess.run(
        [sys.executable, "-m", "gptactions", *args],
        cwd=cwd,
        env=environment | (env or {}),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return Ran(result.returncode, result.stdout, result.stderr)


@pytest.fixture(autouse=True)
def never_serving(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A `serve` run in this process that gets past its checks fails the test at once, instead of
    serving until someone stops it."""

    def served(*args: object, **kwargs: object) -> None:
        pytest.fail("`gptactions serve` started serving; it should have stopped before")

    monkeypatch.setattr("gptactions.workers.run", served)
    yield


def test_help_lists_every_command(isolated: Path) -> None:
    result = gptactions_process("--help", cwd=isolated)
    assert result.returncode == 0
    for command in ("serve", "keys", "db", "openapi", "chat", "users", "oauth"):
        assert command in result.stdout


def test_the_command_line_starts_without_the_database_layer(isolated: Path) -> None:
    """`gptactions --help` took two seconds importing SQLAlchemy, Alembic and the services,
    which only the commands that run need: each imports its own."""
    heavy = ("sqlalchemy", "alembic", "pydantic_settings", "gptactions.services", "yaml")
    script = f"import sys, gptactions.cli; print([m for m in {heavy!r} if m in sys.modules])"
    loaded = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    assert loaded.stdout.strip() == "[]"


def test_the_help_states_the_defaults_the_services_apply(isolated: Path) -> None:
    """The help of `keys create` and `oauth clients create` writes the services' defaults out
    (so that it imports no service): they must stay the services' own."""
    keys_help = " ".join(gptactions("keys", "create", "--help", cwd=isolated).stdout.split())
    assert f"(default: {' '.join(DEFAULT_SCOPES)})" in keys_help
    assert f"The key's tenant. [default: {DEFAULT_TENANT}]" in keys_help
    clients = gptactions("oauth", "clients", "create", "--help", cwd=isolated).stdout
    assert f"(default: {' '.join(DEFAULT_CLIENT_SCOPES)})" in " ".join(clients.split())
    # and what they accept is the services' (read when the option is used)
    refused = gptactions("keys", "create", "--name", "x", "--scope", "nope", cwd=isolated)
    assert ", ".join(map(repr, SCOPES)) in refused.stderr


def test_keys_create_list_revoke(isolated: Path) -> None:
    created = gptactions(
        "keys", "create", "--name", "ci", "--scope", "chat", "--tenant", "acme", cwd=isolated
    )
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip().splitlines()[-1]
    assert secret.startswith("gpta_") and len(secret) >= 40
    listed = gptactions("keys", "list", cwd=isolated)
    assert secret[:12] in listed.stdout and secret not in listed.stdout
    assert "acme" in listed.stdout and "chat" in listed.stdout
    revoked = gptactions("keys", "revoke", secret[:12], cwd=isolated)
    assert revoked.returncode == 0
    assert "revoked" in revoked.stdout
    missing = gptactions("keys", "revoke", "gpta_nothing", cwd=isolated)
    assert missing.returncode != 0


def test_keys_list_shows_the_ids_revoke_takes(isolated: Path) -> None:
    gptactions("keys", "create", "--name", "ci", cwd=isolated)
    listed = gptactions("keys", "list", cwd=isolated)
    assert listed.stdout.splitlines()[0].split()[:2] == ["ID", "PREFIX"]
    key_id = listed.stdout.splitlines()[1].split()[0]
    as_json = json.loads(gptactions("keys", "list", "--json", cwd=isolated).stdout)
    assert as_json[0]["id"] == key_id

    revoked = gptactions("keys", "revoke", key_id, cwd=isolated)
    again = gptactions("keys", "revoke", key_id, cwd=isolated)

    assert revoked.returncode == 0 and f"revoked {as_json[0]['prefix']}" in revoked.stdout
    assert again.returncode == 0 and "already revoked" in again.stdout, again.stdout


def test_a_prefix_shared_by_two_keys_is_refused_with_their_ids(isolated: Path) -> None:
    # Two keys stored by an older version with the same 12 first characters of their secret.
    assert gptactions("db", "upgrade", cwd=isolated).returncode == 0
    with sqlite3.connect(isolated / "server.db") as database:
        for key_id in ("legacyaaaa", "legacybbbb"):
            database.execute(
                "INSERT INTO api_keys (id, name, prefix, key_hash, tenant, scopes, created_at)"
                " VALUES (?, 'old', 'gpta_company', ?, 'default', 'chat', CURRENT_TIMESTAMP)",
                (key_id, key_id * 4),
            )

    refused = gptactions("keys", "revoke", "gpta_company", cwd=isolated)

    assert refused.returncode == 1
    assert "legacyaaaa" in refused.stderr and "legacybbbb" in refused.stderr
    listed = json.loads(gptactions("keys", "list", "--json", cwd=isolated).stdout)
    assert [key["revokedAt"] for key in listed] == [None, None]


def test_a_bad_scope_is_refused(isolated: Path) -> None:
    result = gptactions("keys", "create", "--name", "x", "--scope", "root", cwd=isolated)
    assert result.returncode == 2
    assert "root" in result.stderr


def test_db_upgrade_and_openapi(isolated: Path) -> None:
    assert gptactions("db", "upgrade", cwd=isolated).returncode == 0
    assert (isolated / "server.db").exists()
    printed = gptactions(
        "openapi", cwd=isolated, env={"GPTACTIONS_PUBLIC_URL": "https://gpt.example.org"}
    )
    document = yaml.safe_load(printed.stdout)
    validate(document)
    assert document["servers"][0]["url"] == "https://gpt.example.org"


def test_openapi_for_some_scopes_and_its_readiness_check(isolated: Path) -> None:
    gpt = json.loads(
        gptactions("openapi", "--format", "json", "--scopes", "chat,actions", cwd=isolated).stdout
    )
    validate(gpt)
    assert "/api/v1/gpt/logs" not in gpt["paths"] and "/api/v1/gpt/respond" in gpt["paths"]
    assert gpt["servers"] == [{"url": "http://127.0.0.1:8000", "description": "This server"}]
    refused = gptactions("openapi", "--scopes", "chat,root", cwd=isolated)
    assert refused.returncode == 2 and "unknown scope(s): root" in refused.stderr

    # Unconfigured: a readable list of what to fix, and exit 1.
    checked = gptactions("openapi", "--check", cwd=isolated)
    assert checked.returncode == 1, checked.stderr
    assert "error: [servers] No https server URL (found http://127.0.0.1:8000)." in checked.stdout
    assert "warning: [logs] The document offers GET /api/v1/gpt/logs" in checked.stdout
    assert "fix: Set GPTACTIONS_PRIVACY_CONTACT" in checked.stdout
    assert checked.stdout.rstrip().endswith("(1 error(s), 2 warning(s)).")
    # A key a GPT could be given, holding logs, is named.
    assert gptactions("keys", "create", "--name", "my-gpt", cwd=isolated).returncode == 0
    checked = gptactions("openapi", "--check", "--scopes", "chat,actions", cwd=isolated)
    assert "The key 'my-gpt' has the `logs` scope" in checked.stdout
    # An OAuth GPT holds no key: the keys are not its concern.
    checked = gptactions("openapi", "--check", "--auth", "oauth", cwd=isolated)
    assert "my-gpt" not in checked.stdout and "[servers]" in checked.stdout

    # Configured for a public GPT: ready, exit 0.
    ready = {
        "GPTACTIONS_PUBLIC_URL": "https://gpt.example.org",
        "GPTACTIONS_PRIVACY_CONTACT": "privacy@example.org",
        "GPTACTIONS_UPSTREAM_TIMEOUT": "30",
    }
    isolated_ready = isolated / "ready"
    isolated_ready.mkdir()
    checked = gptactions(
        "openapi", "--check", "--scopes", "chat,actions", cwd=isolated_ready, env=ready
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.startswith("Ready")
    slow = gptactions(
        "openapi",
        "--check",
        "--scopes",
        "chat,actions",
        cwd=isolated_ready,
        env=ready
        | {"GPTACTIONS_UPSTREAM_URL": "http://127.0.0.1:9/v1", "GPTACTIONS_UPSTREAM_TIMEOUT": "90"},
    )
    assert slow.returncode == 1 and "GPTACTIONS_UPSTREAM_TIMEOUT is 90 s" in slow.stdout


REVISION_0001_TABLES = {"alembic_version", "api_keys", "conversations", "interactions"}


def test_db_upgrade_says_what_it_did(isolated: Path) -> None:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    created = gptactions("db", "upgrade", cwd=isolated)
    again = gptactions("db", "upgrade", cwd=isolated)
    assert created.stdout.strip() == (
        f"created the database at {isolated / 'server.db'} (schema revision {head})"
    )
    assert "already at revision" in again.stdout and "created" not in again.stdout

    # Back to revision 0001 through every migration's own downgrade.
    engine = sqlalchemy.create_engine(f"sqlite:///{isolated / 'server.db'}")
    with engine.begin() as connection:
        alembic_command.downgrade(alembic_config(connection), "0001")
    engine.dispose()
    with sqlite3.connect(isolated / "server.db") as database:
        tables = database.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        ).fetchall()
        triggers = database.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        assert triggers.fetchall() == []  # the search's, which keep its FTS5 table in step
    assert {table for (table,) in tables} == REVISION_0001_TABLES
    upgraded = gptactions("db", "upgrade", cwd=isolated)
    assert f"revision 0001 to {head}" in upgraded.stdout


def test_serve_on_a_busy_port_says_so_before_doing_anything(isolated: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = gptactions("serve", "--port", str(port), cwd=isolated)
    assert result.returncode == 1
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr
    assert "serving on" not in result.stdout and "Traceback" not in result.stderr
    assert not (isolated / "server.db").exists(), "it migrated before finding the port taken"


@pytest.mark.model
def test_chat_talks_to_the_model(isolated: Path) -> None:
    result = gptactions_process(
        "chat", "--max-tokens", "16", cwd=isolated, stdin="What is the capital of France?\n\n"
    )
    assert result.returncode == 0, result.stderr
    assert "model> " in result.stdout and "Paris" in result.stdout


@pytest.mark.model
def test_first_start_creates_and_prints_an_admin_key_once(isolated: Path) -> None:
    with serve(isolated, key="", env={"GPTACTIONS_API_KEY": ""}) as server:
        printed = server.log.read_text()
    secrets = [w for w in printed.split() if w.startswith("gpta_")]
    assert len(secrets) == 1
    with serve(isolated, key="", env={"GPTACTIONS_API_KEY": ""}) as server:
        assert "gpta_" not in server.log.read_text()  # not on the second start
        status = httpx.get(
            f"{server.url}/api/v1/gpt/status", headers={"Authorization": f"Bearer {secrets[0]}"}
        )
        assert status.status_code == 200


def test_production_refuses_to_generate_and_print_a_key(isolated: Path) -> None:
    result = gptactions(
        "serve", "--port", "1", cwd=isolated, env={"GPTACTIONS_ENVIRONMENT": "production"}
    )
    assert result.returncode == 1
    assert "GPTACTIONS_API_KEY" in result.stderr
    assert "gpta_" not in result.stdout + result.stderr


def test_serve_names_a_typod_variable_before_anything_else(isolated: Path) -> None:
    (isolated / "actions.yaml").write_text("actions:\n  - name: broken\n")  # then it stops
    environment = {
        "GPTACTIONS_LOG_RETENTON": "30d",
        "GPTACTIONS_ACTIONS_FILE": str(isolated / "actions.yaml"),
    }
    result = gptactions("serve", "--port", "1", cwd=isolated, env=environment)
    assert result.returncode == 1
    first = result.stderr.splitlines()[0]
    assert first.endswith(
        " WARNING:  gptactions: GPTACTIONS_LOG_RETENTON in the environment is not a setting and "
        "is ignored (did you mean GPTACTIONS_LOG_RETENTION?)"
    )
    # Timestamped as every line of the server's log.
    assert datetime.fromisoformat(first.split(" ", 1)[0]).tzinfo is not None


def test_an_invalid_actions_file_is_a_clear_error_not_a_traceback(isolated: Path) -> None:
    (isolated / "actions.yaml").write_text("actions:\n  - name: broken\n")
    for command in (("openapi",), ("serve", "--port", "1")):
        result = gptactions(
            *command, cwd=isolated, env={"GPTACTIONS_ACTIONS_FILE": str(isolated / "actions.yaml")}
        )
        assert result.returncode == 1
        assert "actions.yaml" in result.stderr and "broken" in result.stderr
        assert "Traceback" not in result.stderr


def test_users_and_oauth_clients(isolated: Path) -> None:
    created = gptactions(
        "users", "create", "--username", "alice", cwd=isolated, stdin="pw-12345678\n"
    )
    assert created.returncode == 0, created.stderr
    short = gptactions("users", "create", "--username", "bob", cwd=isolated, stdin="short\n")
    assert short.returncode != 0 and "at least 8" in short.stderr
    silent = gptactions("users", "create", "--username", "bob", cwd=isolated, stdin="")
    assert silent.returncode != 0 and "no password on standard input" in silent.stderr
    listed = gptactions("users", "list", "--json", cwd=isolated)
    assert [u["username"] for u in json.loads(listed.stdout)] == ["alice"]
    header, row = gptactions("users", "list", cwd=isolated).stdout.splitlines()
    assert header.index("DISABLED") == row.rindex(" -") + 1  # the columns line up
    assert gptactions("users", "disable", "alice", cwd=isolated).returncode == 0
    assert json.loads(gptactions("users", "list", "--json", cwd=isolated).stdout)[0]["disabledAt"]
    assert gptactions("users", "delete", "alice", cwd=isolated).returncode == 0
    assert gptactions("users", "delete", "alice", cwd=isolated).returncode != 0

    callback = "https://chat.openai.com/aip/g-abc/oauth/callback"
    made = gptactions(
        "oauth", "clients", "create", "--name", "GPT", "--redirect-uri", callback,
        "--scope", "chat", cwd=isolated,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    *_, id_line, secret_line = made.stdout.splitlines()
    client_id = id_line.removeprefix("client_id=")
    assert id_line.startswith("client_id=") and secret_line.startswith("client_secret=gptcs_")
    clients = json.loads(gptactions("oauth", "clients", "list", "--json", cwd=isolated).stdout)
    assert clients[0]["clientId"] == client_id and clients[0]["redirectUris"] == [callback]
    assert secret_line.removeprefix("client_secret=") not in json.dumps(clients)
    assert gptactions("oauth", "clients", "revoke", client_id, cwd=isolated).returncode == 0
    # A public client has no secret: no client_secret line, empty or not; it uses PKCE.
    public = gptactions(
        "oauth", "clients", "create", "--name", "Console", "--public",
        "--redirect-uri", "http://localhost:8000/", cwd=isolated,
    )  # fmt: skip
    assert public.returncode == 0, public.stderr
    assert public.stdout.splitlines()[-1].startswith("client_id=")
    assert "client_secret" not in public.stdout + public.stderr
    assert "public client" in public.stderr and "PKCE" in public.stderr
    bad = gptactions(
        "oauth", "clients", "create", "--name", "GPT", "--redirect-uri", "http://x.example/cb",
        cwd=isolated,
    )  # fmt: skip
    assert bad.returncode != 0 and "https" in bad.stderr


def test_a_reader_that_stops_early_is_not_a_database_outage(isolated: Path) -> None:
    """`gptactions logs export | head -1`: the closed pipe ends the command quietly, without
    blaming the database."""
    assert gptactions("keys", "create", "--name", "ci", cwd=isolated).returncode == 0
    environment = {k: v for k, v in os.environ.items() if not k.startswith("GPTACTIONS_")}
    environment["GPTACTIONS_DATABASE_URL"] = f"sqlite:///{isolated / 'server.db'}"
    for command in (("keys", "list"), ("logs", "export", "--format", "csv")):
        read_end, write_end = os.pipe()
        os.close(read_end)  # the reader is gone before the command writes its first line
        try:
            result = subprocess.run(
                [sys.executable, "-m", "gptactions", *command],
                cwd=isolated,
                env=environment,
                stdout=write_end,
                stderr=subprocess.PIPE,
                text=True,
                timeout=120,
            )
        finally:
            os.close(write_end)
        assert result.returncode == 1, result.stderr
        assert "unreachable" not in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "command",
    [
        ("keys", "list"),
        ("users", "list"),
        ("oauth", "clients", "list"),
        ("actions", "run", "sentiment", "--param", "text=fine"),
    ],
)
def test_a_database_that_does_not_answer_is_one_line_not_a_traceback(
    isolated: Path, command: tuple[str, ...]
) -> None:
    with socket.socket() as unused:  # a port nothing listens on: the connection is refused
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    url = f"postgresql://gptactions:secret-password@127.0.0.1:{port}/nothing"
    result = gptactions(*command, cwd=isolated, env={"GPTACTIONS_DATABASE_URL": url})
    assert result.returncode == 1
    last = result.stderr.splitlines()[-1]  # `actions run` logs the outage first, as a server does
    assert last.startswith("Error: the database postgresql+asyncpg://gptactions:***@")
    assert "is unreachable: " in last and "Connect call failed" in last
    assert "Traceback" not in result.stderr and "secret-password" not in result.stderr


@pytest.mark.postgres
def test_a_database_or_role_postgresql_does_not_have_is_one_line(
    isolated: Path, postgres_url: str
) -> None:
    """A server that answers but refuses the connection (no such database, no such role) is
    the same one line as one that does not answer, naming what it said."""
    base = postgres_url.rsplit("/", 1)[0]
    user_less = base.replace("postgresql://", "postgresql://no_such_role_here@", 1)
    if "@" in base.split("//", 1)[1]:
        user_less = base.split("//", 1)[0] + "//no_such_role_here@" + base.split("@", 1)[1]
    for url, said in (
        (f"{base}/no_such_database_here", 'database "no_such_database_here" does not exist'),
        (f"{user_less}/postgres", 'role "no_such_role_here" does not exist'),
    ):
        result = gptactions("keys", "list", cwd=isolated, env={"GPTACTIONS_DATABASE_URL": url})
        assert result.returncode == 1, result
        assert "Traceback" not in result.stderr, result.stderr
        [line] = result.stderr.splitlines()
        assert line.startswith("Error: the database postgresql+asyncpg://") and said in line
    # libpq's sslmode, as most PostgreSQL URLs carry it, is asyncpg's ssl (it was a TypeError).
    plain = f"{postgres_url}?sslmode=disable"
    listed = gptactions("keys", "list", cwd=isolated, env={"GPTACTIONS_DATABASE_URL": plain})
    assert listed.returncode == 0 and "Traceback" not in listed.stderr, listed.stderr


def test_a_mistyped_setting_is_named_not_a_traceback(isolated: Path) -> None:
    env = {
        "GPTACTIONS_PORT": "eighty",
        "GPTACTIONS_RATE_LIMIT": "lots",
        "GPTACTIONS_LOG_RETENTION": "99999999d",  # no date is that far back
        "GPTACTIONS_OAUTH_ACCESS_TOKEN_LIFETIME": "999999999999",  # nor that far ahead
    }
    result = gptactions("keys", "list", cwd=isolated, env=env)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    header, *problems = result.stderr.splitlines()
    assert header == "Error: invalid settings (environment or .env):"
    assert sorted(problems) == [
        "  GPTACTIONS_LOG_RETENTION: '99999999d' is too long: at most 36500d (100 years)",
        "  GPTACTIONS_OAUTH_ACCESS_TOKEN_LIFETIME: Input should be less than or equal to 31622400",
        "  GPTACTIONS_PORT: Input should be a valid integer, unable to parse string as an integer",
        "  GPTACTIONS_RATE_LIMIT: not a rate: 'lots'; write e.g. 60/minute",
    ]


def test_the_database_url_empty_is_the_default_and_a_wrong_one_is_named(isolated: Path) -> None:
    """`GPTACTIONS_DATABASE_URL=` (a compose file's unset variable) is the default SQLite file;
    a URL that is none, or of a database gptactions does not run on, is a settings error."""
    empty = gptactions("keys", "list", cwd=isolated, env={"GPTACTIONS_DATABASE_URL": ""})
    assert empty.returncode == 0, empty.stderr
    assert (isolated / "gptactions.db").exists()
    for url, problem in (
        ("nonsense", "not a database URL: use sqlite:///path/to/file.db or postgresql://"),
        ("mysql://root:secret-password@db/app", "mysql is not supported: use sqlite or postgresql"),
        (
            "postgresql://u:secret-password@db/app?connect_timeout=3",
            "connect_timeout: not an option of this server's PostgreSQL driver (asyncpg)",
        ),
    ):
        wrong = gptactions("keys", "list", cwd=isolated, env={"GPTACTIONS_DATABASE_URL": url})
        assert wrong.returncode == 1
        assert "Traceback" not in wrong.stderr and "secret-password" not in wrong.stderr
        assert wrong.stderr.splitlines()[1].startswith(f"  GPTACTIONS_DATABASE_URL: {problem}")


def test_serve_names_a_model_file_that_is_not_there_and_unparsable_backends(
    isolated: Path,
) -> None:
    missing = isolated / "no-such-model.gguf"
    result = gptactions("serve", cwd=isolated, env={"GPTACTIONS_MODEL_PATH": str(missing)})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"Error: the model file of backend 'local' is not there: {missing} (GPTACTIONS_MODEL_PATH)"
    )
    garbled = gptactions("keys", "list", cwd=isolated, env={"GPTACTIONS_BACKENDS": '[{"name": '})
    assert garbled.returncode == 1 and "Traceback" not in garbled.stderr
    assert garbled.stderr.splitlines() == [
        "Error: invalid settings (environment or .env):",
        "  GPTACTIONS_BACKENDS: not valid JSON",
    ]


def test_urls_that_cannot_work_are_named_before_anything_starts(isolated: Path) -> None:
    env = {"GPTACTIONS_PUBLIC_URL": "ftp://gpt.example.com", "GPTACTIONS_REDIS_URL": "cache:6379"}
    result = gptactions("keys", "list", cwd=isolated, env=env)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        "Error: invalid settings (environment or .env):",
        "  GPTACTIONS_PUBLIC_URL: not an http(s) URL with a host, e.g. https://gpt.example.com",
        "  GPTACTIONS_REDIS_URL: not a Redis URL: use redis://host:6379/0, rediss:// or unix://",
    ]


def test_a_setting_that_needs_another_names_both_without_a_placeholder(isolated: Path) -> None:
    env = {"GPTACTIONS_OIDC_ISSUER": "https://idp.example.com"}
    result = gptactions("keys", "list", cwd=isolated, env=env)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        "Error: invalid settings (environment or .env):",
        "  GPTACTIONS_OIDC_ISSUER needs GPTACTIONS_OIDC_CLIENT_ID",
    ]
    env = {"GPTACTIONS_DEFAULT_MAX_TOKENS": "5000"}
    above = gptactions("keys", "list", cwd=isolated, env=env)
    assert above.returncode == 1 and above.stderr.splitlines()[1:] == [
        "  GPTACTIONS_DEFAULT_MAX_TOKENS (5000) is above GPTACTIONS_MAX_TOKENS_LIMIT (1024): "
        "lower it, or raise the limit"
    ]


def test_a_limit_below_the_default_max_tokens_lowers_the_default() -> None:
    """Only the limit set, below the default's 256: the default is the limit, so that the
    document never says a default above its maximum."""
    assert Settings(max_tokens_limit=64).default_max_tokens == 64
    assert Settings(max_tokens_limit=64, default_max_tokens=32).default_max_tokens == 32


def test_what_serve_logs_before_the_server_starts_is_timestamped(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The start-up's own records (here: a changed GPTACTIONS_API_KEY revoking the key it
    imported before) are written as the server's log writes every line."""
    monkeypatch.setattr("gptactions.workers.run", lambda settings: None)
    first = {"GPTACTIONS_API_KEY": "gpta_" + "a" * 32}
    assert gptactions("serve", "--port", "0", cwd=isolated, env=first).returncode == 0
    second = gptactions(
        "serve", "--port", "0", cwd=isolated, env={"GPTACTIONS_API_KEY": "gpta_" + "b" * 32}
    )
    assert second.returncode == 0, second.stderr
    (changed,) = [line for line in second.stderr.splitlines() if "API_KEY changed" in line]
    stamp, rest = changed.split(" ", 1)
    assert datetime.fromisoformat(stamp).tzinfo is not None
    assert rest.startswith("WARNING:  gptactions.services.keys: GPTACTIONS_API_KEY changed")
    served = [line for line in second.stderr.splitlines() if "starting on" in line]
    assert served and datetime.fromisoformat(served[0].split(" ", 1)[0])


def test_serve_logs_before_the_server_starts_at_the_servers_level(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GPTACTIONS_LOG_LEVEL=warning hid the server's INFO lines but not start-up's own (the
    database created, the key imported, "starting on"); the new admin key is still shown."""
    monkeypatch.setattr("gptactions.workers.run", lambda settings: None)
    quiet = gptactions(
        "serve", "--port", "0", cwd=isolated, env={"GPTACTIONS_LOG_LEVEL": "warning"}
    )
    assert quiet.returncode == 0, quiet.stderr
    assert "An admin API key was created" in quiet.stdout
    assert [line for line in quiet.stderr.splitlines() if "INFO" in line] == []
    again = gptactions("serve", "--port", "0", cwd=isolated)  # the default level: info
    assert any("INFO" in line and "starting on" in line for line in again.stderr.splitlines())
