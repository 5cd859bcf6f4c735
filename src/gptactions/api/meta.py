"""The routes around the API: the OpenAPI document, health, and the web console."""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from gptactions.api import readiness
from gptactions.api.deps import RuntimeDep, is_json, uncounted_principal
from gptactions.api.direct import DirectRoute
from gptactions.api.document import document_view, parse_scopes
from gptactions.api.errors import error_response
from gptactions.api.forwarded import public_origin, public_path
from gptactions.api.openapi import build_document
from gptactions.api.readiness import GptKey
from gptactions.runtime import Runtime
from gptactions.services.errors import Problem, ServiceError, invalid
from gptactions.store.outage import RETRY_AFTER

CONSOLE = Path(__file__).parent.parent / "console"

# The console loads nothing from elsewhere; the policy makes that a guarantee. `connect-src` allows
# https so the server picker can reach the document's other servers.
CONSOLE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self' https:; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False, route_class=DirectRoute)


def served_document(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document the app serves, built on first use and kept."""
    document: dict[str, Any] | None = getattr(app.state, "openapi_document", None)
    if document is None:
        runtime: Runtime = app.state.runtime
        document = build_document(runtime.settings, runtime.registry, runtime.router.names)
        app.state.openapi_document = document
    return document


ScopesQuery = Annotated[
    str | None,
    Query(
        max_length=200,
        description="Only the operations these scopes can call, e.g. chat,actions (for a GPT).",
    ),
]


AuthQuery = Annotated[
    Literal["key", "oauth"],
    Query(
        description="With scopes: who holds them, an API key (the default) or a GPT's OAuth "
        "token, which also reaches its own user's data (/me/export, /me/data) without logs.",
    ),
]


def caller_document(request: Request, scopes: str | None, auth: str = "key") -> dict[str, Any]:
    """The document for this request: its own URL as the server, narrowed to what `scopes`
    can call, held by an API key or (`auth` oauth) an OAuth token."""
    runtime: Runtime = request.app.state.runtime
    return document_view(
        served_document(request.app),
        runtime.settings,
        origin=public_origin(request, runtime.settings),
        scopes=parse_scopes(scopes),
        oauth=auth == "oauth",
    )


DOCUMENT_CACHE_SIZE = 32
"""How many rendered documents an app keeps (the least recently asked for goes first)."""

DocumentKey = tuple[str, frozenset[str] | None, str, str]


def rendered_document(
    request: Request, scopes: str | None, auth: str, form: Literal["json", "yaml"]
) -> bytes:
    """The caller's document as JSON or YAML text, rendered once per (format, scopes, auth,
    origin) and kept in a small LRU on the app: the document depends on nothing else (the
    served document and the settings are fixed for the app's life), and rendering it takes
    tens of milliseconds of CPU that anonymous callers could otherwise spend at will."""
    runtime: Runtime = request.app.state.runtime
    key: DocumentKey = (
        form,
        parse_scopes(scopes),  # a 400 for an unknown scope, before anything is kept
        auth,
        public_origin(request, runtime.settings),
    )
    cache: OrderedDict[DocumentKey, bytes] | None = getattr(
        request.app.state, "openapi_bodies", None
    )
    if cache is None:
        cache = request.app.state.openapi_bodies = OrderedDict()
    kept = cache.get(key)
    if kept is not None:
        cache.move_to_end(key)
        return kept
    document = caller_document(request, scopes, auth)
    if form == "json":
        body = bytes(JSONResponse(document).body)  # as JSONResponse renders it
    else:
        body = yaml.safe_dump(document, sort_keys=False, allow_unicode=True).encode("utf-8")
    cache[key] = body
    while len(cache) > DOCUMENT_CACHE_SIZE:
        cache.popitem(last=False)
    return body


@router.get("/openapi.json")
async def openapi_json(
    request: Request, scopes: ScopesQuery = None, auth: AuthQuery = "key"
) -> Response:
    """The OpenAPI document, as JSON."""
    body = rendered_document(request, scopes, auth, "json")
    return Response(body, media_type="application/json")


@router.get("/openapi.yaml")
async def openapi_yaml(
    request: Request, scopes: ScopesQuery = None, auth: AuthQuery = "key"
) -> Response:
    """The OpenAPI document, as YAML."""
    body = rendered_document(request, scopes, auth, "yaml")
    return Response(body, media_type="application/yaml")


@router.post("/openapi/check")
async def openapi_check(request: Request, runtime: RuntimeDep) -> JSONResponse:
    """GPT Actions readiness of the OpenAPI document in the body, with the server's settings.

    With a key, also the keys a GPT could be given that hold `logs`: every such key for an admin
    key, the caller's own otherwise. The key's rate limit does not count this check.
    """
    gpt_keys: list[GptKey] = []
    if request.headers.get("authorization"):
        # The console sends it in the background (on load, on each new key): it must not use up
        # the quota of the calls its user makes. It reads no model and no user's data.
        caller = await uncounted_principal(request, runtime)
        if caller.is_admin:
            gpt_keys = readiness.gpt_keys(await runtime.keys.list())
        elif caller.user_id is None:
            gpt_keys = [GptKey(caller.name, caller.scopes)]
    document = await _json_object(request, runtime.settings.max_body_bytes)
    try:
        findings = readiness.check(document, runtime.settings, gpt_keys)
    except readiness.TooComplex as error:
        raise invalid(str(error)) from None
    except (AttributeError, TypeError, ValueError, RecursionError):
        raise invalid("the body is not an OpenAPI document this check can read") from None
    return JSONResponse(readiness.report(findings))


async def _json_object(request: Request, limit: int) -> dict[str, Any]:
    """The body as a JSON object, read up to `limit` bytes (413 past it, 400 if not an object)."""
    if not is_json(request.headers.get("content-type") or "application/json"):
        raise ServiceError("the body must be JSON", 415, "unsupported_media_type")
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limit:
            raise ServiceError(f"the body is larger than {limit} bytes", 413, "payload_too_large")
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        raise invalid("the body is not JSON") from None
    if not isinstance(value, dict):
        raise invalid("the body must be an OpenAPI document (a JSON object)")
    return value


@router.api_route("/healthz", methods=["GET", "HEAD"])
async def healthz(runtime: RuntimeDep) -> JSONResponse:
    """Liveness and readiness for load balancers (GET or HEAD): 200 when the database answers;
    else 503 naming the dependency that is down."""
    problems = await runtime.status.problems()
    if not problems:
        return JSONResponse({"status": "ok", "database": "ok"})
    summary = "; ".join(f"{name} {problem}" for name, problem in problems.items())
    return error_response(
        503,
        f"not ready: {summary}",
        code="unavailable",
        details=[Problem(f"/{name}", problem) for name, problem in problems.items()],
        headers={"Retry-After": str(RETRY_AFTER)},
    )


@router.get("/docs")
async def docs(request: Request, runtime: RuntimeDep) -> RedirectResponse:
    """The console is the documentation page."""
    return RedirectResponse(public_path(request, runtime.settings) + "/")


@router.get("/")
async def console() -> FileResponse:
    """The web console."""
    return FileResponse(CONSOLE / "index.html", media_type="text/html", headers=CONSOLE_HEADERS)


class ConsoleFiles(StaticFiles):
    """The console's assets, revalidated on each load so an upgrade shows at once."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        """The file, with the console's headers."""
        response = super().file_response(*args, **kwargs)
        response.headers.update(CONSOLE_HEADERS)
        return response
