"""The command line, run as a user runs it: `python -m gptactions ...` in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml
from openapi_spec_validator import validate

from tests.serving import serve


def gptactions(
    *args: str, cwd: Path, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("GPTACTIONS_")}
    environment["GPTACTIONS_DATABASE_URL"] = f"sqlite:///{cwd / 'server.db'}"
    return subprocess.run(
        [sys.executable, "-m", "gptactions", *args],
        cwd=cwd,
        env=environment | (env or {}),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_help_lists_every_command(isolated: Path) -> None:
    result = gptactions("--help", cwd=isolated)
    assert result.returncode == 0
    for command in ("serve", "keys", "db", "openapi", "chat"):
        assert command in result.stdout


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


@pytest.mark.model
def test_chat_talks_to_the_model(isolated: Path) -> None:
    result = gptactions(
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


def test_an_invalid_actions_file_is_a_clear_error_not_a_traceback(isolated: Path) -> None:
    (isolated / "actions.yaml").write_text("actions:\n  - name: broken\n")
    for command in (("openapi",), ("serve", "--port", "1")):
        result = gptactions(
            *command, cwd=isolated, env={"GPTACTIONS_ACTIONS_FILE": str(isolated / "actions.yaml")}
        )
        assert result.returncode == 1
        assert "actions.yaml" in result.stderr and "broken" in result.stderr
        assert "Traceback" not in result.stderr
