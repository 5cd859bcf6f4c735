"""The action registry: named handlers, each with a description and a parameter schema."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import jsonschema

from gptactions.llm.base import Usage
from gptactions.llm.router import BackendRouter


@dataclass(frozen=True)
class ActionContext:
    """What a handler may use: the model router, and the model the request named."""

    router: BackendRouter
    model: str | None = None


@dataclass(frozen=True)
class ActionOutcome:
    """What a handler returns. `data` holds the parsed value of structured outputs."""

    success: bool
    result: str
    data: Any = None
    usage: Usage = field(default_factory=Usage)
    backend: str = ""
    model: str = ""


Handler = Callable[[ActionContext, dict[str, Any]], Awaitable[ActionOutcome]]


@dataclass(frozen=True)
class ActionDefinition:
    """A named action: what it does, what parameters it takes, and the code that runs it."""

    name: str
    description: str
    parameters: dict[str, Any]
    handler: Handler
    builtin: bool = True


@dataclass(frozen=True)
class ParameterProblem:
    """One way the parameters break the action's schema; `pointer` is a JSON pointer."""

    pointer: str
    message: str


class UnknownAction(LookupError):
    """No action by that name."""

    def __init__(self, name: str, available: Iterable[str]) -> None:
        super().__init__(name)
        self.name = name
        self.available = sorted(available)


class ActionRegistry:
    """The table of actions, by name."""

    def __init__(self, definitions: Iterable[ActionDefinition] = ()) -> None:
        self._actions: dict[str, ActionDefinition] = {}
        for definition in definitions:
            self.register(definition)

    def register(self, definition: ActionDefinition, *, replace: bool = False) -> None:
        """Add an action; replacing one needs `replace=True`."""
        if definition.name in self._actions and not replace:
            raise ValueError(f"action {definition.name!r} is already registered")
        jsonschema.Draft202012Validator.check_schema(definition.parameters)
        self._actions[definition.name] = definition

    def get(self, name: str) -> ActionDefinition:
        """The action by name, or UnknownAction naming those available."""
        try:
            return self._actions[name]
        except KeyError:
            raise UnknownAction(name, self._actions) from None

    def __iter__(self) -> Any:
        return iter(sorted(self._actions.values(), key=lambda d: d.name))

    def __len__(self) -> int:
        return len(self._actions)

    @property
    def names(self) -> list[str]:
        """Every action's name, sorted."""
        return sorted(self._actions)

    def validate(self, name: str, parameters: dict[str, Any]) -> list[ParameterProblem]:
        """Every problem of `parameters` against the action's schema, each with a JSON pointer."""
        validator = jsonschema.Draft202012Validator(self.get(name).parameters)
        problems = []
        for error in sorted(validator.iter_errors(parameters), key=lambda e: list(e.path)):
            pointer = "/parameters" + "".join(
                "/" + str(p).replace("~", "~0").replace("/", "~1") for p in error.absolute_path
            )
            problems.append(ParameterProblem(pointer, error.message))
        return problems
