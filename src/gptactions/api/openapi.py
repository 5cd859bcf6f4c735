"""The served OpenAPI document: the seed's document, unchanged, with this server's additions.

The seed is the document this project was made from (`data/seed-openapi.yaml`, shipped in the
package): its operations, schemas and descriptions are the contract. Starting from it keeps the
served document a superset of it by construction. The additions come from the code that answers:
response bodies from the models in `responses`, request limits from the settings and `schemas`,
operation ids from the routes. The contract test (schemathesis) checks the two agree.
"""

from __future__ import annotations

import copy
from collections.abc import Collection
from functools import cache
from importlib.resources import files
from typing import Any

import yaml
from fastapi import APIRouter
from fastapi.routing import APIRoute
from pydantic.json_schema import models_json_schema

from gptactions import __version__
from gptactions.api import actions, conversations, logs, me, sse, status, usage
from gptactions.api.forwarded import local_origin
from gptactions.api.openapi_actions import merge_action_schemas
from gptactions.api.openapi_openai import add_openai_paths
from gptactions.api.openapi_query import (
    ERROR_HEADERS,
    NEXT_PAGE_CURSOR,
    RESPONSE_HEADERS,
    USAGE_EXAMPLE,
    header_refs,
    log_parameters,
    query_parameter,
    usage_parameters,
)
from gptactions.api.responses import (
    COMPONENTS,
    ActionList,
    ActionResponse,
    ConversationResponse,
    Erasure,
    LogItem,
    LogPageItem,
    MeResponse,
    MyDataExport,
    OpenAPI30,
    StatusResponse,
    UsageResponse,
    error_schema,
    without_ref_siblings,
)
from gptactions.api.schemas import (
    ACTION_NAME_MAX_LENGTH,
    CONVERSATION_ID_MAX_LENGTH,
    CURSOR_MAX_LENGTH,
    NUL_FREE_NOT_BLANK_PATTERN,
    NUL_FREE_PATTERN,
    REPEAT_PENALTY_MAX,
    REPEAT_PENALTY_MIN,
    TEMPERATURE_MAX,
)
from gptactions.config import Settings
from gptactions.services.actions import ActionRegistry
from gptactions.services.actions.registry import NOT_BLANK
from gptactions.services.oauth import SCOPE_DESCRIPTIONS

API = "/api/v1/gpt"
ERROR_REF = {"$ref": "#/components/schemas/Error"}
SCHEMA_PREFIX = "#/components/schemas/"

_ERRORS = {
    "400": "Invalid input (or more than one Authorization header).",
    "401": "Missing, unknown or revoked API key.",
    "403": "The API key lacks the scope this operation needs.",
    "404": "Not found.",
    "405": "Method not allowed.",
    "413": "The body is larger than the server's limit.",
    "429": "The key's (or OAuth user's) rate or token limit is reached (code rate_limited or "
    "token_limit_exceeded; the message names the limit); retry after the Retry-After seconds.",
    "415": "The body is not JSON, or is compressed (Content-Encoding).",
    "500": "Internal error.",
    "502": "The model backend answered badly.",
    "503": "Unavailable for now: every model backend is down or saturated, the request's "
    "deadline came before the model began, the database is unreachable (database_unavailable) "
    "or the server is restarting (server_restarting); retry after the Retry-After seconds.",
    "504": "The model backend did not answer in time.",
}
# What can go wrong once a call reaches the model, besides invalid input.
_MODEL_ERRORS = ["413", "415", "401", "403", "429", "500", "502", "503", "504"]
# 400: two Authorization headers (RFC 6750, 3.1); 503: the database, or a restart.
_READ_ERRORS = ["400", "401", "429", "500", "503"]


@cache
def seed_document() -> dict[str, Any]:
    """The seed's OpenAPI document, as shipped in the package."""
    text = files("gptactions").joinpath("data/seed-openapi.yaml").read_text(encoding="utf-8")
    document: dict[str, Any] = yaml.safe_load(text)
    return document


@cache
def _response_schemas() -> dict[str, dict[str, Any]]:
    """The response models' schemas (OpenAPI 3.0.3), by model name, nested ones included."""
    _, defs = models_json_schema(
        [
            (model, "serialization")
            for model in (
                ConversationResponse,
                StatusResponse,
                LogItem,
                LogPageItem,
                ActionResponse,
                ActionList,
                MeResponse,
                MyDataExport,
                Erasure,
                UsageResponse,
            )
        ],
        ref_template=COMPONENTS,
        schema_generator=OpenAPI30,
    )
    schemas: dict[str, dict[str, Any]] = without_ref_siblings(defs["$defs"], defs["$defs"])
    for schema in schemas.values():
        schema.pop("title", None)  # the component's name says it
    return schemas


