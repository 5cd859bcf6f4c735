"""Requests for a route of a fixed path go straight to it, the way FastAPI's router sends them.

FastAPI's router (0.16x) finds a request's route by walking the routers included in it, twice (to
match, then to handle), working out the route's effective context on the way: ~10% of one
worker's requests/s on `POST /api/v1/gpt/conversations` through an instant upstream
(bench/README.md). For a path without parameters the outcome is always the same, so `ExactRoutes`
works it out once, when the app is built, by asking FastAPI's own matching: for each method and
fixed path of a route included in the app, the route FastAPI's router selects, if it is that
route. A request for one of them then takes the steps FastAPI's router takes once it has
selected its route (`APIRouter.app`, `_IncludedRouter.handle` and `_handle_selected`); any other
request goes through the router.

What this reads of FastAPI's internals is checked when the table is built. Anything not as
expected (a FastAPI release that routes otherwise) leaves every request on FastAPI's router, with
a warning: slower, never wrong.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import fastapi
import fastapi.routing as fastapi_routing
from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger(__name__)

_internals: Any = fastapi_routing
"""FastAPI's routing module, whose private names are read below (checked when the table is
built)."""

Direct = Callable[[Scope, Receive, Send], Awaitable[None]]


class ExactRoutes:
    """In front of the app's router: `(method, path)` -> the selected route's steps."""

    def __init__(self, app: ASGIApp, table: dict[tuple[str, str], Direct]) -> None:
        self.app = app
        self.table = table

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            direct = self.table.get((scope["method"], scope["path"]))
            if direct is not None:
                await direct(scope, receive, send)
                return
        await self.app(scope, receive, send)


def install(app: FastAPI) -> int:
    """Put `ExactRoutes` in front of `app`'s router, once its routes are all there; how many
    (method, path) pairs go straight to their route (0: none, FastAPI routes everything)."""
    try:
        table = _table(app)
    except (AttributeError, TypeError, KeyError) as error:
        log.warning(
            "FastAPI %s does not route as gptactions' exact routes expect (%s: %s); its router "
            "routes every request",
            fastapi.__version__,
            type(error).__name__,
            error,
        )
        return 0
    router = app.router
    router.middleware_stack = ExactRoutes(router.middleware_stack, table)
    return len(table)


def _table(app: FastAPI) -> dict[tuple[str, str], Direct]:
    router = app.router
    included_type = _internals._IncludedRouter
    table: dict[tuple[str, str], Direct] = {}
    for included in router.routes:
        if not isinstance(included, included_type):
            continue
        for context in included.effective_route_contexts():
            route = context.original_route
            path = context.path_format
            if not isinstance(route, APIRoute) or "{" in path:
                continue
            for method in context.methods or ():
                if (method, path) in table:
                    continue
                direct = _selected(app, included, context, method, path)
                if direct is not None:
                    table[method, path] = direct
    return table


def _probe(method: str, path: str) -> Scope:
    """A request scope as the server makes it, for matching only."""
    return {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "http_version": "1.1",
        "scheme": "http",
        "server": ("127.0.0.1", 80),
    }


def _selected(app: FastAPI, included: Any, context: Any, method: str, path: str) -> Direct | None:
    """The steps to the route FastAPI's router selects for `method path`, if it selects
    `context`'s route from `included`; else None."""
    router = app.router
    owner: Any = included  # an _IncludedRouter
    for candidate in router.routes:  # the router takes the first full match (APIRouter.app)
        if candidate.matches(_probe(method, path))[0] == Match.FULL:
            if candidate is not included:
                return None
            break
    else:
        return None
    match, child_scope, route, selected = owner._match(_probe(method, path))
    if match != Match.FULL or selected is not context or route is not context.original_route:
        return None
    # Everything the steps below use, looked up now: a missing name fails the build, not a request.
    apply_form_limits = _internals._apply_router_form_limits
    fastapi_scope = _internals._get_fastapi_scope
    update_scope = _internals._update_scope
    route_selected = _internals._route_selected
    included_key = _internals._FASTAPI_INCLUDED_ROUTER_KEY
    context_key = _internals._FASTAPI_EFFECTIVE_ROUTE_CONTEXT_KEY
    router_limits = router.form_limits
    include_limits = owner.include_context.form_limits
    template = getattr(context.starlette_route, "path_format", None) or context.path_format
    handle = context.original_route.handle

    async def direct(scope: Scope, receive: Receive, send: Send) -> None:
        # APIRouter.app, for the included router it matched:
        apply_form_limits(scope, router_limits)
        if "router" not in scope:
            scope["router"] = router
        # _IncludedRouter.handle, then _handle_selected for the route it matched:
        apply_form_limits(scope, include_limits)
        fastapi_scope(scope)[included_key] = owner
        update_scope(scope, {**child_scope, "path_params": {}})  # a request's own dict
        route_selected(scope=scope, path=template, mount=False)
        fastapi_scope(scope)[context_key] = context
        scope["route"] = route
        await handle(scope, receive, send)

    return direct
