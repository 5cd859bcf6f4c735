"""The actions' part of the OpenAPI document, and the answer of GET /actions, from the registry.

Built from the registry so that user-defined actions show.

Parameter schemas are written in JSON Schema 2020-12; the served document is OpenAPI 3.0.3, whose
Schema Object is an older, narrower dialect that GPT Actions import. `to_openapi_schema` converts
one to the other, keeping what 3.0.3 can say and dropping the rest (the server still validates
against the full schema, so nothing is lost but documentation).
"""

from __future__ import annotations

import copy
from typing import Any

from gptactions.api.responses import ActionInfo, ActionList
from gptactions.services.actions import ActionRegistry

SCHEMA_PREFIX = "#/components/schemas/"

# Keywords an OpenAPI 3.0.3 Schema Object has, besides those that hold subschemas.
_PLAIN_KEYWORDS = frozenset(
    {
        "title",
        "description",
        "type",
        "format",
        "default",
        "enum",
        "multipleOf",
        "maximum",
        "exclusiveMaximum",
        "minimum",
        "exclusiveMinimum",
        "maxLength",
        "minLength",
        "pattern",
        "maxItems",
        "minItems",
        "uniqueItems",
        "maxProperties",
        "minProperties",
        "required",
        "nullable",
        "readOnly",
        "writeOnly",
        "deprecated",
        "example",
    }
)
_OPENAPI_TYPES = frozenset({"string", "number", "integer", "boolean", "array", "object"})


def to_openapi_schema(schema: Any) -> dict[str, Any]:
    """A JSON Schema (2020-12) as an OpenAPI 3.0.3 Schema Object.

    `const` becomes a one-value `enum`; a list of types becomes `nullable` or an `anyOf`;
    numeric `exclusiveMinimum`/`exclusiveMaximum` become their 3.0 boolean form; the first of
    `examples` becomes `example`; local `$ref`s into `$defs` are inlined; keywords 3.0.3 lacks
    (`$defs`, `prefixItems`, `propertyNames`, `if`, `patternProperties`, ...) are dropped; an
    object schema without `properties` gets an empty one, which GPT Actions' import requires.
    """
    root = schema if isinstance(schema, dict) else {}
    return _convert(schema, root, frozenset())


def _convert(schema: Any, root: dict[str, Any], expanding: frozenset[str]) -> dict[str, Any]:
    """One schema converted; `expanding` holds the references being inlined above it, so that a
    recursive one ends (as any value) instead of going on forever."""
    if schema is True or schema == {}:
        return {}
    if schema is False:
        return {"not": {}}
    if not isinstance(schema, dict):
        return {}
    if "$ref" in schema:
        ref = schema["$ref"]
        target = _resolve(ref, root)
        if target is None or ref in expanding:
            return {k: v for k, v in schema.items() if k == "description"}
        merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        return _convert(merged, root, expanding | {ref})

    out: dict[str, Any] = {k: copy.deepcopy(v) for k, v in schema.items() if k in _PLAIN_KEYWORDS}
    if "const" in schema:
        out["enum"] = [copy.deepcopy(schema["const"])]
    if "examples" in schema and isinstance(schema["examples"], list) and schema["examples"]:
        out.setdefault("example", copy.deepcopy(schema["examples"][0]))
    for bound, inclusive in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        value = schema.get(bound)
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[inclusive] = value
            out[bound] = True
    _convert_type(out)
    if out.get("required") == []:
        del out["required"]  # 3.0.3 wants at least one name in `required`
    if "enum" in out and None in out["enum"]:
        out["nullable"] = True

    for keyword in ("allOf", "anyOf", "oneOf"):
        if isinstance(schema.get(keyword), list):
            out[keyword] = [_convert(s, root, expanding) for s in schema[keyword]]
    if "not" in schema:
        out["not"] = _convert(schema["not"], root, expanding)
    if isinstance(schema.get("items"), dict | bool):
        out["items"] = _convert(schema["items"], root, expanding)
    elif out.get("type") == "array":
        out["items"] = {}  # 3.0.3 requires items beside type: array
    if isinstance(schema.get("properties"), dict):
        out["properties"] = {
            name: _convert(sub, root, expanding) for name, sub in schema["properties"].items()
        }
    additional = schema.get("additionalProperties")
    if isinstance(additional, bool):
        out["additionalProperties"] = additional
    elif isinstance(additional, dict):
        out["additionalProperties"] = _convert(additional, root, expanding)
    if out.get("type") == "object":
        out.setdefault("properties", {})  # GPT Actions refuses object schemas without properties
    return out


def _convert_type(out: dict[str, Any]) -> None:
    kind = out.get("type")
    if not isinstance(kind, list):
        if kind == "null":
            del out["type"]
            out["nullable"] = True
        return
    kinds = [k for k in kind if k in _OPENAPI_TYPES]
    del out["type"]
    if "null" in kind:
        out["nullable"] = True
    if len(kinds) == 1:
        out["type"] = kinds[0]
    elif kinds:
        out["anyOf"] = [{"type": k, **({"items": {}} if k == "array" else {})} for k in kinds]


