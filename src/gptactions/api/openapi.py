"""The served OpenAPI document: the seed's document, unchanged, with this server's additions.

Starting from the seed itself (shipped as package data) keeps the document a superset of it by
construction; every addition below is written against the code that implements it, and the
contract test (schemathesis) checks the two agree.
"""

from __future__ import annotations

import copy
from functools import cache
from importlib.resources import files
from typing import Any

import yaml

from gptactions import __version__
from gptactions.api.openapi_actions import merge_action_schemas
from gptactions.config import Settings
from gptactions.services.actions import ActionRegistry

API = "/api/v1/gpt"
ERROR_REF = {"$ref": "#/components/schemas/Error"}


@cache
def seed_document() -> dict[str, Any]:
    """The seed's OpenAPI document, as shipped in the package."""
    text = files("gptactions").joinpath("data/seed-openapi.yaml").read_text(encoding="utf-8")
    document: dict[str, Any] = yaml.safe_load(text)
    return document


def _error_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ERROR_REF}}}


_ERRORS = {
    "400": "Invalid input.",
    "401": "Missing, unknown or revoked API key.",
    "403": "The API key lacks the scope this operation needs.",
    "404": "Not found.",
    "405": "Method not allowed.",
    "413": "The body is larger than the server's limit.",
    "429": "The API key's rate limit is exceeded; retry after the Retry-After seconds.",
    "415": "The body is not JSON.",
    "500": "Internal error.",
    "502": "The model backend answered badly.",
    "503": "Every model backend is down or saturated; retry after the Retry-After seconds.",
    "504": "The model backend did not answer in time.",
}


def _add_errors(operation: dict[str, Any], codes: list[str]) -> None:
    responses = operation.setdefault("responses", {})
    for code in codes:
        if code in responses:
            # Keep the seed's description; add the error body it did not describe.
            responses[code].setdefault("content", {"application/json": {"schema": ERROR_REF}})
        else:
            responses[code] = {"$ref": f"#/components/responses/Error{code}"}


def _text_property(base: dict[str, Any], max_length: int) -> dict[str, Any]:
    return {**base, "minLength": 1, "maxLength": max_length, "pattern": r"\S"}


def _servers(settings: Settings) -> list[dict[str, str]]:
    urls = [u for u in [settings.public_url, *settings.servers] if u]
    if not urls:
        return copy.deepcopy(seed_document()["servers"])
    return [
        {"url": url.rstrip("/") or "/", "description": "This server" if i == 0 else "Server"}
        for i, url in enumerate(dict.fromkeys(urls))
    ]


