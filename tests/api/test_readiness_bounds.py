"""The readiness check (POST /openapi/check) costs at most in proportion to the document sent:
each `$ref` is followed once, each schema sized once per depth, and past a cap of steps the
check answers a 400 rather than compute on."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gptactions.api import readiness
from tests.conftest import ApiClient

REF = "#/components/schemas/"


def document(schemas: dict[str, Any], top: str = "S0") -> dict[str, Any]:
    """A document whose one operation answers `top`."""
    answer = {"content": {"application/json": {"schema": {"$ref": REF + top}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "t", "version": "1"},
        "servers": [{"url": "https://gpt.example.org"}],
        "paths": {"/x": {"get": {"operationId": "x", "responses": {"200": answer}}}},
        "components": {"schemas": schemas},
    }


def doubling(depth: int) -> dict[str, Any]:
    """S0..S{depth-1}, each with two properties that both refer to the next; the last a string
    of at most one character: a value of S0 holds 2**depth of them."""
    schemas: dict[str, Any] = {
        f"S{i}": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"a": {"$ref": f"{REF}S{i + 1}"}, "b": {"$ref": f"{REF}S{i + 1}"}},
        }
        for i in range(depth)
    }
    schemas[f"S{depth}"] = {"type": "string", "maxLength": 1}
    return document(schemas)


def expected(depth: int) -> int:
    """What `longest` answers for S{depth - n}: {"a":…,"b":…} around the next, 3 at the end."""
    size = 3  # "x"
    for _ in range(depth):
        size = 2 + 2 * (len('"a"') + 2 + size)
    return size


def test_a_doubling_chain_is_sized_once_per_schema() -> None:
    doc = doubling(40)
    walk = readiness._Walk(doc)
    assert readiness.longest(doc, {"$ref": REF + "S0"}, walk=walk) == expected(40)
    # One step per reference followed and one per schema sized: 2**40 without the memory.
    assert walk.visits <= 2 * 41 + 1
    findings = readiness.check_document(doc)
    assert [(f.rule, f.pointer) for f in findings] == [("size", "/paths/~1x/get/responses/200")]
    assert f"{expected(40):,} characters" in findings[0].message


def test_a_schema_that_holds_itself_is_unbounded() -> None:
    node = {"type": "object", "additionalProperties": False}
    node["properties"] = {"a": {"$ref": REF + "S0"}, "b": {"$ref": REF + "S0"}}
    doc = document({"S0": node})
    walk = readiness._Walk(doc)
    assert readiness.longest(doc, {"$ref": REF + "S0"}, walk=walk) is None
    assert walk.visits <= readiness._MAX_DEPTH + 3  # once per depth, however many properties
    assert readiness.check_document(doc) == []  # unbounded: no size to warn about


def test_a_reference_cycle_and_a_long_alias_chain_are_followed_once() -> None:
    count = 5000
    aliases: dict[str, Any] = {f"A{i}": {"$ref": f"{REF}A{i + 1}"} for i in range(count)}
    aliases[f"A{count}"] = {"type": "string", "maxLength": 8}
    aliases["L0"] = {"$ref": REF + "L1"}
    aliases["L1"] = {"$ref": REF + "L0"}
    doc = document(aliases, top="A0")
    parameters = [
        {"name": f"p{i}", "in": "query", "schema": {"$ref": REF + "A0"}} for i in range(200)
    ]
    doc["paths"]["/x"]["get"]["parameters"] = parameters
    walk = readiness._Walk(doc)
    for _ in range(200):
        assert readiness._resolve(doc, {"$ref": REF + "A0"}, walk) == {
            "type": "string",
            "maxLength": 8,
        }
    assert walk.visits == count + 1
    assert readiness._resolve(doc, {"$ref": REF + "L0"}, walk) == {}
    assert readiness._resolve(doc, {"$ref": REF + "L1"}, walk) == {}
    assert readiness.check_document(doc) == []


def test_past_the_cap_the_check_gives_up() -> None:
    doc = doubling(40)
    with pytest.raises(readiness.TooComplex, match="too complex"):
        readiness.longest(doc, {"$ref": REF + "S0"}, walk=readiness._Walk(doc, limit=10))


async def test_the_route_answers_the_doubling_chain(api: ApiClient) -> None:
    answer = await api.http.post("/openapi/check", content=json.dumps(doubling(40)))
    assert answer.status_code == 200, answer.text
    sizes = [
        f for f in answer.json()["findings"] if f["rule"] == "size" and "/paths" in f["pointer"]
    ]
    assert len(sizes) == 1 and f"{expected(40):,}" in sizes[0]["message"]


async def test_the_route_answers_400_past_the_cap(
    api: ApiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(readiness, "_MAX_VISITS", 10)
    answer = await api.http.post("/openapi/check", content=json.dumps(doubling(40)))
    assert answer.status_code == 400, answer.text
    assert "too complex to check" in answer.json()["error"]["message"]
