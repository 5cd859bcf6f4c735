"""Actions: a registry of named handlers that `POST /api/v1/gpt/actions` runs.

Built-in actions live in `builtin`, user-defined ones are read from a file by `userdefined`,
`output` brings the model's replies into the promised form, and `openapi` describes it all for
the served document.
"""

from gptactions.services.actions.builtin import BUILTIN_ACTIONS
from gptactions.services.actions.openapi import (
    action_request_schemas,
    describe_actions,
    merge_action_schemas,
    to_openapi_schema,
)
from gptactions.services.actions.registry import (
    ActionContext,
    ActionDefinition,
    ActionOutcome,
    ActionRegistry,
    ParameterProblem,
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
    "ParameterProblem",
    "UnknownAction",
    "action_request_schemas",
    "build_registry",
    "describe_actions",
    "load_actions_file",
    "merge_action_schemas",
    "parse_parameter_options",
    "registry_from_file",
    "run_action",
    "to_openapi_schema",
]
