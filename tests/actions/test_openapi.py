"""The actions' part of the OpenAPI document: precise, a superset of the seed, valid 3.0.3."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate

from gptactions.api.openapi import build_document
from gptactions.api.openapi_actions import (
    describe_actions,
    merge_action_schemas,
    to_openapi_schema,
)
from gptactions.config import Settings
from gptactions.services.actions import ActionRegistry, registry_from_file

from .conftest import HAIKU_YAML

SEED = Path(__file__).parent.parent / "data" / "seed-openapi.yaml"
WriteFile = Callable[[str, str], Path]

FANCY = """\
actions:
  - name: fancy
    description: Uses JSON Schema 2020-12 keywords that OpenAPI 3.0.3 lacks.
    parameters:
      type: object
      required: [mode, point]
      $defs:
        word: {type: string, maxLength: 20}
      properties:
        mode: {const: fast}
        label: {type: [string, "null"], maxLength: 10}
        either: {type: [string, integer]}
        point:
          type: array
          prefixItems: [{type: number}, {type: number}]
          maxItems: 2
        score: {type: number, exclusiveMinimum: 0, exclusiveMaximum: 1}
        word: {$ref: "#/$defs/word"}
        tags:
          type: object
          propertyNames: {pattern: "^[a-z]+$"}
          additionalProperties: {type: string}
          examples: [{a: b}]
        anything: true
        nothing: {type: "null"}
        when:
          if: {type: string}
          then: {minLength: 1}
    prompt: "Go {{ mode }}"
