"""Actions: a registry of named handlers that `POST /api/v1/gpt/actions` runs.

Built-in actions live in `builtin`, user-defined ones are read from a file by `userdefined`,
and `output` brings the model's replies into the promised form. The served document describes
them in `gptactions.api.openapi_actions`.
"""

from gptactions.services.actions.builtin import BUILTIN_ACTIONS
from gptactions.services.actions.registry import (
    ActionContext,
    ActionDefinition,
    ActionOutcome,
    ActionRegistry,
    UnknownAction,
)
from gptactions.services.actions.service import (
    InvalidParameters,
    build_registry,
    parse_parameter_options,
    registry_from_file,
    run_action,
)
from gptactions.services.actions.userdefined import ActionsFileError, load_actions_file

__all__ = [
    "BUILTIN_ACTIONS",
    "ActionContext",
    "ActionDefinition",
    "ActionOutcome",
    "ActionRegistry",
    "ActionsFileError",
    "InvalidParameters",
    "UnknownAction",
    "build_registry",
    "load_actions_file",
    "parse_parameter_options",
    "registry_from_file",
    "run_action",
]
