"""Actions: a registry of named handlers that `POST /api/v1/gpt/actions` runs."""

from gptactions.services.actions.builtin import BUILTIN_ACTIONS
from gptactions.services.actions.registry import (
    ActionContext,
    ActionDefinition,
    ActionOutcome,
    ActionRegistry,
    ParameterProblem,
    UnknownAction,
)

__all__ = [
    "BUILTIN_ACTIONS",
    "ActionContext",
    "ActionDefinition",
    "ActionOutcome",
    "ActionRegistry",
    "ParameterProblem",
    "UnknownAction",
]
