"""Cancel a request's work when its client goes away, so an abandoned reply stops generating."""

from __future__ import annotations

import asyncio

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class CancelOnDisconnect:
    """Cancels the handling of a POST under `prefix` as soon as the client disconnects.

    ASGI servers tell an app that its client left only through `receive()`, which a route that
    is waiting for a model never calls. So once the app has read the request body, this
    middleware listens on its behalf; on `http.disconnect` it cancels the app, which closes the
    upstream request or stops the embedded model. The app's own later `receive()` calls (a
    streaming response watching for the disconnect) see it too.
    """

    def __init__(self, app: ASGIApp, *, prefix: str = "/api/") -> None:
        self.app = app
        self.prefix = prefix

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

        async def app_send(message: Message) -> None:
            nonlocal responded
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

            watcher = asyncio.ensure_future(watch())
            try:
                await self.app(scope, app_receive, app_send)
            finally:
                watcher.cancel()
        # Outside the cancelled scope: wait for the watcher without swallowing a cancellation
        # that is meant for this task.
        await asyncio.wait([watcher])
