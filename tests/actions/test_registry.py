"""The registry: lookup, and parameter problems with JSON pointers."""

from __future__ import annotations

import pytest

from gptactions.llm.fake import FakeBackend
from gptactions.llm.router import BackendRouter
from gptactions.services.actions import (
    BUILTIN_ACTIONS,
    ActionCall,
    ActionContext,
    ActionOutcome,
    ActionRegistry,
    ActionService,
    UnknownAction,
)
from gptactions.services.actions.builtin import TEXT_LIMIT
from gptactions.services.actions.registry import ActionDefinition
from gptactions.services.errors import ServiceError
from gptactions.services.interactions import InteractionLog
from gptactions.store.db import Database

BUILTIN_NAMES = [
    "answer",
    "classify",
    "explainCode",
    "extract",
    "generateCode",
    "rewrite",
    "sentiment",
    "summarize",
    "translate",
]


def test_every_builtin_is_registered(registry: ActionRegistry) -> None:
    assert registry.names == BUILTIN_NAMES
    assert all(d.builtin and d.description for d in registry)


def _string_schemas(schema: object) -> list[dict[str, object]]:
    if isinstance(schema, dict):
        found = [schema] if schema.get("type") == "string" else []
        return found + [s for v in schema.values() for s in _string_schemas(v)]
    if isinstance(schema, list):
        return [s for v in schema for s in _string_schemas(v)]
    return []


@pytest.mark.parametrize("definition", BUILTIN_ACTIONS, ids=lambda d: d.name)
def test_builtin_schemas_bound_every_size(definition: ActionDefinition) -> None:
    schema = definition.parameters
    # No `additionalProperties: false`: an unknown parameter is ignored, with a warning.
    assert schema["type"] == "object" and "additionalProperties" not in schema
    for string in _string_schemas(schema):
        assert "maxLength" in string or "enum" in string, string
    for sub in schema["properties"].values():
        if sub.get("type") == "array":
            assert "maxItems" in sub
        if sub.get("type") == "object":
            assert "maxProperties" in sub


def test_unknown_action_names_the_available_ones(registry: ActionRegistry) -> None:
    with pytest.raises(UnknownAction) as caught:
        registry.get("summarise")
    assert caught.value.available == BUILTIN_NAMES
    assert "summarize" in str(caught.value)


def test_a_missing_parameter_points_at_the_property(registry: ActionRegistry) -> None:
    problems = registry.validate("translate", {"text": "hi", "target": "French"})
    assert [(p.pointer, p.message) for p in problems] == [
        ("/parameters/targetLanguage", "is required"),
    ]


def test_an_unknown_parameter_is_ignored_with_a_warning(registry: ActionRegistry) -> None:
    prepared = registry.prepare("summarize", {"text": "Cats sleep a lot.", "length": "short"})
    assert prepared.problems == []
    assert prepared.parameters == {"text": "Cats sleep a lot."}
    assert prepared.warnings == (
        "parameters/length is not a parameter of summarize and was ignored",
    )


def test_wrong_types_and_sizes_point_inside(registry: ActionRegistry) -> None:
    problems = registry.validate(
        "classify",
        {"text": "x" * (TEXT_LIMIT + 1), "labels": ["a", 2, "a"], "multiLabel": "yes"},
    )
    pointers = [p.pointer for p in problems]
    assert "/parameters/text" in pointers
    assert "/parameters/labels/1" in pointers
    assert "/parameters/labels" in pointers  # not unique
    assert "/parameters/multiLabel" in pointers


def test_one_problem_is_said_once(registry: ActionRegistry) -> None:
    """An empty text breaks minLength and the not-blank pattern; 1e400 (infinity) is not an
    integer, and not also "must be at most 500": one message for each."""
    problems = registry.validate("summarize", {"text": "", "maxWords": float("inf")})
    assert [(p.pointer, p.message) for p in problems] == [
        ("/parameters/maxWords", "must be an integer"),
        ("/parameters/text", "must not be empty or only whitespace"),
    ]


def test_extract_fields_must_have_known_types(registry: ActionRegistry) -> None:
    problems = registry.validate("extract", {"text": "t", "fields": {"age": "int"}})
    assert [p.pointer for p in problems] == ["/parameters/fields/age"]
    assert registry.validate("extract", {"text": "t", "fields": {}})[0].pointer == (
        "/parameters/fields"
    )


def test_parameters_that_are_not_an_object(registry: ActionRegistry) -> None:
    problems = registry.validate("sentiment", ["text"])
    assert [p.pointer for p in problems] == ["/parameters"]