def oauth_scheme(origin: str, scopes: Collection[str] | None = None) -> dict[str, Any]:
    """The OAuth 2.0 authorization code flow of the server at `origin` (docs/gpt-actions.md),
    offering `scopes` (a document cut for them, `?scopes=`; else, or with admin, every one)."""
    base = origin.rstrip("/")
    offered = set(SCOPE_DESCRIPTIONS) if scopes is None or "admin" in scopes else set(scopes)
    return {
        "type": "oauth2",
        "description": "Each ChatGPT user signs in as a user of this server; an access token "
        "acts as its user only: the userId is the signed-in user's name (another value is a "
        "403, an absent one is filled in), its conversations, its own logs. "
        "Metadata: /.well-known/oauth-authorization-server.",
        "flows": {
            "authorizationCode": {
                "authorizationUrl": f"{base}/oauth/authorize",
                "tokenUrl": f"{base}/oauth/token",
                "refreshUrl": f"{base}/oauth/token",
                "scopes": {
                    scope: description
                    for scope, description in SCOPE_DESCRIPTIONS.items()
                    if scope in offered
                },
            }
        },
    }


def build_document(
    settings: Settings, registry: ActionRegistry, models: list[str], origin: str | None = None
) -> dict[str, Any]:
    """The document this server serves at /openapi.json and /openapi.yaml.

    `models` are the configured backends' names, which a request may give as `model`; `origin`
    is the server's URL when GPTACTIONS_PUBLIC_URL is unset (by default, where it listens; the
    served document puts the request's own URL there, see `api/document.py`).
    """
    origin = origin or local_origin(settings)
    doc = copy.deepcopy(seed_document())
    doc["info"]["x-server-version"] = __version__
    doc["servers"] = servers_for(settings, origin)
    doc["components"]["securitySchemes"]["ApiKeyAuth"]["description"] = (
        "An API key, as 'Bearer <key>' or the bare key. Create one with `gptactions keys create`."
    )
    doc["components"]["securitySchemes"]["OAuth2"] = oauth_scheme(settings.public_url or origin)
    doc["security"] = [*doc.get("security", []), {"OAuth2": []}]
    _add_components(doc, settings, registry, models)
    _start_conversation(doc)
    _respond(doc)
    _get_status(doc)
    _get_logs(doc, settings)
    _get_usage(doc, settings)
    _trigger_action(doc, registry)
    _list_actions(doc)
    _personal(doc, settings)
    _request_ids(doc)
    add_openai_paths(doc, settings, models)
    return doc


def servers_for(settings: Settings, origin: str) -> list[dict[str, str]]:
    """The document's servers: GPTACTIONS_PUBLIC_URL (else `origin`), then GPTACTIONS_SERVERS.

    Never the seed's placeholders: a document naming a host that does not exist sends every
    client (Swagger UI, Postman, a GPT) there.
    """
    urls = [settings.public_url or origin, *settings.servers]
    return [
        {"url": url.rstrip("/") or "/", "description": "This server" if i == 0 else "Server"}
        for i, url in enumerate(dict.fromkeys(urls))
    ]


def _merge(into: dict[str, Any], new: dict[str, Any]) -> None:
    """Add what `into` lacks from `new`, at any depth; `required` lists are joined."""
    for key, value in new.items():
        if key not in into:
            into[key] = copy.deepcopy(value)
        elif key == "required" and isinstance(value, list):
            into[key] = [*into[key], *(name for name in value if name not in into[key])]
        elif isinstance(into[key], dict) and isinstance(value, dict):
            _merge(into[key], value)


def _text_property(base: dict[str, Any], max_length: int) -> dict[str, Any]:
    return {**base, "minLength": 1, "maxLength": max_length, "pattern": NOT_BLANK}


def _id_property(base: dict[str, Any], max_length: int) -> dict[str, Any]:
    """Free text's limits (`_text_property`), and no U+0000 (`schemas.nul_free`)."""
    return {**_text_property(base, max_length), "pattern": NUL_FREE_NOT_BLANK_PATTERN}


