"""User-defined actions: read from a YAML or TOML file, their prompts Jinja2 templates in a sandbox.

The file's format is documented in docs/actions.md. Every problem found while loading raises
ActionsFileError, whose message names the file, the action and the problem, so that the same text
stops the server's start-up and answers `gptactions actions check FILE`.
"""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta
import jsonschema
import yaml

from gptactions.llm.base import ChatMessage
from gptactions.services.actions.output import (
    ChoiceOutput,
    JsonOutput,
    OutputSpec,
    TextOutput,
    generate_output,
)
from gptactions.services.actions.registry import (
    ACTION_NAME_PATTERN,
    ActionContext,
    ActionDefinition,
    ActionOutcome,
)
from gptactions.services.errors import Problem, ServiceError
from gptactions.services.templates import (
    TemplateFailed,
    TemplateLimitExceeded,
    forbidden_statement,
    template_environment,
)

DEFAULT_MAX_TOKENS = 256
MAX_TOKENS_CEILING = 4096
MAX_CHOICES = 100
ENTRY_KEYS = frozenset(
    {
        "name",
        "description",
        "parameters",
        "prompt",
        "system",
        "output",
        "maxTokens",
        "temperature",
        "override",
        "consequential",
    }
)
EMPTY_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {},
    "additionalProperties": False,
}


class ActionsFileError(ValueError):
    """The actions file cannot be used; the message names the file, the action and the problem."""

    def __init__(self, path: Path, problem: str, action: str | None = None) -> None:
        where = f"{path}: action {action}: " if action else f"{path}: "
        super().__init__(where + problem)
        self.path = path
        self.action = action
        self.problem = problem


# Templates are parsed and checked here, at load time; they render in `services.templates`.
_ENVIRONMENT = template_environment()


@dataclass(frozen=True)
class PromptAction:
    """The handler of a user-defined action: render the templates, ask the model, check the form.

    The templates render in worker processes (`services.templates`), within the server's time
    and output bounds.
    """

    name: str
    prompt: str
    system: str | None
    output: OutputSpec
    max_tokens: int
    temperature: float
    defaults: Mapping[str, Any]
    system_public: bool = False
    """Whether the system template uses no parameter: its text is then the server's own, the
    same for every caller (`GenerationRequest.public_messages`)."""

    async def __call__(self, ctx: ActionContext, params: dict[str, Any]) -> ActionOutcome:
        """Run the action with parameters already valid against its schema."""
        values = {**self.defaults, **params}
        sources = [self.prompt] if self.system is None else [self.prompt, self.system]
        if ctx.templates is None:
            raise RuntimeError("user-defined actions need a template renderer in their context")
        try:
            rendered = await ctx.templates.render(sources, values)
        except TemplateLimitExceeded as exc:
            # The parameters made the prompt too costly: the caller's to change, so a 400.
            raise ServiceError(
                f"the prompt of action {self.name} cannot be rendered with these parameters: {exc}",
                400,
                "template_limit",
                [Problem("/parameters", str(exc))],
            ) from None
        except TemplateFailed as exc:
            # A template that fails at run time is a fault of the file, reported without a trace.
            return ActionOutcome(False, f"the prompt of action {self.name} failed to render: {exc}")
        messages = [ChatMessage("user", rendered[0])]
        if self.system is not None:
            messages.insert(0, ChatMessage("system", rendered[1]))
        return await generate_output(
            ctx,
            messages,
            self.output,
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            public_messages=1 if self.system is not None and self.system_public else 0,
        )


