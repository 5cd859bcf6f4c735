"""Cancel a request's work when its client goes away, so an abandoned reply stops generating;
and when the server stops, so a request still running at the end of the grace ends cleanly."""

from __future__ import annotations

import asyncio
import json
from contextlib import suppress

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gptactions.api.errors import error_body
from gptactions.api.sse import MEDIA_TYPE, event

RESTARTING = "the server is restarting; retry shortly"
RESTARTING_RETRY_AFTER = 1


class CancelOnDisconnect:
    """Cancels the handling of a POST under `prefix` when the client disconnects or the server
    stops (`stopping` is set at the end of the shutdown grace).

    ASGI servers tell an app that its client left only through `receive()`, which a route that
    is waiting for a model never calls. So once the app has read the request body, this
    middleware listens on its behalf; on `http.disconnect` it cancels the app, which closes the
    upstream request or stops the embedded model. The app's own later `receive()` calls (a
    streaming response watching for the disconnect) see it too. Either way the cancelled work
    stores what was generated as a `cancelled` interaction. A request cut short by the server
    stopping then gets a 503 that says the server is restarting, or, when its event stream had
    begun, a last `error` event that says so.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        prefix: str | tuple[str, ...] = "/api/",
        stopping: asyncio.Event | None = None,
    ) -> None:
        self.app = app
        self.prefix = prefix
        self.stopping = stopping

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or not scope["path"].startswith(self.prefix)
        ):
            await self.app(scope, receive, send)
            return
        body_read = asyncio.Event()
        disconnected = asyncio.Event()
        responded = False
        started = False
        streaming = False
        stopped = False

        async def app_send(message: Message) -> None:
            nonlocal responded, started, streaming
            if message["type"] == "http.response.start":
                started = True
                content_type = dict(message.get("headers", [])).get(b"content-type", b"")
                streaming = content_type.startswith(MEDIA_TYPE.encode())
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                responded = True  # servers report a disconnect once the answer is complete
            await send(message)

        async def app_receive() -> Message:
            if body_read.is_set():
                await disconnected.wait()
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.disconnect":
                disconnected.set()
            if message["type"] == "http.disconnect" or not message.get("more_body", False):
                body_read.set()
            return message

        with anyio.CancelScope() as cancel_scope:

            async def watch() -> None:
                await body_read.wait()
                if not disconnected.is_set():
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    disconnected.set()
                if not responded:
                    cancel_scope.cancel()

            async def watch_stopping() -> None:
                nonlocal stopped
                if self.stopping is None:
                    return
                await self.stopping.wait()
                if not responded:
                    stopped = True
                    cancel_scope.cancel()

            watchers = [asyncio.ensure_future(watch()), asyncio.ensure_future(watch_stopping())]
            try:
                await self.app(scope, app_receive, app_send)
            finally:
                for watcher in watchers:
                    watcher.cancel()
        # Outside the cancelled scope: wait for the watchers without swallowing a cancellation
        # that is meant for this task.
        await asyncio.wait(watchers)
        if stopped and not responded and not disconnected.is_set():
            with suppress(OSError):  # the client left meanwhile
                await _restarting(send, started=started, streaming=streaming)


async def _restarting(send: Send, *, started: bool, streaming: bool) -> None:
    """Tell the client the server is restarting, however far its answer had gone."""
    body = error_body(503, RESTARTING, code="server_restarting")
    if not started:
        content = json.dumps(body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(content)).encode()),
                    (b"retry-after", str(RESTARTING_RETRY_AFTER).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": content})
    elif streaming:
        await send({"type": "http.response.body", "body": event("error", body)})
    # A JSON answer cut in the middle cannot be mended: the server closes the connection.
