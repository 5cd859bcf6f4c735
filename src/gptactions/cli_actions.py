"""`gptactions actions`: list, check and run actions from the command line."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from gptactions.cli_database import unreachable

if TYPE_CHECKING:  # the commands import what they need: each one starts faster
    from gptactions.config import Settings
    from gptactions.runtime import Runtime
    from gptactions.services.actions import ActionCall, ActionOutcome, ActionRegistry


def load_registry(settings: Settings) -> ActionRegistry:
    """The actions the settings describe; an invalid actions file is a clean error, not a trace."""
    from gptactions.services.actions import ActionsFileError, build_registry

    try:
        return build_registry(settings)
    except ActionsFileError as error:
        raise click.ClickException(str(error)) from None


@click.group()
def actions() -> None:
    """List, check and run actions (built-in and from GPTACTIONS_ACTIONS_FILE)."""


@actions.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON, with schemas.")
def list_actions(as_json: bool) -> None:
    """List the actions: name, origin and description."""
    from gptactions.api.openapi_actions import describe_actions
    from gptactions.config import Settings

    registry = load_registry(Settings())
    if as_json:
        click.echo(json.dumps(describe_actions(registry), indent=2, ensure_ascii=False))
        return
    width = max(len(name) for name in registry.names)
    for definition in registry:
        origin = "built-in" if definition.builtin else "file"
        click.echo(f"{definition.name:<{width}}  {origin:<8}  {definition.description}")


@actions.command("check")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
def check(file: Path) -> None:
    """Check an actions file without starting the server; exit 1 if it is invalid."""
    from gptactions.services.actions import ActionsFileError, registry_from_file

    try:
        registry = registry_from_file(file)
    except ActionsFileError as error:
        raise click.ClickException(str(error)) from None
    defined = [d.name for d in registry if not d.builtin]
    click.echo(f"{file}: {len(defined)} action(s) OK: {', '.join(defined) or 'none'}")


@actions.command("run")
@click.argument("name")
@click.option(
    "--param",
    "-p",
    "pairs",
    multiple=True,
    metavar="KEY=VALUE",
    help="A parameter; repeat for more. Non-string values are read as JSON.",
)
@click.option("--params-json", metavar="JSON", help="All parameters as one JSON object.")
@click.option("--model", default=None, help="A configured backend's name (default: the default).")
@click.option("--json", "as_json", is_flag=True, help="Print success, result and data as JSON.")
def run(
    name: str, pairs: tuple[str, ...], params_json: str | None, model: str | None, as_json: bool
) -> None:
    """Run one action with the configured model (the embedded one by default).

    The run is checked like an API call and recorded in the log (userId `terminal`).
    """
    from gptactions.config import Settings
    from gptactions.llm.base import BackendError
    from gptactions.runtime import Runtime
    from gptactions.services.actions import ActionCall, parse_parameter_options
    from gptactions.services.errors import ServiceError
    from gptactions.store.outage import DatabaseUnavailable

    settings = Settings()
    runtime = Runtime(settings, registry=load_registry(settings))
    try:
        parameters = parse_parameter_options(runtime.actions.definition(name), pairs, params_json)
        call = ActionCall(name, parameters, model=model)
        runtime.actions.check(call)  # before the model loads, so a mistake is told at once
    except ServiceError as error:
        details = (f"  {p.pointer}: {p.message}" for p in error.details)
        raise click.UsageError("\n".join([error.message, *details])) from None
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    try:
        outcome = asyncio.run(_run(runtime, call))
    except (BackendError, ServiceError) as error:  # ServiceError: a template past its bounds
        raise click.ClickException(error.message) from None
    except DatabaseUnavailable as error:  # the run is logged, so it needs the database
        raise unreachable(error.location, error) from None
    if as_json:
        body = {"success": outcome.success, "result": outcome.result, "data": outcome.data}
        if outcome.warnings:
            body["warnings"] = list(outcome.warnings)
        click.echo(json.dumps(body, indent=2, ensure_ascii=False))
    else:
        for warning in outcome.warnings:  # a parameter ignored or taken in another's place
            click.echo(f"warning: {warning}", err=True)
        click.echo(outcome.result, err=not outcome.success)
    if not outcome.success:
        sys.exit(1)


async def _run(runtime: Runtime, call: ActionCall) -> ActionOutcome:
    from gptactions.services.keys import TERMINAL

    try:
        await runtime.open()
        runtime.require_database()  # the run is logged: no database, no asking the model
        return await runtime.actions.run(TERMINAL, call)
    finally:
        await runtime.close()
