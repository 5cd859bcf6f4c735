"""The document as one caller gets it: this server's URL as they reach it, and, when asked,
only the operations some scopes can call (`/openapi.json?scopes=chat,actions`).

A public GPT imports the document and offers every operation in it to the model; the scopes
keep `/logs` (and anything else a GPT's key cannot call) out of it. Which scope an operation
needs is read from its route's dependencies (`deps.Require`), not kept in a second list, with
one exception: the routes of a user's own data (`_USER_DATA`), which need a scope of an API key
but not of an OAuth token.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from functools import cache
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from gptactions.api import actions, conversations, logs, me, openai_compat, status, usage
from gptactions.api.deps import Require
from gptactions.api.openapi import STREAMING_NOTE, oauth_scheme, servers_for
from gptactions.config import Settings
from gptactions.services.errors import Problem, invalid
from gptactions.services.keys import SCOPES

_ROUTERS = (
    conversations.router,
    status.router,
    logs.router,
    usage.router,
    actions.router,
    me.router,
    openai_compat.router,
)
_NOT_OPERATIONS = {"parameters", "servers", "summary", "description"}
_USER_DATA = {me.export: "logs", me.erase: "logs"}
"""Routes whose caller needs a scope only when it is an API key: an OAuth token is its own user,
but a key reaches a user's data with `logs` and a userId (`services.personal.whose` checks it,
not a `deps.Require`)."""


def parse_scopes(text: str | None) -> frozenset[str] | None:
    """`chat,actions` (commas or spaces) as a set; None when absent; a 400 for an unknown one."""
    if text is None:
        return None
    names = [name for name in text.replace(",", " ").split() if name]
    unknown = sorted(set(names) - set(SCOPES))
    if unknown or not names:
        problem = (
            f"unknown scope(s): {', '.join(unknown)}" if unknown else "name at least one scope"
        )
        raise invalid(
            f"{problem}; the scopes are {', '.join(SCOPES)}",
            Problem("/scopes", f"must be a comma-separated list of {', '.join(SCOPES)}"),
        )
    return frozenset(names)


def _requirements(dependant: Dependant) -> Iterator[str]:
    for dependency in dependant.dependencies:
        if isinstance(dependency.call, Require):
            yield dependency.call.scope
        yield from _requirements(dependency)


@cache
def operation_scopes(*, oauth: bool = False) -> dict[tuple[str, str], frozenset[str]]:
    """For each (path, method) of the API, the scopes its caller needs (empty: any caller): an
    API key, or with `oauth` an OAuth token."""
    found: dict[tuple[str, str], frozenset[str]] = {}
    for router in _ROUTERS:
        for route in router.routes:
            if isinstance(route, APIRoute):
                needs = frozenset(_requirements(route.dependant))
                if not oauth and route.endpoint in _USER_DATA:
                    needs |= {_USER_DATA[route.endpoint]}
                for method in route.methods or ():
                    found[(route.path, method.lower())] = needs
    return found


def callable_with(path: str, method: str, scopes: frozenset[str], *, oauth: bool = False) -> bool:
    """Whether an API key (an OAuth token with `oauth`) holding `scopes` may call the operation
    (admin may call every one)."""
    needs = operation_scopes(oauth=oauth).get((path, method))
    if needs is None:
        return False
    return "admin" in scopes or needs <= scopes


def document_view(
    document: dict[str, Any],
    settings: Settings,
    *,
    origin: str,
    scopes: frozenset[str] | None = None,
    oauth: bool = False,
) -> dict[str, Any]:
    """`document` for a caller who reaches this server at `origin`, narrowed to what an API key
    holding `scopes` can call (an OAuth token holding them, with `oauth`).

    The built document is shared: this copies what it changes and never writes into it.
    """
    view = dict(document)
    view["servers"] = servers_for(settings, origin)
    components = dict(document.get("components", {}))
    schemes = dict(components.get("securitySchemes", {}))
    if "OAuth2" in schemes:
        # A document cut for some scopes offers those to sign in with, not every one.
        schemes["OAuth2"] = oauth_scheme(settings.public_url or origin, scopes)
    components["securitySchemes"] = schemes
    view["components"] = components
    if oauth:
        view["paths"] = {path: _own_user(item) for path, item in view.get("paths", {}).items()}
        _signed_in(view, components)
    if scopes is None:
        return view
    if not oauth:
        _keyed(view, components)
    paths: dict[str, Any] = {}
    for path, item in view.get("paths", {}).items():
        if path.startswith(openai_compat.PREFIX + "/"):
            # For OpenAI's clients, not a GPT: no 45 s deadline, no 100,000-character cap, and a
            # body (messages, tools) that is no action's to fill.
            continue
        kept = {
            method: _json_only(operation) if method not in _NOT_OPERATIONS else operation
            for method, operation in item.items()
            if method in _NOT_OPERATIONS or callable_with(path, method, scopes, oauth=oauth)
        }
        if set(kept) - _NOT_OPERATIONS:
            paths[path] = kept
    view["paths"] = paths
    _prune(view)
    view["info"] = {
        **document.get("info", {}),
        "x-scopes": sorted(scopes, key=SCOPES.index),
    }
    return view


def _keyed(view: dict[str, Any], components: dict[str, Any]) -> None:
    """The document of a GPT given an API key: the key its one way in, as OAuth is a signed-in
    GPT's (a GPT's action has one authentication type)."""
    schemes = components["securitySchemes"]
    if "ApiKeyAuth" in schemes:
        components["securitySchemes"] = {"ApiKeyAuth": schemes["ApiKeyAuth"]}
        view["security"] = [{"ApiKeyAuth": []}]


def _json_only(operation: Any) -> Any:
    """The operation without its Server-Sent Events answer: ChatGPT asks for JSON, never for
    `text/event-stream`, and a GPT's document is read by a model with a budget of words."""
    if not isinstance(operation, dict):
        return operation
    responses = operation.get("responses", {})
    ok = responses.get("200", {})
    content = ok.get("content", {})
    if "text/event-stream" not in content:
        return operation
    kept = {kind: media for kind, media in content.items() if kind != "text/event-stream"}
    return {
        **operation,
        "description": str(operation.get("description", "")).replace(STREAMING_NOTE, ""),
        "responses": {**responses, "200": {**ok, "content": kept}},
    }