def _add_components(
    doc: dict[str, Any], settings: Settings, registry: ActionRegistry, models: list[str]
) -> None:
    """The request limits, the response models, the actions' schemas and the error shape."""
    schemas = doc["components"]["schemas"]
    # The seed describes these in place; LogItem is also a component, for the user's export.
    inline = {StatusResponse.__name__, LogPageItem.__name__}
    for name, schema in _response_schemas().items():
        if name not in inline:
            _merge(schemas.setdefault(name, {}), schema)

    model = {
        "type": "string",
        "enum": models,
        "description": "A configured backend's name; the default backend when absent.",
    }
    request = schemas["ConversationRequest"]["properties"]
    request["userId"] = _id_property(request["userId"], settings.max_user_id_length)
    request["message"] = _text_property(request["message"], settings.max_message_length)
    request["conversationId"] = {
        "type": "string",
        "minLength": 1,
        "maxLength": CONVERSATION_ID_MAX_LENGTH,
        "pattern": NUL_FREE_PATTERN,
        "description": "For /respond: the conversation to continue. Without it, the user's "
        "latest conversation continues (or a new one starts). /conversations checks it as "
        "/respond does but does not use it: it always starts a new conversation.",
    }
    request["maxTokens"] = {
        "type": "integer",
        "minimum": 1,
        "maximum": settings.max_tokens_limit,
        "description": f"Most tokens to generate (default {settings.default_max_tokens}, or "
        "the room the message leaves in the context window when that is less).",
    }
    request["temperature"] = {
        "type": "number",
        "minimum": 0,
        "maximum": TEMPERATURE_MAX,
        "default": 0,
        "description": "Sampling temperature; 0 (the default) makes replies deterministic.",
    }
    request["repeatPenalty"] = {
        "type": "number",
        "minimum": REPEAT_PENALTY_MIN,
        "maximum": REPEAT_PENALTY_MAX,
        "description": "Penalty on tokens repeated from the last 64 (1: none); the embedded "
        "model's default is GPTACTIONS_REPEAT_PENALTY.",
    }
    request["model"] = model

    action_request = schemas["ActionRequest"]["properties"]
    action_request["action"].update(
        {"minLength": 1, "maxLength": ACTION_NAME_MAX_LENGTH, "enum": registry.names}
    )
    action_request["userId"] = {
        "type": "string",
        "minLength": 1,
        "maxLength": settings.max_user_id_length,
        "pattern": NUL_FREE_NOT_BLANK_PATTERN,
        "description": "Whose call this is, for the log; the key's name when absent.",
    }
    action_request["model"] = copy.deepcopy(model)
    action_request["maxTokens"] = {
        "type": "integer",
        "minimum": 1,
        "maximum": settings.max_tokens_limit,
        "description": "Most tokens any one generation of the action may take (each action "
        "has its own budget; this caps it, but never cuts a label). A result cut there says "
        "finishReason length.",
    }
    merge_action_schemas(schemas, registry)  # variants per action, ActionResponse, ActionList

    schemas["Error"] = error_schema()
    doc["components"]["headers"] = copy.deepcopy(RESPONSE_HEADERS)
    doc["components"]["responses"] = {
        f"Error{code}": {
            "description": description,
            "headers": header_refs(*ERROR_HEADERS.get(code, ())),
            "content": {"application/json": {"schema": ERROR_REF}},
        }
        for code, description in _ERRORS.items()
    }


def _add_errors(operation: dict[str, Any], codes: list[str]) -> None:
    responses = operation.setdefault("responses", {})
    for code in codes:
        if "$ref" in responses.get(code, {}):
            continue  # added already
        if code in responses:
            # Keep the seed's description; add the error body it did not describe.
            responses[code].setdefault("content", {"application/json": {"schema": ERROR_REF}})
        else:
            responses[code] = {"$ref": f"#/components/responses/Error{code}"}


def _request_ids(doc: dict[str, Any]) -> None:
    """X-Request-ID on every answer written in place (the error components declare theirs)."""
    for path, item in doc["paths"].items():
        if not path.startswith(API + "/"):
            continue
        for operation in item.values():
            for answer in operation.get("responses", {}).values():
                if "$ref" not in answer:
                    answer["headers"] = {**answer.get("headers", {}), **header_refs()}


