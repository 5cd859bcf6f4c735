"""Server-Sent Events: a reply streamed as `token` events, then `done` or `error`.

```
event: token
data: {"text": "Hel"}

event: done
data: {"conversationId": "conv_…", "reply": "Hello", "model": "…", "usage": {…}, "latencyMs": 812}
```

An error after the stream began is an `error` event with the API's one error shape, never a
silent truncation. When the client goes away the generation stops and what was generated is
stored as a `cancelled` interaction.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing, suppress
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from gptactions.api.errors import DATABASE_UNAVAILABLE, backend_status, error_body
from gptactions.llm.base import BackendError
from gptactions.services.conversations import Reply
from gptactions.services.errors import ServiceError
from gptactions.services.streams import ReplyStream
from gptactions.store.outage import DatabaseUnavailable

log = logging.getLogger(__name__)

MEDIA_TYPE = "text/event-stream"
CONVERSATION_ID_HEADER = "X-Conversation-ID"


def wants_event_stream(request: Request) -> bool:
    """Whether the client's Accept header asks for Server-Sent Events: it names them, with a
    quality above 0 and not below JSON's (RFC 9110, 12.5.1; a tie goes to the stream, which the
    client named on purpose: `application/json, text/event-stream`)."""
    accept = request.headers.get("accept")
    if not accept or MEDIA_TYPE not in accept.lower():
        return False
    stream = json = 0.0
    json_precision = -1  # how specific the range that set `json` is: */*, application/*, exact
    for media_range in accept.split(","):
        media, *params = (part.strip() for part in media_range.split(";"))
        media = media.lower()
        quality = _quality(params)
        if media == MEDIA_TYPE:
            stream = max(stream, quality)
        elif (precision := _JSON_RANGES.get(media, -1)) > json_precision:
            json, json_precision = quality, precision
    return stream > 0 and stream >= json


_JSON_RANGES = {"*/*": 0, "application/*": 1, "application/json": 2}


def _quality(params: list[str]) -> float:
    """A media range's `q` (1 when absent or unreadable)."""
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                return min(max(float(value), 0.0), 1.0)
            except ValueError:
                return 1.0
    return 1.0


def event_schema(names: list[str], description: str) -> dict[str, Any]:
    """The document's schema of one event of a stream, as Open API 3.2 describes events.

    A 3.0 document has no `itemSchema`, so its `schema` describes each event (the reading of
    Open API tools such as schemathesis): the `event` field (`message` where the line is left
    out, as in OpenAI's streams) and the `data` line, JSON whose shape `description` gives.
    """
    return {
        "type": "object",
        "description": description,
        "required": ["event", "data"],
        "properties": {
            "event": {"type": "string", "enum": names},
            "data": {"type": "string", "description": "One JSON value (one line)."},
        },
    }


def event(name: str, data: dict[str, Any]) -> bytes:
    """One event in the wire format."""
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


async def reply_events(
    stream: ReplyStream, done: Callable[[Reply], dict[str, Any]]
) -> AsyncGenerator[bytes, None]:
    """The events of a streamed reply: its pieces, then `done` (shaped by `done`) or `error`."""
    try:
        async with aclosing(stream.pieces()) as pieces:
            async for piece in pieces:
                yield event("token", {"text": piece})
    except BackendError as error:
        status, code = backend_status(error)
        yield event("error", error_body(status, error.message, code=code))
        return
    except DatabaseUnavailable:
        # As a JSON answer's 503 says it (`errors._database`), without a traceback: the
        # database's outage log has said what is wrong, once.
        yield event("error", error_body(503, DATABASE_UNAVAILABLE, code="database_unavailable"))
        return
    except ServiceError as error:  # the turn could not be stored: its conversation was deleted
        yield event("error", error_body(error.status, error.message, code=error.code))
        return
    except Exception:
        log.exception("a streamed reply failed")
        yield event("error", error_body(500, "internal error; the server log has the details"))
        return
    assert stream.reply is not None
    yield event("done", done(stream.reply))


class EventStreamResponse(StreamingResponse):
    """A streaming response that notices the client leaving, and always cleans up after itself.

    The events are sent while another task listens for the client's disconnect; whichever ends
    first stops the other. Then the event generator is closed and `on_close` runs, shielded from
    the cancellation, so a reply cut short is still stored and its generation stopped.
    """

    def __init__(
        self,
        events: AsyncGenerator[bytes, None],
        *,
        on_close: Callable[[], Awaitable[None]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(
            events,
            media_type=MEDIA_TYPE,
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **(headers or {})},
        )
        self._events = events
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with anyio.create_task_group() as group:

                async def stream() -> None:
                    # OSError: the client went away while we were sending.
                    with suppress(OSError):
                        await self.stream_response(send)
                    group.cancel_scope.cancel()

                async def watch() -> None:
                    await self.listen_for_disconnect(receive)
                    group.cancel_scope.cancel()

                group.start_soon(stream)
                group.start_soon(watch)
        finally:
            with anyio.CancelScope(shield=True):
                await self._events.aclose()
                if self._on_close is not None:
                    await self._on_close()


def stream_reply(
    stream: ReplyStream, done: Callable[[Reply], dict[str, Any]]
) -> EventStreamResponse:
    """The response that streams a reply as Server-Sent Events. Its head names the conversation
    (`X-Conversation-ID`): a stream cut short before `done` (the server restarting, a backend
    failing) stored its partial turn there, which a client retrying may continue."""
    return EventStreamResponse(
        reply_events(stream, done),
        on_close=stream.aclose,
        headers={CONVERSATION_ID_HEADER: stream.conversation_id},
    )
