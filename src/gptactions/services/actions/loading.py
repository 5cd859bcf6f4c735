"""Loading the actions: the built-ins, and those of the actions file the settings name."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from gptactions.services.actions.builtin import BUILTIN_ACTIONS
from gptactions.services.actions.registry import ActionRegistry
from gptactions.services.actions.userdefined import ActionsFileError, load_actions_file

if TYPE_CHECKING:
    from gptactions.config import Settings


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
