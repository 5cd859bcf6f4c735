"""create_app(settings) -> the ASGI app. Nothing is built at import time."""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import yaml
from fastapi import FastAPI
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from gptactions import __version__
from gptactions.api import actions, gpt
from gptactions.api.disconnect import CancelOnDisconnect
from gptactions.api.errors import install_error_handlers
from gptactions.api.middleware import BodyGuard
from gptactions.api.openapi import build_document
from gptactions.config import Settings
from gptactions.runtime import Runtime
from gptactions.services.keys import NewKey

log = logging.getLogger(__name__)
CONSOLE = Path(__file__).parent / "console"


def announce_key(new_key: NewKey) -> None:
    """Show a newly created admin key, once, on the terminal (never through logging)."""
    print(
        "\n  An admin API key was created. It is shown only this once; keep it safe:\n\n"
        f"    {new_key.secret}\n",
        file=sys.stdout,
        flush=True,
    )


def create_app(settings: Settings | None = None, *, runtime: Runtime | None = None) -> FastAPI:
    """Build the app: API routes, console, OpenAPI document; the lifespan opens the runtime."""
    runtime = runtime or Runtime(settings or Settings())
    settings = runtime.settings

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await runtime.open()
        configured = settings.api_key.get_secret_value() if settings.api_key else None
        created = await runtime.keys.ensure_bootstrap_key(
            configured, may_generate=settings.environment == "development"
        )
        if created is not None and configured is None:
            announce_key(created)
        try:
            yield
        finally:
            await runtime.close()

    app = FastAPI(
        title="GPT Actions API",
        version=__version__,
        lifespan=lifespan,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.runtime = runtime
    install_error_handlers(app)
    app.add_middleware(CancelOnDisconnect)  # inside BodyGuard, so it reads a guarded body
    app.add_middleware(BodyGuard, max_body_bytes=settings.max_body_bytes)
    app.include_router(gpt.router)
    app.include_router(actions.router)

    document: dict[str, Any] | None = None

    def openapi() -> dict[str, Any]:
        nonlocal document
        if document is None:
            document = build_document(settings, runtime.registry, runtime.router.names)
        return document

    app.openapi = openapi  # type: ignore[method-assign]

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi_json() -> JSONResponse:
        """The OpenAPI document, as JSON."""
        return JSONResponse(openapi())

    @app.get("/openapi.yaml", include_in_schema=False)
    async def openapi_yaml() -> Response:
        """The OpenAPI document, as YAML."""
        text = yaml.safe_dump(openapi(), sort_keys=False, allow_unicode=True)
        return Response(text, media_type="application/yaml")

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> JSONResponse:
        """Liveness and readiness for load balancers: 200 when the database answers."""
        ok = await runtime.database.ping()
        return JSONResponse({"status": "ok" if ok else "unavailable"}, 200 if ok else 503)

    @app.get("/docs", include_in_schema=False)
    async def docs() -> RedirectResponse:
        """The console is the documentation page."""
        return RedirectResponse("/")

    @app.get("/", include_in_schema=False)
    async def console() -> FileResponse:
        """The web console."""
        return FileResponse(CONSOLE / "index.html", media_type="text/html", headers=CONSOLE_HEADERS)

    app.mount("/console", ConsoleFiles(directory=CONSOLE, check_dir=False), name="console")
    return app


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


class ConsoleFiles(StaticFiles):
    """The console's assets, revalidated on each load so an upgrade shows at once."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        """The file, with the console's headers."""
        response = super().file_response(*args, **kwargs)
        response.headers.update(CONSOLE_HEADERS)
        return response


def create_app_from_environment() -> FastAPI:
    """Factory for `uvicorn --factory` and multi-worker serving: settings from the environment."""
    return create_app(Settings())
