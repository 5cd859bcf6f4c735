"""The action registry: named handlers, each with a description and a parameter schema."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import jsonschema

from gptactions.llm.base import Usage
from gptactions.llm.router import BackendRouter
from gptactions.services.actions.parameters import PreparedParameters, prepare_parameters
from gptactions.services.errors import ECMA_WHITESPACE_ESCAPED, Problem, json_pointer
from gptactions.services.templates import TemplateRenderer

ACTION_NAME_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
"""What an action's name may be: it appears in URLs' bodies, schema names and the OpenAPI enum."""


@dataclass(frozen=True)
class ActionContext:
    """What a handler may use: the model router, the model the request named, the most tokens
    any one generation may take (the server's `max_tokens_limit`), the renderer of prompt
    templates (needed by user-defined actions only), and the loop time by which generation must
    end (`GenerationRequest.deadline`). `max_tokens` is also the request's own `maxTokens`
    when that is less; `server_max_tokens` is the server's limit alone, all that caps a choice
    output (a label is never cut by the request's `maxTokens`). `cache_scope` is the caller's
    (`Principal.cache_scope`, `GenerationRequest.cache_scope`)."""

    router: BackendRouter
    model: str | None = None
    max_tokens: int | None = None
    templates: TemplateRenderer | None = None
    deadline: float | None = None
    server_max_tokens: int | None = None
    cache_scope: str = ""


@dataclass(frozen=True)
class ActionOutcome:
    """What a handler returns. `data` holds the parsed value of structured outputs;
    `finish_reason` how the model's last generation ended (None when no model generated);
    `warnings` what the caller should know of how the call was read (a parameter ignored, a
    default chosen); `truncated` whether `result` is cut (None: as `finish_reason` says)."""

    success: bool
    result: str
    data: Any = None
    usage: Usage = field(default_factory=Usage)
    backend: str = ""
    model: str = ""
    finish_reason: str | None = None
    warnings: tuple[str, ...] = ()
    truncated: bool | None = None

    def cut(self) -> bool:
        """Whether `result` is cut: as `truncated` says, else when generation hit a limit."""
        if self.truncated is not None:
            return self.truncated
        return self.finish_reason in ("length", "deadline")


Handler = Callable[[ActionContext, dict[str, Any]], Awaitable[ActionOutcome]]


@dataclass(frozen=True)
class ActionDefinition:
    """A named action: what it does, what parameters it takes, and the code that runs it.

    `overrides` marks a user-defined action that replaces the built-in of the same name;
    `consequential` one whose calls ChatGPT must have the user confirm (the built-ins only read
    and write nothing outside the log, so they are not); `primary` the parameter holding a
    built-in's main text, which a caller may send under a common other name
    (`parameters.STAND_INS`).
    """

    name: str
    description: str
    parameters: dict[str, Any]
    handler: Handler
    builtin: bool = True
    overrides: bool = False
    consequential: bool = False
    primary: str | None = None

    def normalized(self, parameters: dict[str, Any]) -> dict[str, Any]:
        """Valid `parameters` with each whole-number float the schema asks an integer for as an
        int: JSON Schema's `integer` admits `2.0`, and an action's code counts with it."""
        return _object_integers(parameters, self.parameters)


class UnknownAction(LookupError):
    """No action by that name."""

    def __init__(self, name: str, available: Iterable[str]) -> None:
        super().__init__(name)
        self.name = name
        self.available = sorted(available)

    def __str__(self) -> str:
        return f"unknown action {self.name!r}; available actions: {', '.join(self.available)}"


class ActionRegistry:
    """The table of actions, by name."""

    def __init__(self, definitions: Iterable[ActionDefinition] = ()) -> None:
        self._actions: dict[str, ActionDefinition] = {}
        self._validators: dict[str, jsonschema.Draft202012Validator] = {}
        for definition in definitions:
            self.register(definition)

    def register(self, definition: ActionDefinition, *, replace: bool = False) -> None:
        """Add an action; replacing one needs `replace=True`."""
        if not ACTION_NAME_PATTERN.fullmatch(definition.name):
            raise ValueError(f"action name {definition.name!r} is not allowed")
        if definition.name in self._actions and not replace:
            raise ValueError(f"action {definition.name!r} is already registered")
        jsonschema.Draft202012Validator.check_schema(definition.parameters)
        self._actions[definition.name] = definition
        self._validators[definition.name] = jsonschema.Draft202012Validator(definition.parameters)

    def get(self, name: str) -> ActionDefinition:
        """The action by name, or UnknownAction naming those available."""
        try:
            return self._actions[name]
        except KeyError:
            raise UnknownAction(name, self._actions) from None

    def __contains__(self, name: object) -> bool:
        return name in self._actions

    def __iter__(self) -> Iterator[ActionDefinition]:
        return iter(sorted(self._actions.values(), key=lambda d: d.name))

    def __len__(self) -> int:
        return len(self._actions)

    @property
    def names(self) -> list[str]:
        """Every action's name, sorted."""
        return sorted(self._actions)

    def validate(self, name: str, parameters: Any) -> list[Problem]:
        """Every problem of `parameters` for the action, each with a JSON pointer."""
        return self.prepare(name, parameters).problems

    def prepare(self, name: str, parameters: Any) -> PreparedParameters:
        """The parameters the action's handler gets, with warnings and problems
        (`parameters.prepare_parameters`)."""
        definition = self.get(name)
        validator = self._validators[name]
        return prepare_parameters(
            name,
            definition.parameters,
            lambda value: schema_problems(validator, value),
            parameters,
            definition.primary,
        )


def schema_problems(
    validator: jsonschema.Draft202012Validator,
    value: Any,
    at: Sequence[str] = ("parameters",),
    unexpected: str = "is not a parameter of this action",
) -> list[Problem]:
    """Every problem of `value` against the validator's schema, in the API's words, each with a
    JSON pointer under `at`; a property the schema does not allow is said to be `unexpected`."""
    errors = list(validator.iter_errors(value))
    # A value of the wrong type is only that: not also "must be at most 500" (1e400).
    mistyped = {tuple(e.absolute_path) for e in errors if e.validator == "type"}
    problems = [
        problem
        for error in errors
        if error.validator == "type" or tuple(error.absolute_path) not in mistyped
        for problem in _problems_of(error, at, unexpected)
    ]
    unique = list(dict.fromkeys(problems))  # "" breaks minLength and the pattern alike
    return sorted(unique, key=lambda p: p.pointer)


def _integers(value: Any, schema: Any) -> Any:
    if not isinstance(schema, dict):
        return value
    if isinstance(value, float) and value.is_integer() and _admits(schema, "integer"):
        return int(value)
    if isinstance(value, dict):
        return _object_integers(value, schema)
    if isinstance(value, list):
        return [_integers(item, schema.get("items")) for item in value]
    return value


def _object_integers(value: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    properties = schema.get("properties", {})
    other = schema.get("additionalProperties")
    return {key: _integers(item, properties.get(key, other)) for key, item in value.items()}


def _admits(schema: dict[str, Any], kind: str) -> bool:
    kinds = schema.get("type")
    return kinds == kind or (isinstance(kinds, list) and kind in kinds)


def _pointer(at: Sequence[str], path: Iterable[Any]) -> str:
    return json_pointer([*at, *path])


def _problems_of(
    error: jsonschema.ValidationError, at: Sequence[str], unexpected: str
) -> list[Problem]:
    """The problems one validation error stands for, pointing at the property concerned.

    jsonschema reports a missing or unexpected property at the object holding it; the API points
    at the property itself, which is what a caller has to add or remove.
    """
    path = list(error.absolute_path)
    instance = error.instance
    if error.validator == "required" and isinstance(instance, dict):
        missing = [p for p in error.validator_value if p not in instance]
        name = next((p for p in missing if error.message.startswith(repr(p))), None)
        if name is not None:
            return [Problem(_pointer(at, [*path, name]), "is required")]
    if (
        error.validator == "additionalProperties"
        and error.validator_value is False
        and isinstance(instance, dict)
    ):
        known = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
        patterns = (
            error.schema.get("patternProperties", {}) if isinstance(error.schema, dict) else {}
        )
        extra = [
            key
            for key in instance
            if key not in known and not any(re.search(p, key) for p in patterns)
        ]
        if extra:
            return [Problem(_pointer(at, [*path, key]), unexpected) for key in extra]
    return [Problem(_pointer(at, path), _message(error))]


_TYPES = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "object": "an object",
    "array": "an array",
    "null": "null",
}
_LONGEST_MESSAGE = 200
NOT_BLANK = f"[^{ECMA_WHITESPACE_ESCAPED}]"
"""The `pattern` of a text that must hold more than whitespace: a character that is not
whitespace as ECMA-262 has it, spelled out (`ECMA_WHITESPACE_ESCAPED`)."""


_NOT_EMPTY = {NOT_BLANK: "must not be empty or only whitespace"}
"""What an empty string breaks, by the pattern beside its `minLength: 1`: one message for both."""


def _message(error: jsonschema.ValidationError) -> str:
    """What is wrong, in the API's words; jsonschema's own messages quote the whole value (a
    20 KB text in a 'too long' message) in Python's notation."""
    rule, limit = error.validator, error.validator_value
    pattern = str(error.schema.get("pattern")) if isinstance(error.schema, dict) else ""
    if rule == "type":
        kinds = limit if isinstance(limit, list) else [limit]
        return "must be " + " or ".join(_TYPES.get(kind, str(kind)) for kind in kinds)
    if rule == "enum" and isinstance(limit, list):
        return "must be one of: " + ", ".join(json.dumps(choice) for choice in limit)
    words = {
        "maxLength": f"must be at most {limit} characters",
        "minLength": _NOT_EMPTY.get(pattern, "must not be empty")
        if limit == 1
        else f"must be at least {limit} characters",
        "maximum": f"must be at most {limit}",
        "minimum": f"must be at least {limit}",
        "exclusiveMaximum": f"must be less than {limit}",
        "exclusiveMinimum": f"must be more than {limit}",
        "maxItems": f"must have at most {limit} item{'' if limit == 1 else 's'}",
        "minItems": f"must have at least {limit} item{'' if limit == 1 else 's'}",
        "maxProperties": f"must have at most {limit} propert{'y' if limit == 1 else 'ies'}",
        "minProperties": f"must have at least {limit} propert{'y' if limit == 1 else 'ies'}",
        "uniqueItems": "must not hold the same item twice",
    }
    if rule in words:
        return words[str(rule)]
    if rule == "pattern" and limit == NOT_BLANK:
        return _NOT_EMPTY[NOT_BLANK]
    message = str(error.message)
    return message if len(message) <= _LONGEST_MESSAGE else message[:_LONGEST_MESSAGE] + "…"
