"""Labels and field names from requests reach llama.cpp grammars: none may crash the server."""

from __future__ import annotations

import pytest

from gptactions.llm.local import choices_grammar, grammar_literal, schema_grammar_is_safe
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
    assert single.success and single.result in NASTY[:-1]
    several = await run_handler(
        registry,
        model_context,
        "classify",
        {"text": "hello", "labels": NASTY, "multiLabel": True},
    )
    assert not several.success or set(several.data) <= set(NASTY)
    extracted = await run_handler(
        registry,
        model_context,
        "extract",
        {"text": "Ann is 3.", "fields": {'say "x"': "string", "a\\b\f": "integer"}},
    )
    assert not extracted.success or set(extracted.data) == {'say "x"', "a\\b\f"}
