"""The console's own JavaScript helpers, run in the browser: YAML emitter, examples, checks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from gptactions.services.actions.registry import NOT_BLANK
from tests.browser.conftest import Console, open_console
from tests.serving import Server

pytestmark = pytest.mark.browser

TRICKY: dict[str, Any] = {
    "plain": "hello world",
    "looks like numbers": ["1", "1.5", "-3", "1e3", "0x1F", ".inf", "1.0.0", "2025-01-31"],
    "looks like words": ["yes", "No", "on", "off", "null", "~", "true", "False", "y"],
    "indicators": [
        "- item",
        "? q",
        ": c",
        "#hash",
        "&anchor",
        "*ref",
        "!tag",
        "|pipe",
        ">fold",
        "%p",
        "@at",
        "`tick",
        "'q'",
        '"dq"',
    ],
    "inside": ["a: b", "a #b", "ends with:", "it's", "tab\there", "bell\u0007"],
    "space": [" lead", "trail ", "", " "],
    "multi": "first line\nsecond line\n",
    "multi no newline": "one\ntwo",
    "multi many newlines": "x\n\n",
    "unicode": "héllo → 世界 🙂",
    "breaks": ["a\u2028b", "nel\u0085", "bom\ufeff", "del\u007f", "c1\u0090"],
    "block with trailing spaces": "line one  \nline two\n",
    "block with tab": "a\n\tb\n",
    "empty": {"list": [], "map": {}},
    "nested": [[1, [2, []]], {"a": [{"b": None}]}],
    "numbers": [0, -1, 2.5, 1e21, True, False, None],
    "12": "numeric key",
    "key: with colon": 1,
    "- dash key": 2,
    "": "empty key",
    "list of maps": [{"x": 1, "y": {"z": [1, 2]}}, {}],
}


@pytest.fixture
def console(browser: Any, server: Server) -> Iterator[Console]:
    """The console with its security policy bypassed: these tests evaluate code in the page."""
    with open_console(browser, server, bypass_csp=True) as opened:
        yield opened


def run(console: Console, script: str, *args: Any) -> Any:
    """Evaluate `script` (an async arrow function body) with the console's modules loaded."""
    return console.page.evaluate(
        "async ([script, args]) => {"
        " const format = await import('/console/format.js');"
        " const openapi = await import('/console/openapi.js');"
        " const readiness = await import('/console/readiness.js');"
        " const transport = await import('/console/transport.js');"
        " return await (new Function('format', 'openapi', 'readiness', 'transport', 'args', script))"
        "(format, openapi, readiness, transport, args); }",
        [script, list(args)],
    )


def test_yaml_and_json_emitters_round_trip(console: Console) -> None:
    console.open(key=False)
    text = run(console, "return format.toYaml(args[0]);", TRICKY)
    assert yaml.safe_load(text) == TRICKY, text
    as_json = run(console, "return format.nodesToText(format.jsonNodes(args[0]));", TRICKY)
    assert json.loads(as_json) == TRICKY
    # JavaScript puts integer-like keys first; apart from that the text is json.dumps's.
    reordered = {"12": TRICKY["12"], **{k: v for k, v in TRICKY.items() if k != "12"}}
    assert as_json == json.dumps(reordered, indent=2, ensure_ascii=False) + "\n"


