"""Building the registry from the settings, and running one action from start to end."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gptactions.services.actions.builtin import BUILTIN_ACTIONS
from gptactions.services.actions.registry import (
    ActionContext,
    ActionDefinition,
    ActionOutcome,
    ActionRegistry,
)
from gptactions.services.actions.userdefined import ActionsFileError, load_actions_file
from gptactions.services.errors import Problem

if TYPE_CHECKING:
    from gptactions.config import Settings


class InvalidParameters(ValueError):
    """The parameters break the action's schema; `problems` says where and how."""

    def __init__(self, action: str, problems: list[Problem]) -> None:
        super().__init__(
            f"invalid parameters for action {action}: "
            + "; ".join(f"{p.pointer}: {p.message}" for p in problems)
        )
        self.action = action
        self.problems = problems


def registry_from_file(actions_file: Path | None) -> ActionRegistry:
    """The built-in actions plus those of `actions_file`; ActionsFileError if it is invalid."""
    registry = ActionRegistry(BUILTIN_ACTIONS)
    if actions_file is None:
        return registry
    for definition in load_actions_file(actions_file, registry.names):
        try:
            registry.register(definition, replace=definition.overrides)
        except ValueError as exc:  # the loader checks all this first; kept as a last guard
            raise ActionsFileError(actions_file, str(exc), definition.name) from exc
    return registry


def build_registry(settings: Settings) -> ActionRegistry:
    """The app's registry: the built-ins, and the actions of `settings.actions_file`."""
    return registry_from_file(settings.actions_file)


async def run_action(
    registry: ActionRegistry, context: ActionContext, name: str, parameters: Any
) -> ActionOutcome:
    """Validate the parameters and run the action; UnknownAction or InvalidParameters if not."""
    definition = registry.get(name)
    problems = registry.validate(name, parameters)
    if problems:
        raise InvalidParameters(name, problems)
    return await definition.handler(context, dict(parameters))


def parse_parameter_options(
    definition: ActionDefinition, pairs: Iterable[str], params_json: str | None = None
) -> dict[str, Any]:
    """Parameters from the command line: a JSON object, then `key=value` pairs over it.

    A value is taken as text when the schema says the property is a string, and as JSON
    otherwise (so `maxWords=50` is a number and `labels=["a","b"]` a list); a value that is not
    JSON stays text, for the schema check to report.
    """
    parameters: dict[str, Any] = {}
    if params_json:
        try:
            loaded = json.loads(params_json)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--params-json is not valid JSON: {exc.msg}") from None
        if not isinstance(loaded, dict):
            raise ValueError("--params-json must be a JSON object")
        parameters.update(loaded)
    properties = definition.parameters.get("properties", {})
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--param {pair!r} is not of the form key=value")
        kind = (
            properties.get(key, {}).get("type") if isinstance(properties.get(key), dict) else None
        )
        if kind == "string":
            parameters[key] = raw
            continue
        try:
            parameters[key] = json.loads(raw)
        except json.JSONDecodeError:
            parameters[key] = raw
    return parameters