def build_document(
    settings: Settings, registry: ActionRegistry, models: list[str]
) -> dict[str, Any]:
    """The document this server serves at /openapi.json and /openapi.yaml.

    `models` are the configured backends' names, which a request may give as `model`.
    """
    doc = copy.deepcopy(seed_document())
    doc["info"]["x-server-version"] = __version__
    doc["servers"] = _servers(settings)
    components = doc["components"]
    components["securitySchemes"]["ApiKeyAuth"]["description"] = (
        "An API key, as 'Bearer <key>' or the bare key. Create one with `gptactions keys create`."
    )
    schemas = components["schemas"]

    request = schemas["ConversationRequest"]["properties"]
    request["userId"] = _text_property(request["userId"], settings.max_user_id_length)
    request["message"] = _text_property(request["message"], settings.max_message_length)
    request["conversationId"] = {
        "type": "string",
        "minLength": 1,
        "maxLength": 64,
        "description": "For /respond: the conversation to continue. Without it, the user's "
        "latest conversation continues (or a new one starts). Ignored by /conversations.",
    }
    request["maxTokens"] = {
        "type": "integer",
        "minimum": 1,
        "maximum": settings.max_tokens_limit,
        "description": f"Most tokens to generate (default {settings.default_max_tokens}).",
    }
    request["temperature"] = {
        "type": "number",
        "minimum": 0,
        "maximum": 2,
        "default": 0,
        "description": "Sampling temperature; 0 (the default) makes replies deterministic.",
    }
    request["model"] = {
        "type": "string",
        "enum": models,
        "description": "A configured backend's name; the default backend when absent.",
    }

    response = schemas["ConversationResponse"]
    response["required"] = ["conversationId", "reply"]
    response["properties"].update(
        {
            "model": {"type": "string", "description": "The model that replied."},
            "usage": {"$ref": "#/components/schemas/Usage"},
            "latencyMs": {"type": "integer", "description": "Time to the reply, in ms."},
        }
    )
    schemas["Usage"] = {
        "type": "object",
        "description": "Token counts of one generation.",
        "properties": {
            "promptTokens": {"type": "integer"},
            "completionTokens": {"type": "integer"},
        },
    }

    action_request = schemas["ActionRequest"]
    action_request["properties"]["action"].update(
        {"minLength": 1, "maxLength": 100, "enum": registry.names}
    )
    action_request["properties"]["userId"] = {
        "type": "string",
        "minLength": 1,
        "maxLength": 256,
        "description": "Whose call this is, for the log; the key's name when absent.",
    }
    action_request["properties"]["model"] = request["model"]
    action_response = schemas["ActionResponse"]
    action_response["required"] = ["success", "result"]
    action_response["properties"]["data"] = {
        "nullable": True,
        "description": "The parsed result of actions with structured output; null otherwise.",
    }
    merge_action_schemas(schemas, registry)  # variants per action, ActionInfo, ActionList

    schemas["Error"] = {
        "type": "object",
        "required": ["error"],
        "description": "The one shape of every error this API returns.",
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message", "details"],
                "properties": {
                    "code": {"type": "string", "description": "Stable machine-readable code."},
                    "message": {"type": "string", "description": "What went wrong, for people."},
                    "details": {
                        "type": "array",
                        "description": "Each problem with the input, where and what.",
                        "items": {
                            "type": "object",
                            "required": ["pointer", "message"],
                            "properties": {
                                "pointer": {
                                    "type": "string",
                                    "description": "JSON pointer to the field, e.g. /message.",
                                },
                                "message": {"type": "string"},
                            },
                        },
                    },
                },
            }
        },
    }
    components["responses"] = {
        f"Error{code}": _error_response(description) for code, description in _ERRORS.items()
    }

    paths = doc["paths"]
    conversations = paths[f"{API}/conversations"]["post"]
    conversations["operationId"] = "startConversation"
    conversations["description"] = "Starts a conversation, stores it, and returns the reply."
    respond = paths[f"{API}/respond"]["post"]
    respond["operationId"] = "respond"
    respond["description"] = (
        "Continues conversationId when given (404 when unknown for this user), else the "
        "user's latest conversation, else starts one. The model sees the earlier turns."
    )
    model_errors = ["413", "415", "401", "403", "429", "500", "502", "503", "504"]
    for operation in (conversations, respond):
        _add_errors(operation, ["400", *model_errors])
        operation["x-openai-isConsequential"] = False
    _add_errors(respond, ["404"])
    for operation in (conversations, respond):
        operation["description"] += (
            " With `Accept: text/event-stream` the reply streams as Server-Sent Events."
        )
        operation["responses"]["200"]["content"]["text/event-stream"] = _event_stream()

    status = paths[f"{API}/status"]["get"]
    status["operationId"] = "getStatus"
    status_schema = status["responses"]["200"]["content"]["application/json"]["schema"]
    status_schema["required"] = ["status", "uptime"]
    status_schema["properties"].update(
        {
            "uptimeSeconds": {"type": "integer"},
            "version": {"type": "string", "description": "The server's version."},
            "backend": {"type": "string", "description": "The default backend's name."},
            "model": {"type": "string", "description": "The default backend's model."},
            "database": {"type": "string", "enum": ["ok", "unreachable"]},
            "backends": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "kind": {"type": "string"},
                        "model": {"type": "string"},
                        "reachable": {"type": "boolean"},
                        "lastError": {"type": "string", "nullable": True},
                        "latencyMs": {"type": "integer", "nullable": True},
                    },
                },
            },
        }
    )
    _add_errors(status, ["401", "429", "500"])

    logs = paths[f"{API}/logs"]["get"]
    logs["operationId"] = "getLogs"
    logs["description"] = (
        "Newest first. A key sees its own tenant's interactions; an admin key sees all. "
        'The next page is in the Link header (rel="next").'
    )
    logs["parameters"] = _log_parameters(settings)
    logs_200 = logs["responses"]["200"]
    logs_200["headers"] = {
        "Link": {
            "description": 'The next page: <url>; rel="next". Absent on the last page.',
            "schema": {"type": "string"},
        }
    }
    item = logs_200["content"]["application/json"]["schema"]["items"]
    item["required"] = ["timestamp", "userId", "message", "reply"]
    item["properties"]["timestamp"].update(
        {"format": "date-time", "description": "When it happened (RFC 3339, UTC)."}
    )
    item["properties"].update(
        {
            "id": {"type": "integer"},
            "conversationId": {"type": "string", "nullable": True},
            "kind": {"type": "string", "enum": ["conversation", "action"]},
            "action": {"type": "string", "nullable": True},
            "status": {"type": "string", "enum": ["ok", "error", "failed", "cancelled"]},
            "error": {"type": "string", "nullable": True},
            "model": {"type": "string", "nullable": True},
            "latencyMs": {"type": "integer"},
            "promptTokens": {"type": "integer"},
            "completionTokens": {"type": "integer"},
        }
    )
    _add_errors(logs, ["400", "401", "403", "429", "500"])

    actions = paths[f"{API}/actions"]["post"]
    actions["operationId"] = "triggerAction"
    actions["description"] = (
        "Runs a named action (listed by GET /api/v1/gpt/actions) with its parameters. When the "
        "model's output cannot be brought into the action's form, the answer is still 200, "
        "with success false and the reason in result. Unknown action or bad parameters: 400."
    )
    actions["x-openai-isConsequential"] = False
    _add_errors(actions, ["400", *model_errors])
    paths[f"{API}/actions"]["get"] = listing = {
        "summary": "List the available actions.",
        "description": "Every action's name, description and parameter schema.",
        "operationId": "listActions",
        "responses": {
            "200": {
                "description": "The actions.",
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/ActionList"}}
                },
            }
        },
    }
    _add_errors(listing, ["401", "429", "500"])
    return doc


