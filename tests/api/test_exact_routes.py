"""Requests for fixed paths go straight to their route (api/exact.py), as FastAPI's router would
have sent them: the same route, dependencies, scope and answer, in an app built to trip it up."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, Request

from gptactions.api import exact
from gptactions.app import create_app
from gptactions.config import Settings


def _seen(request: Request, **extra: Any) -> dict[str, Any]:
    """What an endpoint sees of its routing."""
    route = request.scope["route"]
    return {"route": route.path, "params": dict(request.scope["path_params"]), **extra}


async def _tagged(request: Request) -> str:
    request.state.tag = "from the inclusion"
    return "tagged"


def _app() -> FastAPI:
    app = FastAPI()
    items = APIRouter(prefix="/items")

    @items.get("/{item_id}")
    async def item(request: Request, item_id: str) -> dict[str, Any]:
        return _seen(request, item=item_id)

    @items.get("/special")  # shadowed: FastAPI's router selects `/{item_id}` first
    async def special(request: Request) -> dict[str, Any]:
        return _seen(request, special=True)

    @items.post("/special")  # not shadowed: the route before takes GET only
    async def special_post(request: Request) -> dict[str, Any]:
        return _seen(request, posted=True)

    guarded = APIRouter(prefix="/guarded")

    @guarded.post("/echo")
    async def echo(request: Request, tag: str = Depends(_tagged)) -> dict[str, Any]:
        body = await request.json()
        return _seen(request, tag=tag, state=request.state.tag, body=body)

    app.include_router(items)
    app.include_router(guarded, dependencies=[Depends(_tagged)])
    return app


async def _answers(app: FastAPI) -> list[tuple[int, Any]]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        answers = [
            await client.get("/items/special"),
            await client.post("/items/special"),
            await client.get("/items/42"),
            await client.post("/guarded/echo", json={"n": 1}),
            await client.put("/guarded/echo"),  # 405
            await client.post("/guarded/echo/"),  # a redirect, or 404: FastAPI's call
            await client.get("/nowhere"),
        ]
    return [(answer.status_code, answer.text) for answer in answers]


async def test_fixed_paths_are_answered_as_fastapi_routes_them() -> None:
    routed, direct = _app(), _app()
    assert exact.install(direct) == 2  # POST /items/special and POST /guarded/echo
    table = direct.router.middleware_stack.table  # type: ignore[attr-defined]
    assert set(table) == {("POST", "/items/special"), ("POST", "/guarded/echo")}
    assert await _answers(direct) == await _answers(routed)


async def test_the_shadowed_route_keeps_fastapis_choice() -> None:
    app = _app()
    exact.install(app)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        answer = await client.get("/items/special")
    assert answer.json() == {
        "route": "/items/{item_id}",
        "params": {"item_id": "special"},
        "item": "special",
    }


async def test_a_fastapi_that_routes_otherwise_keeps_its_router(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    class Elsewhere:
        """A routing module without the internals the table reads."""

    monkeypatch.setattr(exact, "_internals", Elsewhere())
    app = _app()
    with caplog.at_level(logging.WARNING, logger=exact.__name__):
        assert exact.install(app) == 0
    assert "routes every request" in caplog.text
    assert not isinstance(app.router.middleware_stack, exact.ExactRoutes)
    assert (await _answers(app))[3][0] == 200


def test_the_apps_hot_routes_go_straight_to_their_route(tmp_path: Any) -> None:
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path}/exact.db"))
    stack = app.router.middleware_stack
    assert isinstance(stack, exact.ExactRoutes)
    for hot in (
        ("POST", "/api/v1/gpt/conversations"),
        ("POST", "/api/v1/gpt/respond"),
        ("POST", "/api/v1/gpt/actions"),
        ("GET", "/api/v1/gpt/status"),
        ("GET", "/api/v1/gpt/logs"),
        ("POST", "/v1/chat/completions"),
        ("GET", "/healthz"),
    ):
        assert hot in stack.table
