"""The README documents every setting and every command, and starts with the two commands."""

from __future__ import annotations

from pathlib import Path

from gptactions.cli import cli
from gptactions.config import Settings

README = (Path(__file__).parents[1] / "README.md").read_text()


def test_every_setting_is_documented() -> None:
    missing = [
        f"GPTACTIONS_{name.upper()}"
        for name in Settings.model_fields
        if f"`GPTACTIONS_{name.upper()}`" not in README
    ]
    assert missing == []


def test_every_command_is_documented() -> None:
    assert cli.commands
    for name in cli.commands:
        assert f"gptactions {name}" in README, name


def test_the_readme_starts_with_the_two_commands() -> None:
    block = README.split("```sh\n", 1)[1].split("```", 1)[0].strip().splitlines()
    assert [line.split()[0:2] for line in block] == [["make", "run"], ["make", "test"]]


def test_the_deploy_guide_shows_the_nginx_configuration_the_cluster_tests_run() -> None:
    docs = Path(__file__).parents[1] / "docs"
    template = (docs / "nginx.conf.template").read_text()
    assert f"```nginx\n{template}```\n" in (docs / "deploy.md").read_text()
