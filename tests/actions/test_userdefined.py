"""User-defined actions: the file format, its errors, override rules, and running them."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from gptactions.config import Settings
from gptactions.llm.fake import FakeBackend
from gptactions.services.actions import (
    ActionContext,
    ActionsFileError,
    build_registry,
    registry_from_file,
)

from .conftest import HAIKU_YAML, run_handler

FakeContext = Callable[..., tuple[ActionContext, FakeBackend]]
WriteFile = Callable[[str, str], Path]

HAIKU_TOML = """\
[[actions]]
name = "haiku"
description = "Write a haiku about a topic."
prompt = "Write a haiku about {{ topic }}."
output = "text"
maxTokens = 60

[actions.parameters]
type = "object"
required = ["topic"]
properties = { topic = { type = "string", maxLength = 200 } }
"""


@pytest.mark.parametrize(("name", "text"), [("a.yaml", HAIKU_YAML), ("a.toml", HAIKU_TOML)])
async def test_the_issue_example_loads_and_runs(
    write_file: WriteFile, fake_context: FakeContext, name: str, text: str
) -> None:
    registry = registry_from_file(write_file(name, text))
    haiku = registry.get("haiku")
    assert haiku.builtin is False and haiku.description == "Write a haiku about a topic."
    assert "summarize" in registry.names
    assert [p.pointer for p in registry.validate("haiku", {})] == ["/parameters/topic"]
    assert registry.validate("haiku", {"topic": "x" * 201})[0].pointer == "/parameters/topic"

    ctx, fake = fake_context("Autumn moonlight\na worm digs silently\ninto the chestnut")
    outcome = await run_handler(registry, ctx, "haiku", {"topic": "autumn"})
    assert outcome.success and outcome.result.startswith("Autumn moonlight")
    request = fake.requests[0]
    assert [(m.role, m.content) for m in request.messages] == [
        ("user", "Write a haiku about autumn.")
    ]
    assert request.max_tokens == 60 and request.temperature == 0.0
    assert request.json_schema is None and request.choices is None


def test_build_registry_reads_the_setting(write_file: WriteFile) -> None:
    path = write_file("actions.yaml", HAIKU_YAML)
    assert "haiku" in build_registry(Settings(actions_file=path))
    assert "haiku" not in build_registry(Settings())


def test_the_setting_comes_from_the_environment(
    write_file: WriteFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_file("actions.yaml", HAIKU_YAML)
    monkeypatch.setenv("GPTACTIONS_ACTIONS_FILE", str(path))
    assert Settings().actions_file == path


FULL = """\
actions:
  - name: triage
    description: Route a support ticket.
    parameters:
      type: object
      required: [ticket]
      additionalProperties: false
      properties:
        ticket: {type: string, maxLength: 2000}
        product: {type: string, maxLength: 50, default: "the app"}
    system: "You triage tickets about {{ product }}."
    prompt: |
      Ticket: {{ ticket }}
      {% if ticket | length > 100 %}It is long.{% endif %}
    output:
      choices: [billing, bug, question]
    temperature: 0.2
    maxTokens: 10
  - name: tags
    description: Tag a text.
    parameters:
      type: object
      required: [text]
      properties:
        text: {type: string, maxLength: 2000}
    prompt: "Tags for: {{ text }}"
    output:
      choices: [urgent, legal, sales]
      multiple: true
  - name: contact
    description: Pull a contact out of a text.
    parameters:
      type: object
      required: [text]
      properties:
        text: {type: string, maxLength: 2000}
    prompt: "Find the contact in: {{ text }}"
    output:
      json:
        type: object
        required: [name, email]
        additionalProperties: false
        properties:
          name: {type: string}
          email: {type: string}