def read_actions_file(path: Path) -> list[Any]:
    """The raw list of action entries in a YAML or TOML file."""
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ActionsFileError(path, f"cannot be read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ActionsFileError(path, "is not UTF-8 text") from None
    try:
        if suffix in (".yaml", ".yml"):
            document = yaml.safe_load(text)
        elif suffix == ".toml":
            document = tomllib.loads(text)
        else:
            raise ActionsFileError(path, "has an unknown suffix: use .yaml, .yml or .toml")
    except yaml.YAMLError as exc:
        raise ActionsFileError(path, f"is not valid YAML: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ActionsFileError(path, f"is not valid TOML: {exc}") from None
    if not isinstance(document, dict) or set(document) != {"actions"}:
        raise ActionsFileError(path, "must hold one key, 'actions', with a list of actions")
    entries = document["actions"]
    if not isinstance(entries, list):
        raise ActionsFileError(path, "'actions' must be a list of actions")
    return entries


def load_actions_file(path: Path, builtin_names: Iterable[str] = ()) -> list[ActionDefinition]:
    """Every action the file defines, checked; a name of `builtin_names` needs `override: true`."""
    builtins = set(builtin_names)
    definitions: list[ActionDefinition] = []
    seen: set[str] = set()
    for index, entry in enumerate(read_actions_file(path), start=1):
        definition = _parse_entry(path, index, entry)
        name = definition.name
        if name in seen:
            raise ActionsFileError(path, "is defined twice", name)
        seen.add(name)
        overrides = definition.overrides
        if name in builtins and not overrides:
            raise ActionsFileError(
                path,
                "has the name of a built-in action; add 'override: true' to replace the built-in",
                name,
            )
        if overrides and name not in builtins:
            raise ActionsFileError(
                path, "says 'override: true' but there is no built-in by that name", name
            )
        definitions.append(definition)
    return definitions


def _parse_entry(path: Path, index: int, entry: Any) -> ActionDefinition:
    if not isinstance(entry, dict):
        raise ActionsFileError(path, f"entry {index} of 'actions' is not a mapping")
    name = entry.get("name")
    if not isinstance(name, str) or not ACTION_NAME_PATTERN.fullmatch(name):
        raise ActionsFileError(
            path,
            f"entry {index} of 'actions' needs a 'name' of letters, digits, '_' and '-', "
            "starting with a letter, at most 64 characters",
        )

    def fail(problem: str) -> ActionsFileError:
        return ActionsFileError(path, problem, name)

    unknown = sorted(set(entry) - ENTRY_KEYS)
    if unknown:
        raise fail(f"unknown key {unknown[0]!r}; the keys are {', '.join(sorted(ENTRY_KEYS))}")
    description = entry.get("description")
    if not isinstance(description, str) or not description.strip():
        raise fail("needs a 'description' (a non-empty string)")
    parameters = _parameters(entry.get("parameters", copy.deepcopy(EMPTY_PARAMETERS)), fail)
    output = _output(entry.get("output", "text"), fail)
    max_tokens = entry.get("maxTokens", DEFAULT_MAX_TOKENS)
    if not _is_int(max_tokens) or not 1 <= max_tokens <= MAX_TOKENS_CEILING:
        raise fail(f"'maxTokens' must be a whole number from 1 to {MAX_TOKENS_CEILING}")
    temperature = entry.get("temperature", 0.0)
    number = isinstance(temperature, int | float) and not isinstance(temperature, bool)
    if not number or not 0 <= temperature <= 2:
        raise fail("'temperature' must be a number from 0 to 2")
    override = entry.get("override", False)
    if not isinstance(override, bool):
        raise fail("'override' must be true or false")
    consequential = entry.get("consequential", False)
    if not isinstance(consequential, bool):
        raise fail("'consequential' must be true or false")

    declared = set(parameters.get("properties", {}))
    prompt = _template(entry.get("prompt"), "prompt", declared, fail, required=True)
    system = _template(entry.get("system"), "system", declared, fail, required=False)
    assert prompt is not None  # required=True
    defaults = {
        key: schema["default"]
        for key, schema in parameters.get("properties", {}).items()
        if isinstance(schema, dict) and "default" in schema
    }
    handler = PromptAction(
        name,
        prompt,
        system,
        output,
        int(max_tokens),
        float(temperature),
        defaults,
        system_public=system is not None and not _variables(system),
    )
    return ActionDefinition(
        name=name,
        description=description.strip(),
        parameters=parameters,
        handler=handler,
        builtin=False,
        overrides=override,
        consequential=consequential,
    )


Fail = Callable[[str], ActionsFileError]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parameters(schema: Any, fail: Fail) -> dict[str, Any]:
    if not isinstance(schema, dict):
        raise fail("'parameters' must be a JSON Schema mapping")
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "".join(f"/{part}" for part in exc.absolute_path)
        raise fail(
            f"'parameters' is not a valid JSON Schema at {where or '/'}: {exc.message}"
        ) from None
    if schema.get("type") != "object":
        raise fail("'parameters' must be a schema with 'type: object'")
    properties = schema.get("properties", {})
    if not isinstance(properties, dict):
        raise fail("'parameters.properties' must be a mapping")
    return schema


def _output(value: Any, fail: Fail) -> OutputSpec:
    if value == "text":
        return TextOutput()
    if isinstance(value, dict) and set(value) == {"json"}:
        schema = value["json"]
        if not isinstance(schema, dict):
            raise fail("'output.json' must be a JSON Schema mapping")
        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise fail(f"'output.json' is not a valid JSON Schema: {exc.message}") from None
        return JsonOutput(schema)
    if isinstance(value, dict) and set(value) <= {"choices", "multiple"} and "choices" in value:
        choices = value["choices"]
        if (
            not isinstance(choices, list)
            or not 1 <= len(choices) <= MAX_CHOICES
            or not all(isinstance(c, str) and c.strip() for c in choices)
            or len(set(choices)) != len(choices)
        ):
            raise fail(
                f"'output.choices' must be a list of 1 to {MAX_CHOICES} distinct non-empty strings"
            )
        multiple = value.get("multiple", False)
        if not isinstance(multiple, bool):
            raise fail("'output.multiple' must be true or false")
        return ChoiceOutput(tuple(choices), multiple=multiple)
    raise fail("'output' must be 'text', {json: <JSON Schema>} or {choices: [<string>, ...]}")


def _variables(source: str) -> set[str]:
    """The names a valid template reads from its context (the parameters), globals left out."""
    parsed = _ENVIRONMENT.parse(source)
    return jinja2.meta.find_undeclared_variables(parsed) - set(_ENVIRONMENT.globals)


def _template(
    source: Any, key: str, declared: set[str], fail: Fail, *, required: bool
) -> str | None:
    if source is None and not required:
        return None
    if not isinstance(source, str) or not source.strip():
        raise fail(f"needs a '{key}' (a non-empty Jinja2 template)")
    try:
        parsed = _ENVIRONMENT.parse(source)
    except jinja2.TemplateSyntaxError as exc:
        raise fail(f"'{key}' is not a valid template (line {exc.lineno}): {exc.message}") from None
    forbidden = forbidden_statement(parsed)
    if forbidden is not None:
        statement, line = forbidden
        raise fail(
            f"'{key}' uses {{% {statement} %}} (line {line}); a prompt is one self-contained "
            "template and cannot include, import or extend another"
        )
    unknown = sorted(
        jinja2.meta.find_undeclared_variables(parsed) - declared - set(_ENVIRONMENT.globals)
    )
    if unknown:
        raise fail(
            f"'{key}' uses {unknown[0]!r}, which is not one of the parameters' properties"
            + (f" ({', '.join(sorted(declared))})" if declared else " (there are none)")
        )
    return source
