"""`gptactions actions list | check | run`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from gptactions.cli import cli
from gptactions.config import Settings
from gptactions.services.actions import parse_parameter_options, registry_from_file
from gptactions.services.interactions import InteractionLog, LogEntry, LogQuery
from gptactions.services.keys import TERMINAL
from gptactions.store.db import Database

from .conftest import HAIKU_YAML

WriteFile = Callable[[str, str], Path]
BAD = "actions: [{name: a, description: x}]\n"


def test_list_shows_builtins_and_file_actions(write_file: WriteFile) -> None:
    path = write_file("actions.yaml", HAIKU_YAML)
    result = CliRunner().invoke(
        cli, ["actions", "list"], env={"GPTACTIONS_ACTIONS_FILE": str(path)}
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == 10
    assert any(line.split()[:2] == ["haiku", "file"] for line in lines)
    assert any(line.split()[:2] == ["summarize", "built-in"] for line in lines)


def test_list_as_json_has_the_schemas() -> None:
    result = CliRunner().invoke(cli, ["actions", "list", "--json"])
    listed = json.loads(result.output)["actions"]
    assert [a["name"] for a in listed][:2] == ["answer", "classify"]
    assert listed[0]["parameters"]["required"] == ["question"]


def test_check_accepts_a_valid_file(write_file: WriteFile) -> None:
    path = write_file("actions.yaml", HAIKU_YAML)
    result = CliRunner().invoke(cli, ["actions", "check", str(path)])
    assert result.exit_code == 0
    assert result.output == f"{path}: 1 action(s) OK: haiku\n"


def test_check_and_start_up_report_an_invalid_file_alike(write_file: WriteFile) -> None:
    path = write_file("bad.yaml", BAD)
    message = f"Error: {path}: action a: needs a 'prompt' (a non-empty Jinja2 template)\n"
    checked = CliRunner().invoke(cli, ["actions", "check", str(path)])
    assert (checked.exit_code, checked.output) == (1, message)
    served = CliRunner().invoke(cli, ["serve"], env={"GPTACTIONS_ACTIONS_FILE": str(path)})
    assert (served.exit_code, served.output) == (1, message)
    listed = CliRunner().invoke(
        cli, ["actions", "list"], env={"GPTACTIONS_ACTIONS_FILE": str(path)}
    )
    assert (listed.exit_code, listed.output) == (1, message)


def test_run_refuses_unknown_actions_and_bad_parameters() -> None:
    unknown = CliRunner().invoke(cli, ["actions", "run", "summarise", "-p", "text=x"])
    assert unknown.exit_code == 2
    assert "Invalid input: action: must be one of: answer, classify" in unknown.output
    bad = CliRunner().invoke(cli, ["actions", "run", "summarize", "-p", "maxWords=0"])
    assert bad.exit_code == 2
    assert "/parameters/maxWords" in bad.output and "/parameters/text: is required" in bad.output
    malformed = CliRunner().invoke(cli, ["actions", "run", "summarize", "-p", "text"])
    assert malformed.exit_code == 2 and "key=value" in malformed.output
    model = CliRunner().invoke(cli, ["actions", "run", "sentiment", "-p", "t=x", "--model", "gpt"])
    assert model.exit_code == 2


def logged() -> list[LogEntry]:
    """The log of the database the command line used, oldest first."""

    async def read() -> list[LogEntry]:
        database = Database(Settings().database_url)
        try:
            return (await InteractionLog(database).page(TERMINAL, LogQuery())).entries[::-1]
        finally:
            await database.close()

    return asyncio.run(read())


def test_a_run_that_fails_is_logged_like_an_api_call() -> None:
    down = {
        "GPTACTIONS_UPSTREAM_URL": "http://127.0.0.1:9/v1",
        "GPTACTIONS_UPSTREAM_MODEL": "m",
        "GPTACTIONS_FALLBACK": "none",
    }
    result = CliRunner().invoke(cli, ["actions", "run", "sentiment", "-p", "text=ok"], env=down)
    assert result.exit_code == 1 and "unreachable" in result.output
    [entry] = logged()
    assert (entry.kind, entry.action, entry.status) == ("action", "sentiment", "error")
    assert entry.user_id == "terminal" and entry.error and "unreachable" in entry.error


def test_parameter_options_follow_the_schema() -> None:
    classify = registry_from_file(None).get("classify")
    params = parse_parameter_options(
        classify,
        ["text=42", 'labels=["a", "b"]', "multiLabel=true", "extra=not json"],
        '{"text": "overridden", "labels": []}',
    )
    assert params == {"text": "42", "labels": ["a", "b"], "multiLabel": True, "extra": "not json"}
    with pytest.raises(ValueError, match="JSON object"):
        parse_parameter_options(classify, [], "[1]")
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_parameter_options(classify, [], "{")


@pytest.mark.model
def test_run_with_the_embedded_model(write_file: WriteFile) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "actions",
            "run",
            "classify",
            "-p",
            "text=The team won the final.",
            "-p",
            'labels=["sports", "politics"]',
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert body["success"] is True and body["result"] in ("sports", "politics")
    assert body["data"] == body["result"] and "warnings" not in body

    path = write_file("actions.yaml", HAIKU_YAML)
    haiku = CliRunner().invoke(
        cli,
        ["actions", "run", "haiku", "--params-json", '{"topic": "rain"}'],
        env={"GPTACTIONS_ACTIONS_FILE": str(path)},
    )
    assert haiku.exit_code == 0 and haiku.output.strip()
    runs = [(e.kind, e.action, e.status, e.user_id) for e in logged()]
    assert runs == [("action", a, "ok", "terminal") for a in ("classify", "haiku")]
    # A parameter the action does not take is ignored, and said so, as the API says it.
    extra = CliRunner().invoke(
        cli, ["actions", "run", "sentiment", "-p", "text=Great!", "-p", "tone=loud"]
    )
    assert extra.exit_code == 0, extra.output
    assert "warning: parameters/tone is not a parameter of sentiment and was ignored" in (
        extra.stderr
    )