def _operation(doc: dict[str, Any], router: APIRouter, path: str, method: str) -> dict[str, Any]:
    """The document's operation at `path`, given the operation id of the route that answers it."""
    route = next(
        r
        for r in router.routes
        if isinstance(r, APIRoute) and r.path == API + path and method.upper() in (r.methods or ())
    )
    operation: dict[str, Any] = doc["paths"].setdefault(API + path, {}).setdefault(method, {})
    operation["operationId"] = route.operation_id
    return operation


STREAMING_NOTE = " With `Accept: text/event-stream` the reply streams as Server-Sent Events."
"""The end of the conversation operations' descriptions; a GPT's document leaves it out."""


def _conversation_operation(operation: dict[str, Any], description: str) -> None:
    operation["description"] = description + STREAMING_NOTE
    operation["x-openai-isConsequential"] = False
    _add_errors(operation, ["400", *_MODEL_ERRORS])
    operation["responses"]["200"]["content"]["text/event-stream"] = _event_stream()
    operation["responses"]["200"]["headers"] = header_refs(sse.CONVERSATION_ID_HEADER)


def _start_conversation(doc: dict[str, Any]) -> None:
    operation = _operation(doc, conversations.router, "/conversations", "post")
    _conversation_operation(operation, "Starts a conversation, stores it, and returns the reply.")


def _respond(doc: dict[str, Any]) -> None:
    operation = _operation(doc, conversations.router, "/respond", "post")
    _conversation_operation(
        operation,
        "Continues conversationId when given (404 when unknown for this user), else the "
        "user's latest conversation, else starts one. The model sees the earlier turns.",
    )
    _add_errors(operation, ["404"])


def _get_status(doc: dict[str, Any]) -> None:
    operation = _operation(doc, status.router, "/status", "get")
    schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
    _merge(schema, _response_schemas()[StatusResponse.__name__])
    operation["x-openai-isConsequential"] = False
    _add_errors(operation, _READ_ERRORS)


def _get_logs(doc: dict[str, Any], settings: Settings) -> None:
    operation = _operation(doc, logs.router, "/logs", "get")
    operation["description"] = (
        "Newest first. A key sees its own tenant's interactions; an admin key sees all. A page "
        "may hold fewer than limit, to fit the size limit; when more follow, its last item has "
        "nextCursor: pass it as cursor for the next page."
    )
    operation["parameters"] = log_parameters(settings)
    answer = operation["responses"]["200"]
    answer["headers"] = header_refs("Link")
    item = answer["content"]["application/json"]["schema"]["items"]
    _merge(item, _response_schemas()[LogPageItem.__name__])
    operation["x-openai-isConsequential"] = False
    _add_errors(operation, ["400", "403", *_READ_ERRORS])


def _get_usage(doc: dict[str, Any], settings: Settings) -> None:
    operation = _operation(doc, usage.router, "/usage", "get")
    operation.update(
        {
            "summary": "Usage per key and per user.",
            "description": "Requests and tokens from the log per key and per user, most "
            "tokens first, over since..until (until: now) or `window` (default 24h). A key "
            "sees its tenant's usage (admin: all), an OAuth token its own user's.",
            "parameters": usage_parameters(settings),
            "x-openai-isConsequential": False,
            "responses": {
                "200": {
                    "description": "The window's usage.",
                    "content": {
                        "application/json": {
                            "schema": {"$ref": SCHEMA_PREFIX + UsageResponse.__name__},
                            "example": USAGE_EXAMPLE,
                        }
                    },
                }
            },
        }
    )
    _add_errors(operation, ["400", "403", *_READ_ERRORS])


def _trigger_action(doc: dict[str, Any], registry: ActionRegistry) -> None:
    operation = _operation(doc, actions.router, "/actions", "post")
    operation["description"] = (
        "Runs a named action (listed by GET /api/v1/gpt/actions) with its parameters. When the "
        "model's output cannot be brought into the action's form, the answer is still 200, "
        "with success false and the reason in result. Unknown action or bad parameters: 400."
    )
    # One operation runs every action: when one of them is consequential, ChatGPT asks the user
    # before each call of the operation (docs/actions.md).
    operation["x-openai-isConsequential"] = any(d.consequential for d in registry)
    _add_errors(operation, ["400", *_MODEL_ERRORS])


