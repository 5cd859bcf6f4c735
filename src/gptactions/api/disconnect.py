"""Cancel a request's work when its client goes away, so an abandoned reply stops generating;
when the server stops, so a request still running at the end of the grace ends cleanly; and at
its deadline (GPTACTIONS_REQUEST_DEADLINE), so ChatGPT gets an answer before it gives up."""

from __future__ import annotations

import asyncio
from contextlib import suppress

import anyio
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gptactions.api.errors import error_body
from gptactions.api.sse import MEDIA_TYPE, event
from gptactions.runtime import Stopping
from gptactions.services.interactions import server_stopping

RESTARTING = "the server is restarting; retry shortly"
RESTARTING_RETRY_AFTER = 1
PAST_DEADLINE = "the request could not be answered before its deadline; retry shortly"
PAST_DEADLINE_RETRY_AFTER = 5
BODY_LATE = (
    "the request's body did not all arrive within {seconds:g} s (GPTACTIONS_REQUEST_DEADLINE)"
)


def deadline_margin(deadline: float) -> float:
    """Seconds before a request's deadline at which its generation ends: the time left to store
    the reply and send it (a quarter of the deadline, at most 2 s)."""
    return min(2.0, deadline / 4)


def generation_deadline(scope: Scope) -> float | None:
    """The loop time by which the request's generation must end; None without a deadline."""
    until: float | None = scope.get("state", {}).get("generate_until")
    return until


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

    Requests under `deadline_prefix` have `deadline` seconds from arrival to answer: the time
    their generation must end by goes into the scope's state (`generation_deadline`), and the
    services end it there. Should anything else hold a POST up (the database, say), it is
    cancelled shortly before the deadline and answered 503 with Retry-After; one still waiting
    for its body then is the client's fault: 408 (`BODY_LATE`). On every route, the server
    itself (`gptactions.serving`) answers the same 408 once a body has taken the deadline from
    the end of its head; here it comes slightly earlier, and the server sends no second answer
    to a request whose answer has begun.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        prefix: str | tuple[str, ...] = "/api/",
        stopping: Stopping | None = None,
        deadline: float | None = None,
        deadline_prefix: str = "/api/v1/gpt/",
    ) -> None:
        self.app = app
        self.prefix = prefix
        self.stopping = stopping
        self.deadline = deadline
        self.deadline_prefix = deadline_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        loop = asyncio.get_running_loop()
        answer_by: float | None = None
        if (
            self.deadline is not None
            and scope["type"] == "http"
            and scope["path"].startswith(self.deadline_prefix)
        ):
            answer_by = loop.time() + self.deadline
            margin = deadline_margin(self.deadline)
            scope.setdefault("state", {})["generate_until"] = answer_by - margin
            # The last resort fires after the generation's end, before the answer is due.
            answer_by -= margin / 4
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or not scope["path"].startswith(self.prefix)
        ):
            await self.app(scope, receive, send)
            return
        # On the hot path of every POST: one task watches the client (from the end of the
        # body on); the deadline is a timer and the server's stop a callback, not tasks.
        disconnected = False
        body_read = False
        responded = False
        started = False
        streaming = False
        stopped = False
        late = False
        reading = False  # the app waits for the next part of the body
        watcher: asyncio.Task[None] | None = None
        gone: asyncio.Event | None = None  # made only when the app listens after the body

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
            nonlocal body_read, watcher, gone, reading
            if body_read:
                if not disconnected:
                    gone = gone or asyncio.Event()
                    await gone.wait()
                return {"type": "http.disconnect"}
            reading = True
            message = await receive()
            reading = False
            if message["type"] == "http.disconnect":
                body_read = True
                client_gone()
            elif not message.get("more_body", False):
                body_read = True
                watcher = loop.create_task(watch())
            return message

        with anyio.CancelScope() as cancel_scope:

            def client_gone() -> None:
                nonlocal disconnected
                disconnected = True
                if gone is not None:
                    gone.set()
                if not responded:
                    cancel_scope.cancel()

            async def watch() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                client_gone()

            def stop() -> None:
                nonlocal stopped
                if not responded:
                    stopped = True
                    cancel_scope.cancel()

            def too_late() -> None:
                nonlocal late
                if not started:
                    late = True
                    cancel_scope.cancel()

            timer = loop.call_at(answer_by, too_late) if answer_by is not None else None
            told = None
            if self.stopping is not None:
                self.stopping.on_set(stop)
                # What the cancelled work records as its error: the server stopped, not the client.
                told = server_stopping.set(self.stopping)
            try:
                await self.app(scope, app_receive, app_send)
            finally:
                if timer is not None:
                    timer.cancel()
                if self.stopping is not None:
                    self.stopping.forget(stop)
                if told is not None:
                    server_stopping.reset(told)
                if watcher is not None:
                    watcher.cancel()
        if disconnected or responded:
            return
        with suppress(OSError):  # the client left meanwhile
            if stopped:
                body = error_body(503, RESTARTING, code="server_restarting")
                await _cut_short(send, body, RESTARTING_RETRY_AFTER, started, streaming)
            elif late and reading:
                # The client, not the server, is late: it sent less body than it announced.
                message = BODY_LATE.format(seconds=self.deadline)
                body = error_body(408, message, code="request_timeout")
                await _cut_short(send, body, None, started, streaming)
            elif late:
                body = error_body(503, PAST_DEADLINE, code="deadline_exceeded")
                await _cut_short(send, body, PAST_DEADLINE_RETRY_AFTER, started, streaming)


async def _cut_short(
    send: Send, body: dict[str, object], retry_after: int | None, started: bool, streaming: bool
) -> None:
    """Tell the client why its request ended early, however far its answer had gone: a 503
    with `retry_after`, or without it a 408 that closes the connection (its body unread)."""
    if not started:
        content = JSONResponse(body).body  # encoded as every other answer is
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(content)).encode()),
        ]
        if retry_after is None:
            headers.append((b"connection", b"close"))
        else:
            headers.append((b"retry-after", str(retry_after).encode()))
        await send(
            {
                "type": "http.response.start",
                "status": 503 if retry_after is not None else 408,
                "headers": headers,
            }
        )
        await send({"type": "http.response.body", "body": content})
    elif streaming:
        await send({"type": "http.response.body", "body": event("error", body)})
    # A JSON answer cut in the middle cannot be mended: the server closes the connection.
