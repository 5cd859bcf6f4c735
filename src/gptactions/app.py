"""create_app(settings) -> the ASGI app. Nothing is built at import time."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Route

from gptactions import __version__
from gptactions.api import (
    actions,
    conversations,
    exact,
    logs,
    me,
    meta,
    oauth,
    oauth_authorizations,
    oidc,
    openai_compat,
    status,
    usage,
)
from gptactions.api import metrics as metrics_api
from gptactions.api.access import AccessLog
from gptactions.api.disconnect import CancelOnDisconnect
from gptactions.api.errors import install_error_handlers
from gptactions.api.forwarded import ForwardedHeaders
from gptactions.api.mcp_route import McpRoute
from gptactions.api.methods import HeadAsGet
from gptactions.api.middleware import BodyGuard
from gptactions.api.rejections import RecordRejections
from gptactions.config import Settings
from gptactions.metrics import RequestMetrics
from gptactions.runtime import Runtime, bootstrap_admin_key
from gptactions.tracing import Tracing, install_tracing, tracing_wanted


def create_app(
    settings: Settings | None = None,
    *,
    runtime: Runtime | None = None,
    span_exporter: Any = None,
    serving: bool = False,
) -> FastAPI:
    """Build the app: API routes, MCP, metrics, console, OpenAPI document; the lifespan opens the
    runtime. Traces are exported when OTEL_EXPORTER_OTLP_ENDPOINT is set (to `span_exporter` if
    one is given). `serving`: the app is the process's one app (`gptactions serve`), whose
    start-up objects are set aside from the garbage collector once it has started."""
    runtime = runtime or Runtime(settings or Settings())
    settings = runtime.settings
    mcp = McpRoute(runtime)  # the MCP SDK loads on the first /mcp request
    tracing: Tracing | None = None

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # `gptactions serve` created the first key before starting; here only
        # GPTACTIONS_API_KEY is imported, as a generated key could not be shown.
        await runtime.open(
            prepare=lambda: bootstrap_admin_key(settings, runtime.keys, may_generate=False)
        )
        if serving:
            settle_garbage_collector()
        try:
            # The MCP SDK's session manager, once started, lives as long as the app.
            async with mcp.running():
                yield
        finally:
            await runtime.close()
            runtime.metrics.worker_stopped()
            if tracing is not None:
                tracing.close()

    traced = tracing_wanted()
    app = FastAPI(
        title="GPT Actions API",
        version=__version__,
        lifespan=lifespan,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        # Untraced, FastAPI need not look for OpenTelemetry providers on every request.
        telemetry=None if traced else {"tracing": False, "metrics": False, "logs": False},
    )
    app.state.runtime = runtime
    # A path with a trailing slash too many or too few is redirected by `methods.slash_twin`,
    # relative: the router's own redirect named the host the request's Host header gave.
    app.router.redirect_slashes = False
    if traced:
        # Here, before the lifespan starts the backends: their aiohttp sessions are traced only
        # when made after it.
        tracing = install_tracing(app, exporter=span_exporter, secrets=runtime.router.secrets)
        if runtime.oidc is not None:
            runtime.oidc.send_through(tracing.traced_transport)
    install_error_handlers(app)
    guarded = ("/api/", f"{openai_compat.PREFIX}/")
    # Inside BodyGuard, so it reads a guarded body.
    app.add_middleware(
        CancelOnDisconnect,
        prefix=guarded,
        stopping=runtime.stopping,
        deadline=settings.request_deadline,
    )
    # The OAuth server's forms and registrations, and MCP's messages, too: nothing reads an
    # unbounded body, and every 413 is in the API's error shape.
    app.add_middleware(
        BodyGuard, max_body_bytes=settings.max_body_bytes, prefix=(*guarded, "/oauth/", "/mcp")
    )
    # Outside BodyGuard, so that its 413s are recorded too.
    app.add_middleware(RecordRejections, runtime=runtime)
    app.add_middleware(openai_compat.OpenAIErrors)  # sees every /v1 error, the guards' too
    # Outermost, so it times everything and sees every answer, the guards' refusals included.
    app.add_middleware(RequestMetrics, metrics=runtime.metrics, routes=app.router.routes)
    # Around everything: the client, scheme and host of a trusted proxy's request, for all.
    app.add_middleware(ForwardedHeaders, trusted=settings.trusted_proxies)
    if settings.cors_origins:
        # Outermost: a preflight is answered before anything else, and every answer, errors
        # included, says who may read it. No cookies cross origins (keys and tokens are sent
        # in Authorization), so the console's session stays its own page's.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Accept", "X-Request-ID"],
            expose_headers=["Link", "Retry-After", "WWW-Authenticate", "X-Request-ID"],
            max_age=600,
        )
    # Outside everything: each request's id (X-Request-ID), and, with GPTACTIONS_ACCESS_LOG,
    # one line per request, the preflights' and the guards' included.
    app.add_middleware(AccessLog, lines=settings.access_log)
    app.include_router(conversations.router)
    app.include_router(status.router)
    app.include_router(logs.router)
    app.include_router(usage.router)
    app.include_router(actions.router)
    app.include_router(me.router)
    app.include_router(openai_compat.router)
    app.include_router(meta.router)
    app.include_router(oauth.router)
    app.include_router(oauth_authorizations.router)
    app.include_router(oidc.router)
    app.include_router(metrics_api.router)
    app.router.routes.append(Route("/mcp", mcp, methods=["POST"], include_in_schema=False))
    app.openapi = lambda: meta.served_document(app)  # type: ignore[method-assign]
    app.mount(
        "/console", meta.ConsoleFiles(directory=meta.CONSOLE, check_dir=False), name="console"
    )
    # Behind the exact routes, so that only what they do not take (a HEAD, say) passes it.
    app.router.middleware_stack = HeadAsGet(app.router.middleware_stack, app.router.routes)
    exact.install(app)  # last: it reads the routes as they are now
    return app


GC_YOUNG_THRESHOLD = 10_000
"""Allocations between two collections of the youngest generation (Python's default: 700)."""


def settle_garbage_collector() -> None:
    """Set start-up's objects aside from the garbage collector, and collect less often.

    What start-up built (modules, the ORM's and pydantic's tables, the routes) lives as long as
    the process: frozen, it is no longer walked by every full collection, each of which took
    ~70 ms over its ~200,000 objects, a fifth of the server's time under load. And at Python's
    default threshold the young generation was collected every few requests, walking the
    objects of the requests in flight each time and promoting them towards the old ones.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def create_app_from_environment() -> FastAPI:
    """Factory for `uvicorn --factory` and multi-worker serving: settings from the environment."""
    return create_app(Settings(), serving=True)
