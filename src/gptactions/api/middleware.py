"""A request guard that runs before routing: the body's size (413).

It is the one check made before the caller's key: a body over the limit is refused from its
Content-Length without being read. Everything else about a body (its media type, its JSON, its
fields) is judged after the key, by `deps.json_body`.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gptactions.api.errors import error_response

_BODY_METHODS = {"POST", "PUT", "PATCH"}


class BodyTooLarge(HTTPException):
    """The body passed the limit while it was being read.

    An HTTPException, so that FastAPI's body parsing lets it through (it turns other errors
    raised while reading into a 400) and the app's handler answers 413 in the one error shape.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the body is larger than {limit} bytes")


class BodyGuard:
    """Refuses API bodies that are larger than the limit, before anything reads them.

    A pure ASGI middleware, so the limit holds for chunked bodies without a Content-Length too.
    """

    def __init__(
        self, app: ASGIApp, *, max_body_bytes: int, prefix: str | tuple[str, ...] = "/api/"
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in _BODY_METHODS
            or not scope["path"].startswith(self.prefix)
        ):
            await self.app(scope, receive, send)
            return
        length = None  # the last Content-Length, as a dict of the headers would keep it
        for name, value in scope["headers"]:
            if name.lower() == b"content-length":
                length = value.decode("latin-1")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            await _too_large(scope, send, self.max_body_bytes)
            return

        received = 0
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise BodyTooLarge(self.max_body_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not response_started:
                await _too_large(scope, send, self.max_body_bytes)


async def _too_large(scope: Scope, send: Send, limit: int) -> None:
    """The 413, in the error shape of the request's path (`errors.error_response` decides)."""
    message = f"the body is larger than {limit} bytes"
    response = error_response(413, message, path=scope["path"])
    await send({"type": "http.response.start", "status": 413, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})