def _event_stream() -> dict[str, Any]:
    """The `text/event-stream` answer of the conversation operations."""
    return {
        "schema": {
            "type": "string",
            "description": (
                "Server-Sent Events. `token` events carry the reply as it is generated "
                '(`data: {"text": "..."}`); a final `done` event carries the stored turn '
                "(conversationId, reply, model, usage, latencyMs, as the JSON answer); a failure "
                "after the stream began is an `error` event with the API's error shape "
                '(`data: {"error": {"code": "...", "message": "..."}}`) instead of `done`. '
                "Failures before the first token are answered as plain JSON errors."
            ),
        },
        "example": (
            'event: token\ndata: {"text": "Hello"}\n\n'
            'event: token\ndata: {"text": "!"}\n\n'
            'event: done\ndata: {"conversationId": "conv_0f3c", "reply": "Hello!", '
            '"model": "SmolLM2-135M-Instruct", '
            '"usage": {"promptTokens": 21, "completionTokens": 2}, "latencyMs": 180}\n\n'
        ),
    }


def _log_parameters(settings: Settings) -> list[dict[str, Any]]:
    def query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
        return {
            "name": name,
            "in": "query",
            "required": False,
            "schema": schema,
            "description": description,
        }

    return [
        query(
            "userId",
            {"type": "string", "minLength": 1, "maxLength": 1024},
            "Only this user's interactions.",
        ),
        query(
            "conversationId",
            {"type": "string", "minLength": 1, "maxLength": 64},
            "Only this conversation's interactions.",
        ),
        query(
            "since",
            {"type": "string", "format": "date-time"},
            "Only interactions at or after this time (RFC 3339).",
        ),
        query(
            "until",
            {"type": "string", "format": "date-time"},
            "Only interactions before this time (RFC 3339).",
        ),
        query(
            "limit",
            {"type": "integer", "minimum": 1, "maximum": settings.logs_max_limit, "default": 100},
            "Most items to return.",
        ),
        query(
            "cursor",
            {"type": "string", "minLength": 1, "maxLength": 200},
            "The next page's cursor, from the Link header.",
        ),
    ]