def test_examples_follow_refs_oneof_and_discriminators(console: Console) -> None:
    console.open(key=False)
    document = {
        "components": {
            "schemas": {
                "Pet": {
                    "oneOf": [
                        {"$ref": "#/components/schemas/Cat"},
                        {"$ref": "#/components/schemas/Dog"},
                    ],
                    "discriminator": {
                        "propertyName": "kind",
                        "mapping": {"cat": "#/components/schemas/Cat"},
                    },
                },
                "Cat": {
                    "type": "object",
                    "required": ["kind", "name", "lives", "born", "tags"],
                    "properties": {
                        "kind": {"type": "string"},
                        "name": {"type": "string", "minLength": 8},
                        "lives": {"type": "integer", "minimum": 9},
                        "born": {"type": "string", "format": "date-time"},
                        "tags": {
                            "type": "array",
                            "minItems": 2,
                            "items": {"enum": ["soft", "loud"]},
                        },
                        "nickname": {"type": "string"},
                        "owner": {"type": "string", "example": "Ada"},
                    },
                },
                "Dog": {"type": "object", "properties": {"kind": {"type": "string"}}},
            }
        }
    }
    example = run(
        console, "return openapi.exampleFor(args[0], {$ref: '#/components/schemas/Pet'});", document
    )
    assert example["kind"] == "cat"
    assert len(example["name"]) >= 8 and example["lives"] == 9
    assert example["tags"] == ["soft", "soft"] and example["owner"] == "Ada"
    assert "nickname" not in example
    problems = run(
        console,
        "return openapi.validate(args[0], {$ref: '#/components/schemas/Cat'}, args[1]);",
        document,
        example,
    )
    assert problems == []


def test_response_checks_name_each_mismatch(console: Console) -> None:
    console.open(key=False)
    schema = {
        "type": "object",
        "required": ["id", "items"],
        "additionalProperties": False,
        "properties": {
            "id": {"type": "string"},
            "count": {"type": "integer", "minimum": 0},
            "when": {"type": "string", "format": "date-time", "nullable": True},
            "items": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["a"],
                    "properties": {"a": {"type": "boolean"}},
                },
            },
        },
    }
    value = {"count": -1.5, "when": None, "items": [{"a": True}, {"a": "yes"}, {}], "extra": 1}
    problems = run(console, "return openapi.validate({}, args[0], args[1]);", schema, value)
    found = {(p["pointer"], p["message"]) for p in problems}
    assert ("/id", 'missing required property "id"') in found
    assert ("/count", "expected integer, got number") in found
    assert ("/items/1/a", "expected boolean, got string") in found
    assert ("/items/2/a", 'missing required property "a"') in found
    assert ("/extra", 'unexpected property "extra"') in found
    assert len(problems) == 5


def test_string_limits_are_said_in_words(console: Console) -> None:
    console.open(key=False)
    schema = {"type": "string", "minLength": 1, "maxLength": 5, "pattern": r"\S"}
    said = {
        value: [
            p["message"]
            for p in run(console, "return openapi.validate({}, args[0], args[1]);", schema, value)
        ]
        for value in ("", "   ", "toolong", "ok")
    }
    assert said == {
        "": ["must not be empty"],
        "   ": ["must not be blank"],
        "toolong": ["must be at most 5 characters long"],
        "ok": [],
    }
    # The server's document spells its whitespace out (Python's `\s` differs from JavaScript's).
    spelled = {"type": "string", "pattern": NOT_BLANK}
    for value, words in (("\u3000 ", ["must not be blank"]), ("\u001c", [])):
        found = run(console, "return openapi.validate({}, args[0], args[1]);", spelled, value)
        assert [p["message"] for p in found] == words, value
    three = {"type": "string", "minLength": 3, "pattern": "^[a-z]+$"}
    (short, form) = run(console, "return openapi.validate({}, args[0], args[1]);", three, "A")
    assert short["message"] == "must be at least 3 characters long"
    assert form["message"] == "does not have the form the document asks for (the pattern ^[a-z]+$)"


def test_sse_parser_and_link_header(console: Console) -> None:
    console.open(key=False)
    events, rest = run(
        console,
        "return transport.parseSse(args[0]);",
        ': keep-alive\n\nevent: token\ndata: {"text": "a"}\n\nevent: done\r\ndata: {"reply": "a"}\r\n\r\nevent: tok',
    )
    assert events == [
        {"event": "token", "data": {"text": "a"}},
        {"event": "done", "data": {"reply": "a"}},
    ]
    assert rest == "event: tok"
    link = console.page.evaluate(
        "async (h) => (await import('/console/logs.js')).nextLink(h, 'http://x.test/api/v1/gpt/logs?limit=2')",
        '<https://x.test/first>; rel="first", </api/v1/gpt/logs?limit=2&cursor=abc>; rel="next"',
    )
    assert link == "http://x.test/api/v1/gpt/logs?limit=2&cursor=abc"