def _list_actions(doc: dict[str, Any]) -> None:
    operation = _operation(doc, actions.router, "/actions", "get")
    operation.update(
        {
            "summary": "List the available actions.",
            "x-openai-isConsequential": False,
            "description": "Every action's name, description and parameter schema, by name, "
            "in pages that fit the response size limit: nextCursor (null on the last page) "
            "is the cursor of the next.",
            "parameters": [
                query_parameter(
                    "cursor",
                    {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": actions.LIST_CURSOR_MAX_LENGTH,
                        "pattern": actions.CURSOR_PATTERN,
                    },
                    NEXT_PAGE_CURSOR,
                )
            ],
            "responses": {
                "200": {
                    "description": "The actions.",
                    "headers": header_refs("Link"),
                    "content": {
                        "application/json": {"schema": {"$ref": SCHEMA_PREFIX + "ActionList"}}
                    },
                }
            },
        }
    )
    _add_errors(operation, ["400", "403", *_READ_ERRORS])


def _personal(doc: dict[str, Any], settings: Settings) -> None:
    """The caller's own identity and data (docs/gpt-actions.md)."""
    # Required: an API key must name the user. The document cut for an OAuth GPT
    # (`document_view(oauth=True)`) leaves it out, since a token is its own user.
    user_id = {
        "name": "userId",
        "in": "query",
        "required": True,
        "schema": {
            "type": "string",
            "minLength": 1,
            "maxLength": settings.max_user_id_length,  # as a body's userId (`check_user_id`)
            "pattern": NUL_FREE_PATTERN,
        },
        "description": "Whose data: required with an API key (scope logs); an OAuth token is "
        "its own user and leaves it out.",
    }
    for path, method, summary, description, model, consequential in (
        (
            "/me",
            "get",
            "Who am I.",
            "The signed-in user (OAuth), or the API key.",
            MeResponse,
            False,
        ),
        (
            "/me/export",
            "get",
            "Export my data.",
            "All of the user's conversations, then all of their interactions, each newest "
            "first, in pages that fit the response size limit: nextCursor (null on the last "
            "page) is the cursor of the next; following it gives every row exactly once.",
            MyDataExport,
            False,
        ),
        (
            "/me/data",
            "delete",
            "Erase my data.",
            "Deletes the user's conversations and interactions; the erasure is logged without "
            "their content.",
            Erasure,
            True,
        ),
    ):
        operation = _operation(doc, me.router, path, method)
        operation.update(
            {
                "summary": summary,
                "description": description,
                "responses": {
                    "200": {
                        "description": summary,
                        "content": {
                            "application/json": {"schema": {"$ref": SCHEMA_PREFIX + model.__name__}}
                        },
                    }
                },
            }
        )
        if path != "/me":
            operation["parameters"] = [user_id]
        if path == "/me/export":
            operation["parameters"].append(
                query_parameter(
                    "cursor",
                    {"type": "string", "minLength": 1, "maxLength": CURSOR_MAX_LENGTH},
                    NEXT_PAGE_CURSOR,
                )
            )
            operation["responses"]["200"]["headers"] = header_refs("Link")
        operation["x-openai-isConsequential"] = consequential
        _add_errors(operation, ["400", "403", *_READ_ERRORS] if path != "/me" else _READ_ERRORS)


def _event_stream() -> dict[str, Any]:
    """The `text/event-stream` answer of the conversation operations.

    The wire example is in the description: `example` would have to match the schema, which
    describes one event.
    """
    schema = sse.event_schema(
        ["token", "done", "error"],
        (
            "Server-Sent Events. `token` events carry the reply as it is generated "
            '(`data: {"text": "..."}`); a final `done` event carries the stored turn '
            "(conversationId, reply, model, usage, latencyMs, finishReason, truncated, as the "
            "JSON answer; finishReason deadline when the request's deadline ended it); a "
            "failure after the stream began is an `error` event with the API's error shape "
            '(`data: {"error": {"code": "...", "message": "..."}}`) instead of `done`. '
            "Failures before the first token are answered as plain JSON errors.\n\n"
            "```\n"
            'event: token\ndata: {"text": "Hello"}\n\n'
            'event: token\ndata: {"text": "!"}\n\n'
            'event: done\ndata: {"conversationId": "conv_0f3c", "reply": "Hello!", '
            '"model": "SmolLM2-135M-Instruct", '
            '"usage": {"promptTokens": 21, "completionTokens": 2}, "latencyMs": 180}\n'
            "```"
        ),
    )
    # `sse.event_schema` leaves the event's name undescribed (the /v1 streams share it).
    schema["properties"]["event"]["description"] = (
        "token: a piece of the reply; done: the stored turn, last; error: a failure after the "
        "stream began, in place of done."
    )
    return {"schema": schema}