"""

ONLY_2020 = {
    "const",
    "$defs",
    "prefixItems",
    "propertyNames",
    "examples",
    "if",
    "then",
    "else",
    "$ref_to_defs",
}


def seed() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(SEED.read_text(encoding="utf-8"))
    return document


def document_for(registry: ActionRegistry) -> dict[str, Any]:
    """The document the server serves with this registry."""
    return build_document(Settings(), registry, ["local"])


def walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def request_validator(document: dict[str, Any]) -> OAS30Validator:
    root = {"$ref": "#/components/schemas/ActionRequest", "components": document["components"]}
    return OAS30Validator(root)


@pytest.fixture
def full_registry(write_file: WriteFile) -> ActionRegistry:
    return registry_from_file(
        write_file("actions.yaml", HAIKU_YAML + FANCY.removeprefix("actions:\n"))
    )


def test_the_document_is_valid_openapi_3_0_3(full_registry: ActionRegistry) -> None:
    document = document_for(full_registry)
    assert document["openapi"] == "3.0.3"
    validate(document)


def test_it_stays_a_superset_of_the_seed(full_registry: ActionRegistry) -> None:
    original = seed()["components"]["schemas"]
    schemas = document_for(full_registry)["components"]["schemas"]
    for name in ("ActionRequest", "ActionResponse"):
        before, after = original[name], schemas[name]
        assert after["type"] == before["type"]
        assert set(before.get("required", [])) <= set(after.get("required", []))
        for prop, schema in before["properties"].items():
            for key, value in schema.items():
                assert after["properties"][prop][key] == value, (name, prop, key)
    assert schemas["ActionRequest"]["required"] == ["action", "parameters"]
    assert schemas["ActionRequest"]["properties"]["parameters"]["additionalProperties"] is True


def test_the_request_names_every_action_and_describes_each(full_registry: ActionRegistry) -> None:
    schemas = document_for(full_registry)["components"]["schemas"]
    request = schemas["ActionRequest"]
    assert request["properties"]["action"]["enum"] == full_registry.names
    assert "haiku" in full_registry.names and "summarize" in full_registry.names
    assert request["discriminator"]["propertyName"] == "action"
    mapping = request["discriminator"]["mapping"]
    assert sorted(mapping) == full_registry.names
    assert [v["$ref"] for v in request["oneOf"]] == [mapping[n] for n in full_registry.names]
    for name, ref in mapping.items():
        variant = schemas[ref.removeprefix("#/components/schemas/")]
        assert variant["properties"]["action"]["enum"] == [name]
        assert variant["properties"]["parameters"] == {
            "$ref": f"#/components/schemas/Action_{name}Parameters"
        }
    haiku = schemas["Action_haikuParameters"]
    assert haiku["required"] == ["topic"]
    assert haiku["properties"]["topic"] == {"type": "string", "maxLength": 200}
    assert schemas["ActionResponse"]["properties"]["data"]["nullable"] is True


def test_no_json_schema_2020_keyword_is_left(full_registry: ActionRegistry) -> None:
    schemas = document_for(full_registry)["components"]["schemas"]
    for node in walk(schemas):
        assert not ONLY_2020 & set(node), node
        assert not isinstance(node.get("type"), list), node
        if node.get("type") == "array":
            assert "items" in node
        for bound in ("exclusiveMinimum", "exclusiveMaximum"):
            assert isinstance(node.get(bound, True), bool)
        ref = node.get("$ref")
        assert ref is None or ref.startswith("#/components/schemas/")
        if node.get("type") == "object":
            assert "properties" in node, node  # GPT Actions' import wants them listed


def test_the_conversion_keeps_the_meaning_where_3_0_can_say_it() -> None:
    fancy = yaml.safe_load(FANCY)["actions"][0]["parameters"]
    props = to_openapi_schema(fancy)["properties"]
    assert props["mode"] == {"enum": ["fast"]}
    assert props["label"] == {"type": "string", "maxLength": 10, "nullable": True}
    assert props["either"] == {"anyOf": [{"type": "string"}, {"type": "integer"}]}
    assert props["point"] == {"type": "array", "maxItems": 2, "items": {}}
    assert props["score"] == {
        "type": "number",
        "minimum": 0,
        "exclusiveMinimum": True,
        "maximum": 1,
        "exclusiveMaximum": True,
    }
    assert props["word"] == {"type": "string", "maxLength": 20}
    assert props["tags"] == {
        "type": "object",
        "properties": {},
        "additionalProperties": {"type": "string"},
        "example": {"a": "b"},
    }
    assert props["anything"] == {}
    assert props["nothing"] == {"nullable": True}
    assert props["when"] == {}


def test_recursive_and_foreign_refs_end() -> None:
    schema = {
        "type": "object",
        "$defs": {"node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/node"}}}},
        "properties": {"root": {"$ref": "#/$defs/node"}, "far": {"$ref": "https://x/y.json"}},
    }
    converted = to_openapi_schema(schema)
    assert converted["properties"]["far"] == {}
    assert converted["properties"]["root"] == {
        "type": "object",
        "properties": {"next": {}},  # the recursion ends at its first repetition
    }
    tree = {
        "$defs": {
            "leaf": {"type": "string"},
            "node": {
                "properties": {
                    "left": {"$ref": "#/$defs/node"},
                    "right": {"$ref": "#/$defs/node"},
                    "label": {"$ref": "#/$defs/leaf"},
                }
            },
        },
        "$ref": "#/$defs/node",
    }
    assert to_openapi_schema(tree) == {
        "properties": {"left": {}, "right": {}, "label": {"type": "string"}}
    }


def test_an_empty_registry_adds_no_enum_and_no_variants() -> None:
    schemas = copy.deepcopy(seed()["components"]["schemas"])
    merge_action_schemas(schemas, ActionRegistry())
    expected = copy.deepcopy(seed()["components"]["schemas"]["ActionRequest"])
    expected["properties"]["parameters"]["properties"] = {}
    assert schemas["ActionRequest"] == expected
    validate({**seed(), "components": {**seed()["components"], "schemas": schemas}})


@pytest.mark.parametrize(
    ("body", "valid"),
    [
        ({"action": "summarize", "parameters": {"text": "t", "maxWords": 5}}, True),
        ({"action": "haiku", "parameters": {"topic": "sea"}}, True),
        ({"action": "summarize", "parameters": {"maxWords": 5}}, False),
        # An unknown parameter is ignored (with a warning), and the document says so.
        ({"action": "summarize", "parameters": {"text": "t", "extra": 1}}, True),
        ({"action": "haiku", "parameters": {"topic": "x" * 201}}, False),
        ({"action": "nope", "parameters": {}}, False),
        ({"action": "summarize"}, False),
    ],
)
def test_the_schemas_describe_requests_as_the_server_checks_them(
    full_registry: ActionRegistry, body: dict[str, Any], valid: bool
) -> None:
    validator = request_validator(document_for(full_registry))
    assert validator.is_valid(body) is valid
    if "parameters" in body and body["action"] in full_registry:
        server_valid = not full_registry.validate(body["action"], body["parameters"])
        assert server_valid is valid


def test_the_listing_shows_the_full_schemas(full_registry: ActionRegistry) -> None:
    listing = describe_actions(full_registry)
    by_name = {a["name"]: a for a in listing["actions"]}
    assert by_name["haiku"]["builtin"] is False and by_name["summarize"]["builtin"] is True
    assert by_name["fancy"]["parameters"]["properties"]["mode"] == {"const": "fast"}
    schemas = document_for(full_registry)["components"]["schemas"]
    validator = OAS30Validator(
        {"$ref": "#/components/schemas/ActionList", "components": {"schemas": schemas}}
    )
    assert validator.is_valid(listing)
    jsonschema.Draft202012Validator.check_schema(by_name["fancy"]["parameters"])