def test_pointers_escape_slash_and_tilde(registry: ActionRegistry) -> None:
    problems = registry.validate("extract", {"text": "t", "fields": {"a/b~c": "int"}})
    assert problems[0].pointer == "/parameters/fields/a~1b~0c"
    warned = registry.prepare("sentiment", {"text": "t", "a/b~c": 1}).warnings
    assert warned == ("parameters/a~1b~0c is not a parameter of sentiment and was ignored",)


def test_valid_parameters_have_no_problems(registry: ActionRegistry) -> None:
    assert registry.validate("summarize", {"text": "t", "maxWords": 5, "format": "bullets"}) == []


def test_the_service_refuses_invalid_parameters(registry: ActionRegistry) -> None:
    service = ActionService(
        registry, BackendRouter([FakeBackend()]), InteractionLog(Database("sqlite:///log.db"))
    )
    with pytest.raises(ServiceError) as caught:
        service.check(ActionCall("summarize", {"maxWords": 0}))
    assert {p.pointer for p in caught.value.details} == {
        "/parameters/text",
        "/parameters/maxWords",
    }


def test_register_refuses_duplicates_and_bad_names() -> None:
    async def handler(ctx: ActionContext, params: dict[str, object]) -> ActionOutcome:
        return ActionOutcome(True, "ok")

    registry = ActionRegistry()
    definition = ActionDefinition("echo", "Echo.", {"type": "object"}, handler)
    registry.register(definition)
    with pytest.raises(ValueError, match="already registered"):
        registry.register(definition)
    registry.register(definition, replace=True)
    with pytest.raises(ValueError, match="not allowed"):
        registry.register(ActionDefinition("two words", "x", {"type": "object"}, handler))


def test_the_main_text_may_come_under_a_common_other_name(registry: ActionRegistry) -> None:
    prepared = registry.prepare("generateCode", {"prompt": "hello world in python"})
    assert prepared.problems == []
    assert prepared.parameters == {"description": "hello world in python"}
    assert prepared.warnings == (
        "parameters/prompt is not a parameter of generateCode and was taken as its description",
    )
    for action, primary in [
        ("summarize", "text"),
        ("explainCode", "code"),
        ("answer", "question"),
        ("sentiment", "text"),
    ]:
        taken = registry.prepare(action, {"input": "x = 1", "extra": True})
        assert taken.problems == [] and taken.parameters == {primary: "x = 1"}, action
        assert len(taken.warnings) == 2  # the stand-in taken, the other ignored
    # The stand-in is held to the parameter's rules, and said where it was sent.
    blank = registry.validate("summarize", {"message": "  "})
    assert [(p.pointer, p.message) for p in blank] == [
        ("/parameters/message", "must not be empty or only whitespace")
    ]


def test_a_stand_in_is_not_taken_when_it_is_not_the_only_one_or_not_text(
    registry: ActionRegistry,
) -> None:
    problems = registry.validate("summarize", {"prompt": "a", "content": "b"})
    assert [(p.pointer, p.message) for p in problems] == [
        (
            "/parameters/text",
            "is required (prompt, content were sent, and only one of them could be taken in "
            "its place)",
        )
    ]
    problems = registry.validate("answer", {"query": 42})
    assert [(p.pointer, p.message) for p in problems] == [
        ("/parameters/question", "is required (query was sent in its place, but is not a string)")
    ]
    # Sent as well as the main text, a stand-in is only an unknown parameter.
    both = registry.prepare("sentiment", {"text": "good", "prompt": "bad"})
    assert both.parameters == {"text": "good"} and both.problems == []
    # The other required parameters stay required.
    assert [p.pointer for p in registry.validate("translate", {"prompt": "hi"})] == [
        "/parameters/targetLanguage"
    ]


def test_an_authors_additional_properties_false_still_refuses_unknown_ones() -> None:
    async def handler(ctx: ActionContext, params: dict[str, object]) -> ActionOutcome:
        return ActionOutcome(True, "ok")

    strict = {"type": "object", "properties": {"a": {}}, "additionalProperties": False}
    typed = {"type": "object", "additionalProperties": {"type": "string"}}
    registry = ActionRegistry(
        [
            ActionDefinition("strict", "S.", strict, handler, builtin=False),
            ActionDefinition("typed", "T.", typed, handler, builtin=False),
        ]
    )
    assert [(p.pointer, p.message) for p in registry.validate("strict", {"b": 1})] == [
        ("/parameters/b", "is not a parameter of this action")
    ]
    assert [p.pointer for p in registry.validate("typed", {"b": 1})] == ["/parameters/b"]
    assert registry.prepare("typed", {"b": "x"}).warnings == ()