def _resolve(ref: Any, root: dict[str, Any]) -> dict[str, Any] | None:
    """The target of a local reference like `#/$defs/name`, or None for anything else."""
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return None
    node: Any = root
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node if isinstance(node, dict) else None


def parameters_schema_name(action: str) -> str:
    """The component name of an action's parameter schema."""
    return f"Action_{action}Parameters"


def request_schema_name(action: str) -> str:
    """The component name of the request that calls one action."""
    return f"ActionRequest_{action}"


def action_request_schemas(registry: ActionRegistry) -> dict[str, dict[str, Any]]:
    """OpenAPI 3.0.3 component schemas describing action requests and responses precisely.

    Returns, by component name:
    - `ActionRequest`: the seed's schema (same properties, descriptions and `required`), with
      the action names as an `enum`, and a `oneOf` of one variant per action under a
      `discriminator` on `action`;
    - `ActionRequest_<name>`: a variant: `action` fixed to the name, `parameters` referring to
    - `Action_<name>Parameters`: the action's parameter schema converted to OpenAPI 3.0.3;

    The responses (`ActionResponse`, `ActionInfo`, `ActionList`) are models in `api/responses.py`,
    described in the document with the other response models.

    To merge them into a document built from the seed, call
    `merge_action_schemas(document["components"]["schemas"], registry)`: it adds what the seed
    lacks and keeps what it has. The paths keep referring to `ActionRequest` and
    `ActionResponse` by `$ref`, so they describe the precise versions without change.
    """
    names = registry.names
    schemas: dict[str, dict[str, Any]] = {}
    variants: list[dict[str, str]] = []
    mapping: dict[str, str] = {}
    for definition in registry:
        params_name = parameters_schema_name(definition.name)
        variant_name = request_schema_name(definition.name)
        parameters = to_openapi_schema(definition.parameters)
        parameters.setdefault("description", f"Parameters of the {definition.name} action.")
        schemas[params_name] = parameters
        confirm = " ChatGPT asks the user before running it." if definition.consequential else ""
        schemas[variant_name] = {
            "type": "object",
            "description": definition.description + confirm,
            "required": ["action", "parameters"],
            "properties": {
                "action": {
                    "type": "string",
                    "enum": [definition.name],
                    "description": f"The action to run: {definition.name}.",
                },
                "parameters": {"$ref": SCHEMA_PREFIX + params_name},
            },
        }
        variants.append({"$ref": SCHEMA_PREFIX + variant_name})
        mapping[definition.name] = SCHEMA_PREFIX + variant_name

    request: dict[str, Any] = {
        "type": "object",
        "required": ["action", "parameters"],
        "properties": {
            "action": {
                "type": "string",
                "description": 'The GPT action to trigger (e.g., "summarize", "generateCode").',
                **({"enum": names} if names else {}),
            },
            "parameters": {
                "type": "object",
                "properties": {},
                "additionalProperties": True,
                "description": "Parameters for the specified action.",
            },
        },
    }
    if variants:
        request["description"] = (
            "Which action to run, and its parameters; each action's parameters are described by "
            "the variant of the same name."
        )
        request["oneOf"] = variants
        request["discriminator"] = {"propertyName": "action", "mapping": mapping}
    schemas["ActionRequest"] = request
    return schemas


def merge_action_schemas(schemas: dict[str, Any], registry: ActionRegistry) -> None:
    """Merge `action_request_schemas` into a document's component schemas, in place.

    What the document already says wins (the seed's descriptions, properties the server added);
    what it lacks is added, at any depth. So the seed's `ActionRequest` and `ActionResponse`
    keep every property, description and `required` they had, and gain the enum, the variants
    and `data`.
    """
    for name, schema in action_request_schemas(registry).items():
        _add_missing(schemas.setdefault(name, {}), schema)


def _add_missing(into: dict[str, Any], new: dict[str, Any]) -> None:
    for key, value in new.items():
        if key not in into:
            into[key] = copy.deepcopy(value)
        elif isinstance(into[key], dict) and isinstance(value, dict):
            _add_missing(into[key], value)


def describe_actions(registry: ActionRegistry) -> dict[str, Any]:
    """The answer of `GET /api/v1/gpt/actions`: every action's name, description and schema
    (all of them: no next page)."""
    listed = ActionList(actions=[], next_cursor=None)
    return {
        **listed.wire(),
        "actions": [
            ActionInfo(
                name=d.name,
                description=d.description,
                parameters=d.parameters,
                builtin=d.builtin,
                consequential=d.consequential,
            ).wire()  # `truncatedFields` only when shortened
            for d in registry
        ],
    }
