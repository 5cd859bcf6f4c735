"""HTTP methods as RFC 9110 has them: HEAD wherever GET is, and a 405's `Allow` naming them all.

FastAPI routes each (path, method) to its own route: a path with a GET route and a POST route
(`/api/v1/gpt/actions`) answered a PUT with the `Allow` of whichever route it tried first
("POST"), and no route took HEAD, which every GET resource must (RFC 9110, 9.3.2). Here a
request's methods are found by asking the router's own matching, method by method, so what is
allowed is always what the routes take.
"""

from __future__ import annotations

from urllib.parse import quote

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CANDIDATES = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
"""The methods a route here may take, in the order `Allow` names them."""


def routed(routes: list[BaseRoute], scope: Scope, method: str) -> bool:
    """Whether a route takes `method` at the scope's path."""
    probe = {**scope, "method": method}
    return any(route.matches(probe)[0] == Match.FULL for route in routes)


def allowed_methods(routes: list[BaseRoute], scope: Scope) -> str:
    """The `Allow` header for the scope's path: every method a route takes there, with HEAD
    wherever GET is (`HeadAsGet`)."""
    methods = [m for m in CANDIDATES if m != "HEAD" and routed(routes, scope, m)]
    if "GET" in methods:
        methods.insert(methods.index("GET") + 1, "HEAD")
    return ", ".join(methods)


def slash_twin(routes: list[BaseRoute], scope: Scope) -> str | None:
    """Where a request the router found no route for is answered with its path's trailing
    slash added or taken away (`/status/` -> `/status`), with its query; None if nowhere.

    The router's own redirect (Starlette's `redirect_slashes`) wrote an absolute URL from the
    request's Host header: a client could have it name any host, which a cache in front might
    keep and serve to others. This one is relative to the request's own URL (`../status`,
    `./status/`; RFC 3986, 5.2), so it also holds under any prefix a proxy serves the API at.
    """
    path: str = scope["path"]
    if path == "/" or "endpoint" in scope:  # an endpoint answered the 404 (a file, say)
        return None
    raw = scope.get("raw_path")
    if raw is not None and raw.split(b"?", 1)[0].endswith(b"/") != path.endswith("/"):
        # `/status%2F`: the slash is part of the last segment, which `../status` does not
        # replace (it resolved to the parent's sibling); no route has that segment.
        return None
    twin = path[:-1] if path.endswith("/") else path + "/"
    if not any(route.matches({**scope, "path": twin})[0] != Match.NONE for route in routes):
        return None
    segment = quote(twin.rstrip("/").rsplit("/", 1)[-1])
    location = f"../{segment}" if path.endswith("/") else f"./{segment}/"
    query = scope.get("query_string", b"").decode("latin-1")
    return location + ("?" + query if query else "")


class HeadAsGet:
    """A HEAD request for a GET route is answered as the GET, without its body.

    The headers are the GET's own, Content-Length included (RFC 9110, 9.3.2). A HEAD for a path
    without GET goes on as it is, to the router's 405.
    """

    def __init__(self, app: ASGIApp, routes: list[BaseRoute]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "HEAD"
            or routed(self.routes, scope, "HEAD")
            or not routed(self.routes, scope, "GET")
        ):
            await self.app(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)