"""


async def test_every_output_kind_and_the_system_prompt(
    write_file: WriteFile, fake_context: FakeContext
) -> None:
    registry = registry_from_file(write_file("full.yaml", FULL))
    ctx, fake = fake_context(
        "bug", '["legal", "urgent"]', '{"name": "Ann", "email": "ann@example.com"}'
    )
    triage = await run_handler(registry, ctx, "triage", {"ticket": "It crashes"})
    assert (triage.success, triage.result, triage.data) == (True, "bug", "bug")
    first = fake.requests[0]
    assert first.messages[0].content == "You triage tickets about the app."  # the default
    assert first.messages[1].content == "Ticket: It crashes\n\n"
    assert first.choices == ("billing", "bug", "question")
    assert (first.temperature, first.max_tokens) == (0.2, 10)

    tags = await run_handler(registry, ctx, "tags", {"text": "Sue them now"})
    assert (tags.result, tags.data) == ("legal, urgent", ["legal", "urgent"])

    contact = await run_handler(registry, ctx, "contact", {"text": "Ann, ann@example.com"})
    assert contact.data == {"name": "Ann", "email": "ann@example.com"}
    assert json.loads(contact.result) == contact.data
    assert fake.requests[2].json_schema is not None
    assert fake.requests[2].json_schema["required"] == ["name", "email"]


async def test_a_json_action_that_never_fits_fails(
    write_file: WriteFile, fake_context: FakeContext
) -> None:
    registry = registry_from_file(write_file("full.yaml", FULL))
    ctx, _ = fake_context('{"name": "Ann"}', '{"name": "Ann"}')
    outcome = await run_handler(registry, ctx, "contact", {"text": "Ann"})
    assert outcome.success is False
    assert "'email' is a required property" in outcome.result


async def test_parameter_values_are_not_templates(
    write_file: WriteFile, fake_context: FakeContext
) -> None:
    registry = registry_from_file(write_file("a.yaml", HAIKU_YAML))
    ctx, fake = fake_context("ok")
    topic = "{{ ''.__class__.__mro__ }} {% for x in range(3) %}x{% endfor %}"
    await run_handler(registry, ctx, "haiku", {"topic": topic})
    assert fake.requests[0].messages[0].content == f"Write a haiku about {topic}."


def test_override_needs_to_be_explicit(write_file: WriteFile) -> None:
    text = """\
actions:
  - name: summarize
    description: Summarize like a pirate.
    parameters: {type: object, required: [text], properties: {text: {type: string}}}
    prompt: "Summarize like a pirate: {{ text }}"
