"""Labels and field names from requests reach llama.cpp grammars: none may crash the server."""

from __future__ import annotations

import pytest

from gptactions.llm.local import (
    MAX_REPETITION,
    choices_grammar,
    grammar_literal,
    schema_grammar_is_safe,
)
from gptactions.services.actions import ActionContext, ActionRegistry
from gptactions.services.actions.builtin import extraction_schema

from .conftest import run_handler

NASTY = [
    'say "hi"',
    "back\\slash",
    "form\ffeed",
    "bell\bb",
    "tab\tx",
    "new\nline",
    "nul\x00",
    "del\x7f",
    "é ünï 🙂",
    "\x04 and \U000bf602",  # bytes the embedded model's vocabulary cannot write
]


def test_literals_use_only_the_escapes_gbnf_reads() -> None:
    assert grammar_literal('a"b\\c') == '"a\\"b\\\\c"'
    assert grammar_literal("\n\r\t") == '"\\n\\r\\t"'
    assert grammar_literal("\f\b\x00\x7f") == '"\\x0C\\x08\\x00\\x7F"'
    assert grammar_literal("é 🙂") == '"é 🙂"'
    assert choices_grammar(("yes", 'n"o')) == 'root ::= "yes" | "n\\"o"\n'


def test_schemas_with_unsafe_literals_are_recognised() -> None:
    assert schema_grammar_is_safe(extraction_schema({"name": "string", "é": "integer"}))
    for name in NASTY[:-2]:
        assert not schema_grammar_is_safe(extraction_schema({name: "string"})), name
    assert not schema_grammar_is_safe({"enum": ["a", 'b"']})
    assert not schema_grammar_is_safe({"items": {"const": "a\\b"}})
    assert not schema_grammar_is_safe({"anyOf": [{"enum": [{"a": 1}]}]})
    assert schema_grammar_is_safe({"type": "string", "pattern": "^\\d+$"})
    writable = set("abcx").__contains__
    assert schema_grammar_is_safe({"enum": ["a", "b"], "pattern": "c"}, writable)
    assert not schema_grammar_is_safe({"enum": ["a", "d"]}, writable)
    assert not schema_grammar_is_safe({"properties": {"x": {"pattern": "ad"}}}, writable)


@pytest.mark.model
async def test_nasty_labels_and_field_names_with_the_real_model(
    registry: ActionRegistry, model_context: ActionContext
) -> None:
    single = await run_handler(
        registry, model_context, "classify", {"text": "hello", "labels": NASTY}
    )
    assert single.success and single.result in NASTY
    # Chosen by number (`builtin.classify`), named under aliases (`builtin.extract`): these
    # succeed now, where the grammar of the labels or names themselves could not be used.
    several = await run_handler(
        registry,
        model_context,
        "classify",
        {"text": "hello", "labels": NASTY, "multiLabel": True},
    )
    assert several.success and set(several.data) <= set(NASTY)
    extracted = await run_handler(
        registry,
        model_context,
        "extract",
        {"text": "Ann is 3.", "fields": {'say "x"': "string", "a\\b\f": "integer"}},
    )
    assert extracted.success and list(extracted.data) == ['say "x"', "a\\b\f"]


def test_schemas_that_repeat_too_much_for_a_grammar_are_recognised() -> None:
    """llama-cpp-python writes a count of n as n nested groups: llama.cpp's parser overflowed
    its stack at 65,536 (the server died) and could not parse 4,096."""
    assert schema_grammar_is_safe({"type": "string", "maxLength": MAX_REPETITION})
    assert schema_grammar_is_safe({"type": "string", "pattern": "^a{2,1000}$"})
    for schema in [
        {"type": "string", "maxLength": MAX_REPETITION + 1},
        {"type": "string", "minLength": 10**9},
        {"type": "array", "items": {"type": "integer"}, "minItems": 4096},
        {"properties": {"x": {"type": "string", "pattern": "^a{5000}$"}}},
        {"properties": {"x": {"pattern": "^a{1,65536}$"}}},
        # Each count allowed, but together too large a grammar.
        {"properties": {str(n): {"maxLength": MAX_REPETITION} for n in range(11)}},
        # Lists that leave no rule: llama.cpp cannot parse the grammar.
        {"anyOf": []},
        {"items": {"enum": []}},
        {"type": []},
    ]:
        assert not schema_grammar_is_safe(schema), schema
    # A property may be called minLength or pattern: its schema is not a count.
    assert schema_grammar_is_safe({"properties": {"minLength": {"type": "integer"}}})
    assert schema_grammar_is_safe({"properties": {"pattern": {"type": "string"}}})
