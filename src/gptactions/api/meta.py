"""The routes around the API: the OpenAPI document, health, and the web console."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from gptactions.api.deps import RuntimeDep
from gptactions.api.errors import error_response
from gptactions.api.openapi import build_document
from gptactions.runtime import Runtime
from gptactions.services.errors import Problem
from gptactions.store.outage import RETRY_AFTER

CONSOLE = Path(__file__).parent.parent / "console"

# The console loads nothing from elsewhere; the policy makes that a guarantee. `connect-src` allows
# https so the server picker can reach the document's other servers.
CONSOLE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self' https:; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


def served_document(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document the app serves, built on first use and kept."""
    document: dict[str, Any] | None = getattr(app.state, "openapi_document", None)
    if document is None:
        runtime: Runtime = app.state.runtime
        document = build_document(runtime.settings, runtime.registry, runtime.router.names)
        app.state.openapi_document = document
    return document


@router.get("/openapi.json")
async def openapi_json(request: Request) -> JSONResponse:
    """The OpenAPI document, as JSON."""
    return JSONResponse(served_document(request.app))


@router.get("/openapi.yaml")
async def openapi_yaml(request: Request) -> Response:
    """The OpenAPI document, as YAML."""
    text = yaml.safe_dump(served_document(request.app), sort_keys=False, allow_unicode=True)
    return Response(text, media_type="application/yaml")


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
async def docs() -> RedirectResponse:
    """The console is the documentation page."""
    return RedirectResponse("/")


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
