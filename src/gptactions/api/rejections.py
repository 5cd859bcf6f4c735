"""Requests refused before the model are recorded in the log, for the caller to see in /logs.

When a GPT's call fails, the body it sent is what its builder needs to see. A refusal (400, 403,
404, 413, 415, 429) of an authenticated caller becomes an interaction of kind `rejected` in the
caller's tenant, as its user; an unauthenticated request stays out of the log and is counted in
the metrics instead (`gptactions_unauthenticated_rejections`).
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gptactions.api.deps import identify
from gptactions.llm.redact import redacted_query
from gptactions.runtime import Runtime
from gptactions.services.keys import Principal, parse_authorization
from gptactions.services.rejections import (
    MAX_BODY_BYTES,
    RECORDED_STATUSES,
    Rejection,
    record_rejection,
)

log = logging.getLogger(__name__)

_READ_TIMEOUT = 1.0
"""Seconds spent at most reading the start of a refused body the app did not read."""


class RecordRejections:
    """Records the refusals of requests under `prefix` (the API, `/v1` and MCP's endpoint);
    sits outside `BodyGuard`, so its 413s are seen too. The error answer is held until its
    interaction is committed, so that the log shows it as soon as the caller has its answer."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        runtime: Runtime,
        prefix: str | tuple[str, ...] = ("/api/v1/gpt/", "/v1/", "/mcp"),
    ) -> None:
        self.app = app
        self.runtime = runtime
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        arrived = loop.time()
        body = bytearray()
        size = 0
        ended = False
        status = 0
        held: list[Message] = []

        async def body_receive() -> Message:
            nonlocal size, ended
            message = await receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                size += len(chunk)
                body.extend(chunk[: max(0, MAX_BODY_BYTES - len(body))])
                ended = not message.get("more_body", False)
            elif message["type"] == "http.disconnect":
                ended = True
            return message

        async def read_unread_body() -> None:
            """What the app refused without reading (a 415, a 429): its start, for the log."""
            with suppress(TimeoutError):
                async with asyncio.timeout(_READ_TIMEOUT):
                    while not ended and len(body) < MAX_BODY_BYTES:
                        await body_receive()

        async def holding_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            if status not in RECORDED_STATUSES and status != 401:
                await send(message)
                return
            held.append(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                principal = await self._caller(scope) if status != 401 else None
                if principal is None:
                    self.runtime.metrics.unauthenticated_rejections.labels(str(status)).inc()
                else:
                    await read_unread_body()
                    await record_rejection(self.runtime.log, principal, rejection(status))
                for kept in held:
                    await send(kept)
                held.clear()

        def rejection(status: int) -> Rejection:
            answer = b"".join(m.get("body", b"") for m in held[1:])
            # Its secrets (a key sent in the URL) and searches are kept out, as in the access log.
            query = redacted_query(scope.get("query_string", b"").decode("latin-1"))
            return Rejection(
                method=scope["method"],
                path=scope["path"] + (f"?{query}" if query else ""),
                status=status,
                body=bytes(body),
                body_size=max(size, _announced(scope)),
                answer=answer,
                latency_ms=round((loop.time() - arrived) * 1000),
            )

        await self.app(scope, body_receive, holding_send)

    async def _caller(self, scope: Scope) -> Principal | None:
        """The caller the route identified; else (refused before routing: a 413) its key's."""
        principal = scope.get("state", {}).get("principal")
        if isinstance(principal, Principal):
            return principal
        headers = dict(scope["headers"])
        secret = parse_authorization(headers.get(b"authorization", b"").decode("latin-1") or None)
        if secret is None or not self.runtime.database.ready:
            return None
        try:
            principal = await identify(self.runtime, secret)
        except Exception:
            log.warning("the caller of a rejected request could not be identified", exc_info=True)
            return None
        if principal is not None:  # the access line names the caller its log row names
            scope.setdefault("state", {})["principal"] = principal
        return principal


def _announced(scope: Scope) -> int:
    """The body's Content-Length, 0 when absent or not a number."""
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit():
            return int(value)
    return 0