def _signed_in(view: dict[str, Any], components: dict[str, Any]) -> None:
    """The document of a GPT whose users sign in: OAuth its one way in (a GPT's action has one
    authentication type), and no `userId` in the request bodies: the token is its user, and any
    other name is a 403. Offered, even optional and described "leave it out", it is a field a
    model may fill with a guess (the user's display name, say), and the call then fails."""
    schemes = components["securitySchemes"]
    if "OAuth2" in schemes:
        components["securitySchemes"] = {"OAuth2": schemes["OAuth2"]}
        view["security"] = [{"OAuth2": []}]
    schemas = dict(components.get("schemas", {}))
    for name in _request_schemas(view):  # what the model writes; answers stay as they are
        schema = schemas.get(name)
        if not isinstance(schema, dict) or "userId" not in schema.get("properties", {}):
            continue
        properties = {k: v for k, v in schema["properties"].items() if k != "userId"}
        schemas[name] = {**schema, "properties": properties}
        required = [field for field in schema.get("required", ()) if field != "userId"]
        if required:
            schemas[name]["required"] = required
        else:
            schemas[name].pop("required", None)
    components["schemas"] = schemas


def _request_schemas(view: dict[str, Any]) -> set[str]:
    """The names of the schemas the operations' request bodies refer to, directly or within."""
    schemas = view.get("components", {}).get("schemas", {})
    bodies = [
        operation.get("requestBody", {})
        for item in view.get("paths", {}).values()
        for method, operation in item.items()
        if method not in _NOT_OPERATIONS and isinstance(operation, dict)
    ]
    names: set[str] = set()
    pending = [ref for body in bodies for ref in _refs(body)]
    while pending:
        name = pending.pop().rsplit("/", 1)[-1]
        if name not in names and name in schemas:
            names.add(name)
            pending += list(_refs(schemas[name]))
    return names


def _own_user(item: dict[str, Any]) -> dict[str, Any]:
    """A path's operations as an OAuth token calls them: no `userId` parameter, which an API key
    gives (`/me/export`) or may give (`/logs`). The token is its user, and any other name is a
    403: offered, it is a parameter a model may fill with a guess."""
    out = dict(item)
    for method, operation in item.items():
        if method in _NOT_OPERATIONS or not isinstance(operation, dict):
            continue
        parameters = operation.get("parameters", [])
        if any(p.get("name") == "userId" for p in parameters):
            kept = [p for p in parameters if p.get("name") != "userId"]
            out[method] = {k: v for k, v in operation.items() if k != "parameters"}
            if kept:
                out[method]["parameters"] = kept
    return out


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            yield ref
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _prune(view: dict[str, Any]) -> None:
    """Drop the components and tags no kept operation refers to, directly or through others."""
    components = view["components"]
    reached: set[str] = set()
    pending = list(_refs(view["paths"]))
    while pending:
        ref = pending.pop()
        if ref in reached or not ref.startswith("#/components/"):
            continue
        reached.add(ref)
        _, _, section, name = ref.split("/", 3)
        pending.extend(_refs(components.get(section, {}).get(name)))
    for section in ("schemas", "responses", "parameters", "requestBodies"):
        if section in components:
            components[section] = {
                name: schema
                for name, schema in components[section].items()
                if f"#/components/{section}/{name}" in reached
            }
    used = {
        tag
        for item in view["paths"].values()
        for method, operation in item.items()
        if method not in _NOT_OPERATIONS
        for tag in operation.get("tags", [])
    }
    if "tags" in view:
        view["tags"] = [copy.copy(tag) for tag in view["tags"] if tag.get("name") in used]