"""
    path = write_file("a.yaml", text)
    with pytest.raises(ActionsFileError) as caught:
        registry_from_file(path)
    assert str(caught.value) == (
        f"{path}: action summarize: has the name of a built-in action; "
        "add 'override: true' to replace the built-in"
    )
    registry = registry_from_file(write_file("b.yaml", text + "    override: true\n"))
    summarize = registry.get("summarize")
    assert summarize.builtin is False and summarize.description == "Summarize like a pirate."


def _entry(extra: str) -> str:
    """A file of one action `a`, valid but for `extra` (more of its keys, YAML flow style)."""
    return f"actions: [{{name: a, description: x, prompt: y{extra}}}]\n"


CASES = [
    ("bad.yaml", "actions: [\n", None, "is not valid YAML"),
    ("bad.toml", "[[actions]\n", None, "is not valid TOML"),
    ("bad.json", "{}", None, "unknown suffix"),
    ("bad.yaml", "actions: {}\n", None, "'actions' must be a list"),
    ("bad.yaml", "action: []\n", None, "must hold one key, 'actions'"),
    ("bad.yaml", "actions: [42]\n", None, "entry 1 of 'actions' is not a mapping"),
    ("bad.yaml", "actions: [{prompt: y}]\n", None, "entry 1 of 'actions' needs a 'name'"),
    ("bad.yaml", "actions: [{name: 'a b', prompt: y}]\n", None, "needs a 'name'"),
    ("bad.yaml", "actions: [{name: a, prompt: y}]\n", "a", "needs a 'description'"),
    ("bad.yaml", "actions: [{name: a, description: x}]\n", "a", "needs a 'prompt'"),
    ("bad.yaml", _entry(", promt: z"), "a", "unknown key 'promt'"),
    (
        "bad.yaml",
        "actions: [{name: a, description: x, prompt: '{{ topic }'}]\n",
        "a",
        "'prompt' is not a valid template (line 1)",
    ),
    (
        "bad.yaml",
        "actions: [{name: a, description: x, prompt: '{{ topik }}', "
        "parameters: {type: object, properties: {topic: {type: string}}}}]\n",
        "a",
        "'prompt' uses 'topik', which is not one of the parameters' properties (topic)",
    ),
    ("bad.yaml", _entry(", system: '{{ who }}'"), "a", "'system' uses 'who'"),
    ("bad.yaml", _entry(", parameters: {type: array}"), "a", "type: object"),
    (
        "bad.yaml",
        _entry(", parameters: {type: object, properties: {t: {type: strin}}}"),
        "a",
        "'parameters' is not a valid JSON Schema at /properties/t/type",
    ),
    ("bad.yaml", _entry(", output: json"), "a", "'output' must be 'text'"),
    ("bad.yaml", _entry(", output: {json: {type: 3}}"), "a", "'output.json' is not a valid"),
    ("bad.yaml", _entry(", output: {choices: []}"), "a", "'output.choices' must be a list"),
    ("bad.yaml", _entry(", output: {choices: [b, b]}"), "a", "distinct"),
    ("bad.yaml", _entry(", output: {choices: [b], multiple: 1}"), "a", "'output.multiple'"),
    ("bad.yaml", _entry(", maxTokens: 0"), "a", "'maxTokens' must be"),
    ("bad.yaml", _entry(", maxTokens: 1.5"), "a", "'maxTokens' must be"),
    ("bad.yaml", _entry(", temperature: 3"), "a", "'temperature' must be"),
    ("bad.yaml", _entry(", temperature: hot"), "a", "'temperature' must be"),
    ("bad.yaml", _entry(", override: yes please"), "a", "'override' must be"),
    ("bad.yaml", _entry(", override: true"), "a", "no built-in by that name"),
    ("bad.yaml", _entry("}, {name: a, description: x, prompt: y"), "a", "is defined twice"),
]


@pytest.mark.parametrize(("name", "text", "action", "problem"), CASES)
def test_invalid_files_name_the_file_the_action_and_the_problem(
    write_file: WriteFile, name: str, text: str, action: str | None, problem: str
) -> None:
    path = write_file(name, text)
    with pytest.raises(ActionsFileError) as caught:
        registry_from_file(path)
    error = caught.value
    assert error.path == path and error.action == action
    assert problem in error.problem
    prefix = f"{path}: action {action}: " if action else f"{path}: "
    assert str(error).startswith(prefix)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.yaml"
    with pytest.raises(ActionsFileError, match=r"nowhere\.yaml: cannot be read"):
        registry_from_file(path)


def test_an_invalid_file_stops_the_app_from_being_built(write_file: WriteFile) -> None:
    from gptactions.app import create_app

    path = write_file("bad.yaml", "actions: [{name: a, description: x}]\n")
    with pytest.raises(ActionsFileError, match="action a: needs a 'prompt'"):
        create_app(Settings(actions_file=path))


async def test_a_template_that_fails_at_run_time_is_an_unsuccessful_outcome(
    write_file: WriteFile, fake_context: FakeContext
) -> None:
    text = """\
actions:
  - name: greet
    description: Greet someone.
    parameters: {type: object, properties: {who: {type: string}}}
    prompt: "Say hello to {{ who }}."
"""
    registry = registry_from_file(write_file("a.yaml", text))
    ctx, fake = fake_context()
    outcome = await run_handler(registry, ctx, "greet", {})
    assert outcome.success is False
    assert outcome.result.startswith("the prompt of action greet failed to render: 'who'")
    assert fake.requests == []


@pytest.mark.model
async def test_the_issue_example_with_the_real_model(
    write_file: WriteFile, model_context: ActionContext
) -> None:
    registry = registry_from_file(write_file("actions.yaml", HAIKU_YAML))
    outcome = await run_handler(registry, model_context, "haiku", {"topic": "the sea"})
    assert outcome.success and outcome.result.strip()
    assert 0 < outcome.usage.completion_tokens <= 60


DOCS = Path(__file__).parent.parent.parent / "docs" / "actions.md"


@pytest.mark.parametrize("suffix", ["yaml", "toml"])
def test_the_examples_in_the_documentation_load(write_file: WriteFile, suffix: str) -> None:
    blocks = re.findall(rf"```{suffix}\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.DOTALL)
    assert blocks
    for index, block in enumerate(blocks):
        registry = registry_from_file(write_file(f"doc{index}.{suffix}", block))
        assert any(not d.builtin for d in registry)
