"""JSON Schemas as grammars: what llama-cpp-python's converter cannot follow is named, with where."""

from __future__ import annotations

from typing import Any

import pytest

from gptactions.llm.base import ChatMessage, GenerationRequest, UnsupportedSchema
from gptactions.llm.grammar import schema_grammar
from gptactions.llm.local import LocalBackend


def ask(**kw: Any) -> GenerationRequest:
    return GenerationRequest(messages=(ChatMessage("user", "x"),), **kw)


# Each schema made the converter raise; the request was decoded as any JSON (`{}`, a 200) with
# a traceback in the log. Now: why, and where in the schema.
UNSUPPORTED: list[tuple[dict[str, Any], str, str]] = [
    (
        {"type": "object", "properties": {"code": {"type": "string", "pattern": "[A-Z]{3}"}}},
        "/properties/code/pattern",
        "must start with ^ and end with $",
    ),
    (
        {"type": "string", "pattern": "^(?=a)a$"},
        "/pattern",
        "a lookaround, a non-capturing or a named group",
    ),
    (
        {"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}},
        "/properties/a",
        'the $ref "#/$defs/missing" points to nothing',
    ),
    (
        {"type": "object", "properties": {"next": {"$ref": "#"}}},
        "/properties/next",
        'the $ref "#" is not supported',
    ),
    ({"$ref": "https://example.com/schema.json"}, "", "only references within the schema"),
    (
        {"type": "object", "properties": {"tags": {"patternProperties": {"^x": {}}}}},
        "/properties/tags",
        "a schema of only patternProperties: give it a type",
    ),
    ({"not": {"type": "string"}}, "", "a schema of only not"),
    ({"type": "object", "properties": {"a": True}}, "", "the boolean subschema true"),
    (
        {"type": "object", "properties": {"n": {"type": "string", "minLength": "3"}}},
        "/properties/n/minLength",
        "not a valid JSON Schema: '3' is not of type 'integer'",
    ),
]


@pytest.mark.parametrize(("schema", "pointer", "reason"), UNSUPPORTED)
def test_a_schema_the_converter_cannot_follow_is_named_with_where(
    schema: dict[str, Any], pointer: str, reason: str
) -> None:
    with pytest.raises(UnsupportedSchema) as raised:
        schema_grammar(schema)
    assert reason in raised.value.reason
    assert raised.value.pointer == pointer


def test_a_root_ref_is_followed_with_the_refs_inside_its_definitions() -> None:
    """Beside a root `$ref` the converter read nothing, so a `$ref` in the `$defs` it points to
    was never resolved (a KeyError), as in a recursive schema or zod-to-json-schema's output."""
    recursive = {
        "$ref": "#/$defs/node",
        "$defs": {
            "node": {
                "type": "object",
                "properties": {"value": {"type": "integer"}, "next": {"$ref": "#/$defs/node"}},
            }
        },
    }
    grammar = schema_grammar(recursive)
    assert "node-next ::= node" in grammar and "root ::=" in grammar
    nested = {
        "$ref": "#/definitions/a",
        "definitions": {
            "a": {"type": "object", "properties": {"x": {"$ref": "#/definitions/b"}}},
            "b": {"type": "integer"},
        },
    }
    assert "a-x ::= integer" in schema_grammar(nested)


def test_the_schema_given_is_left_as_it_was() -> None:
    schema = {"type": "object", "properties": {"a": {"$ref": "#/$defs/a"}}, "$defs": {"a": {}}}
    schema_grammar(schema)
    assert schema["properties"] == {"a": {"$ref": "#/$defs/a"}}


async def test_the_embedded_model_checks_the_schema_before_generating() -> None:
    """No model is needed to check: the backend refuses before anything is loaded or queued."""
    backend = LocalBackend()
    bad = {"type": "string", "pattern": "[a-z]+"}
    with pytest.raises(UnsupportedSchema):
        await backend.check_request(ask(json_schema=bad))
    await backend.check_request(ask(json_schema={"type": "string", "pattern": "^[a-z]+$"}))
    # A schema too large for a grammar is decoded as plain JSON, as before: not refused.
    await backend.check_request(ask(json_schema={"type": "string", "maxLength": 65536}))
    # Choices are decoded with their own grammar.
    await backend.check_request(ask(json_schema=bad, choices=("a", "b")))


async def test_a_forced_tools_schema_is_checked_and_the_tool_named() -> None:
    good = {"type": "function", "function": {"name": "good", "parameters": {"type": "object"}}}
    bad = {
        "type": "function",
        "function": {"name": "bad", "parameters": {"properties": {"a": {"not": {}}}}},
    }
    backend = LocalBackend()
    await backend.check_request(ask(tools=(good, bad), tool_choice="auto"))  # text: no grammar
    for choice in ("required", {"type": "function", "function": {"name": "bad"}}):
        with pytest.raises(UnsupportedSchema) as raised:
            await backend.check_request(ask(tools=(good, bad), tool_choice=choice))
        assert (raised.value.tool, raised.value.pointer) == ("bad", "/properties/a")
    named_good = {"type": "function", "function": {"name": "good"}}
    await backend.check_request(ask(tools=(good, bad), tool_choice=named_good))


@pytest.mark.model
async def test_a_grammar_llama_cpp_refuses_is_refused_before_generating(
    local_backend: LocalBackend,
) -> None:
    """The converter writes `a ::= a` for a definition that is only a $ref to itself; llama.cpp
    refused that grammar once the request had its sequence (a 502). With the model loaded, the
    check parses the grammar as the engine would."""
    looping = {"$ref": "#/$defs/a", "$defs": {"a": {"$ref": "#/$defs/a"}}}
    with pytest.raises(UnsupportedSchema, match="left recursion"):
        await local_backend.check_request(ask(json_schema=looping))
    await local_backend.check_request(ask(json_schema={"type": "object"}))


@pytest.mark.model
async def test_a_string_the_grammar_lets_the_model_write_holds_no_raw_control_character(
    local_backend: LocalBackend,
) -> None:
    """A poem asked for in a JSON string: llama-cpp-python's converter let the model write its
    line breaks raw, which JSON forbids (`json.loads` refused the answer); escaped, they are
    JSON's."""
    schema = {"type": "object", "properties": {"poem": {"type": "string"}}, "required": ["poem"]}
    prompt = "Write a poem of four short lines about the sea, one line per line."
    for temperature in (0.0, 0.8, 1.0):
        reply = await local_backend.generate(
            GenerationRequest(
                messages=(ChatMessage("user", prompt),),
                json_schema=schema,
                max_tokens=80,
                temperature=temperature,
                seed=1,
            )
        )
        assert not [c for c in reply.text if ord(c) < 0x20 or ord(c) == 0x7F], reply.text
