"""Actions: a registry of named handlers that `POST /api/v1/gpt/actions` runs.

`service` runs them for the API and the command line alike (checked, and recorded in the log),
`registry` holds them by name, `loading` builds the registry from the built-ins (`builtin`) and
the actions file (`userdefined`), and `output` brings the model's replies into the promised form.
The served document describes them in `gptactions.api.openapi_actions`.
"""

from gptactions.services.actions.builtin import BUILTIN_ACTIONS
from gptactions.services.actions.loading import build_registry, registry_from_file
from gptactions.services.actions.registry import (
    ActionContext,
    ActionDefinition,
    ActionOutcome,
    ActionRegistry,
    UnknownAction,
)
from gptactions.services.actions.service import ActionCall, ActionService, parse_parameter_options
from gptactions.services.actions.userdefined import ActionsFileError, load_actions_file

__all__ = [
    "BUILTIN_ACTIONS",
    "ActionCall",
    "ActionContext",
    "ActionDefinition",
    "ActionOutcome",
    "ActionRegistry",
    "ActionService",
    "ActionsFileError",
    "UnknownAction",
    "build_registry",
    "load_actions_file",
    "parse_parameter_options",
    "registry_from_file",
]
