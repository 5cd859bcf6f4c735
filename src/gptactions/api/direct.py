"""Routes whose dependencies are plain `async` functions skip FastAPI's general solver.

FastAPI solves a route's dependencies anew on every request with code that handles every kind
of parameter (query, header, cookie, body, security scopes, `yield` dependencies, overrides):
about a tenth of the server's time on `POST /conversations` through a fast upstream. Our hot
routes take only the request and dependencies that are `async` callables of the request and of
each other (`api/deps.py`). For those, `DirectRoute` works out once, when the route is built, the
order in which to call them, and each request then makes just those calls: in the order FastAPI
makes them, each dependency once per request (FastAPI's cache), errors raised as they are. Any
route with something else, or an app with dependency overrides, goes through FastAPI as before.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import fastapi
import fastapi.routing
from fastapi.datastructures import DefaultPlaceholder
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, serialize_response
from starlette.requests import Request
from starlette.responses import Response

log = logging.getLogger(__name__)

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


@dataclass(frozen=True)
class _Step:
    """Call `call` with the request and earlier results; keep its result under its own key."""

    call: Callable[..., Any]
    request_param: str | None
    arguments: tuple[tuple[str, Callable[..., Any]], ...]
    """(parameter name, the call whose result it takes)"""


def _plain(dependant: Dependant) -> bool:
    """Whether a dependant takes nothing but the request and dependencies."""
    return not (
        dependant.path_params
        or dependant.query_params
        or dependant.header_params
        or dependant.cookie_params
        or dependant.body_params
        or dependant.websocket_param_name
        or dependant.http_connection_param_name
        or dependant.response_param_name
        or dependant.background_tasks_param_name
        or dependant.security_scopes_param_name
        or dependant.own_oauth_scopes
        or dependant.concurrency is not None
    )


def _is_async(call: Callable[..., Any]) -> bool:
    """An `async def` function, or an object whose `__call__` is one (not a generator)."""
    if inspect.isfunction(call) or inspect.ismethod(call):
        return inspect.iscoroutinefunction(call)
    return inspect.iscoroutinefunction(getattr(call, "__call__", None))  # noqa: B004


def _plan(dependant: Dependant) -> list[_Step] | None:
    """The dependencies' calls in FastAPI's order (depth first, each once), or None when one
    of them needs FastAPI's solver."""
    steps: list[_Step] = []
    seen: set[Callable[..., Any]] = set()

    def visit(node: Dependant) -> bool:
        arguments = []
        for sub in node.dependencies:
            call = sub.call
            if call is None or not sub.use_cache or not _plain(sub) or not _is_async(call):
                return False
            if call not in seen:
                if not visit(sub):
                    return False
                seen.add(call)
            if sub.name is not None:
                arguments.append((sub.name, call))
        if node is not dependant:
            assert node.call is not None
            steps.append(_Step(node.call, node.request_param_name, tuple(arguments)))
        else:
            steps.append(_Step(_endpoint, node.request_param_name, tuple(arguments)))
        return True

    if not _plain(dependant) or dependant.call is None or not _is_async(dependant.call):
        return None
    return steps if visit(dependant) else None


def _endpoint() -> None:
    """Stands for the route's own function in a plan (its last step)."""


class DirectRoute(APIRoute):
    """An APIRoute that calls its dependencies directly when they are all plain (see above)."""

    def get_route_handler(self) -> Handler:
        """FastAPI's handler, or the direct one when the route allows it.

        The direct handler reads FastAPI's route internals, which a FastAPI release may change
        (the dependency allows any version from 0.115 on). What it does not find as it expects
        (an attribute gone, `serialize_response` taking other arguments) keeps the route on
        FastAPI's own handler: slower, never broken."""
        general = super().get_route_handler()
        try:
            direct = self._direct_handler(general)
        except (AttributeError, TypeError) as error:
            _warn_once(f"{type(error).__name__}: {error}")
            return general
        return general if direct is None else direct

    def _direct_handler(self, general: Handler) -> Handler | None:
        """The direct handler, or None when the route needs FastAPI's solver."""
        # Included in a router, the route is built again with what the inclusion adds (its
        # dependencies, say); FastAPI says which through a context variable, read as it does.
        route: Any = self
        context = getattr(fastapi.routing, "_effective_route_context_var", None)
        effective = context.get() if context is not None else None
        if effective is not None and effective.original_route is self:
            route = effective
        dependant: Dependant | None = route.dependant
        plan = _plan(dependant) if dependant is not None else None
        if (
            dependant is None
            or dependant.call is None
            or plan is None
            or route.body_field is not None
            or route.status_code is not None
            or not isinstance(route.response_class, DefaultPlaceholder)
            or route.stream_item_field is not None
            or route.is_sse_stream
            or route.is_json_stream
            or inspect.isasyncgenfunction(dependant.call)
        ):
            return None
        options = dict(
            field=route.response_field,
            include=route.response_model_include,
            exclude=route.response_model_exclude,
            by_alias=route.response_model_by_alias,
            exclude_unset=route.response_model_exclude_unset,
            exclude_defaults=route.response_model_exclude_defaults,
            exclude_none=route.response_model_exclude_none,
            is_coroutine=True,
            # FastAPI's fast path: the response field writes JSON itself.
            dump_json=route.response_field is not None,
        )
        # A TypeError here if FastAPI's serialize_response takes other arguments now.
        inspect.signature(serialize_response).bind(response_content=None, **options)
        serialize = functools.partial(serialize_response, **options)
        response_class = route.response_class.value
        if route.response_field is not None:
            response_class = functools.partial(Response, media_type="application/json")
        return _direct(
            dependant.call,
            plan,
            general,
            route.dependency_overrides_provider,
            lambda content: response_class(content),
            serialize,
        )


@functools.cache
def _warn_once(error: str) -> None:
    log.warning(
        "FastAPI %s: its routes are not built as gptactions' direct routes expect (%s); "
        "they go through FastAPI's own handler",
        fastapi.__version__,
        error,
    )


def _direct(
    endpoint: Callable[..., Any],
    plan: list[_Step],
    general: Handler,
    overrides: Any,
    respond: Callable[[Any], Response],
    serialize: Callable[..., Awaitable[Any]],
) -> Handler:
    """What FastAPI's handler does for such a route (`fastapi.routing.get_request_handler`),
    without its general solver."""
    *dependencies, last = plan

    async def handle(request: Request) -> Response:
        if overrides is not None and getattr(overrides, "dependency_overrides", None):
            return await general(request)
        results: dict[Callable[..., Any], Any] = {}
        for step in dependencies:
            kwargs = {name: results[call] for name, call in step.arguments}
            if step.request_param is not None:
                kwargs[step.request_param] = request
            results[step.call] = await step.call(**kwargs)
        kwargs = {name: results[call] for name, call in last.arguments}
        if last.request_param is not None:
            kwargs[last.request_param] = request
        answer = await endpoint(**kwargs)
        if isinstance(answer, Response):
            return answer
        return respond(await serialize(response_content=answer))

    return handle
