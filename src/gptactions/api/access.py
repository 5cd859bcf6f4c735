"""The access log: one line per HTTP request, written when the request ends.

uvicorn's own access log wrote its line when a response started: a request whose client left
before its answer had no line, and a stream cut midway was a plain `200`. Here every request gets
exactly one line, once its answer is complete or abandoned, as nginx writes its own:

    203.0.113.7:51234 - key:3f2a9c1d "POST /api/v1/gpt/respond HTTP/1.1" 200 512 34.2ms req_5f0c…

the client, who called (`key:` and the first characters of the key's id, `user:` and the name
for an OAuth token, `-` for no valid credential; never a secret), the request line with the
values of sensitive query parameters written `REDACTED`, the status, the body bytes sent, the
time taken and the request's id, which its answer carries in `X-Request-ID` (and the server's
log, for an unexpected error): what a user quotes from a failed call finds its lines. A client
that left before the head was sent is `499`, as the metrics count it; an answer whose head went
out and whose body never finished (the client left, or the server failed midway) has its status
and `cut` before the id.
"""

from __future__ import annotations

import json
import logging
import os
import re
from time import perf_counter
from urllib.parse import quote

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gptactions.llm.redact import redacted_query
from gptactions.metrics import CLIENT_CLOSED_REQUEST
from gptactions.services.keys import KEY_PREFIX, Principal
from gptactions.services.oauth import ACCESS_PREFIX, CLIENT_SECRET_PREFIX, REFRESH_PREFIX

ACCESS_LOGGER = "gptactions.access"
KEY_ID_SHOWN = 8
"""The characters of a key's id a line shows: enough to find it in `gptactions keys list`."""

_MARKERS = "|".join(
    map(re.escape, (KEY_PREFIX, ACCESS_PREFIX, REFRESH_PREFIX, CLIENT_SECRET_PREFIX))
)
_SECRET = re.compile(f"({_MARKERS})[A-Za-z0-9_-]{{8,}}")
"""A key, token or client secret of this server, by its marker: never written to a line, even
where a client put one by mistake (in a path, say: `GET /gpta_…`)."""

REQUEST_ID_HEADER = b"x-request-id"
_GIVEN_ID = re.compile(rb"[A-Za-z0-9][A-Za-z0-9._:-]{7,127}")
"""An `X-Request-ID` a client or proxy sent that is kept (nginx's `$request_id`, a client's
own): 8 to 128 characters that cannot break a log line. Any other is replaced."""


def request_id(scope: Scope) -> str:
    """The request's id: the one it came with (`_GIVEN_ID`), else a new `req_` and 32 hex
    digits, as OpenAI's are. Kept in the scope's state, for the access line and the logs."""
    state = scope.setdefault("state", {})
    for name, value in scope.get("headers", ()):
        if name == REQUEST_ID_HEADER and _GIVEN_ID.fullmatch(value):
            state["request_id"] = value.decode("ascii")
            break
    else:
        state["request_id"] = new_request_id()
    return str(state["request_id"])


def new_request_id() -> str:
    """A new request id: `req_` and 32 hex digits, as OpenAI's are."""
    return "req_" + os.urandom(16).hex()


class Answer:
    """What went out of one request's answer: its status, body bytes, and whether it ended.

    A slotted object whose bound `send` wraps the server's: cheaper per request than a closure
    over as many cells.
    """

    __slots__ = ("complete", "id_header", "send_on", "sent", "status")

    def __init__(self, send: Send, request_id: str) -> None:
        self.send_on = send
        self.id_header = (REQUEST_ID_HEADER, request_id.encode("ascii"))
        self.status = 0
        self.sent = 0
        self.complete = False

    async def send(self, message: Message) -> None:
        """Pass the message on, the head with the request's id; note it once it has gone (one
        that raised did not)."""
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), self.id_header]}
            await self.send_on(message)
            self.status = message["status"]
            return
        await self.send_on(message)
        if message["type"] == "http.response.body":
            self.sent += len(message.get("body", b""))
            if not message.get("more_body", False):
                self.complete = True


class AccessLog:
    """Gives each HTTP request its id (`request_id`, answered in `X-Request-ID`) and writes one
    access line per request to `gptactions.access`, when the request ends.

    A pure ASGI middleware, outermost, so it sees every answer (a CORS preflight, a guard's
    refusal) and reads the caller the route identified (`request.state.principal`) and the
    client a trusted proxy named once the request is over. With `lines` false (or the logger
    not enabled for INFO) it only gives the ids.
    """

    def __init__(
        self, app: ASGIApp, *, logger: logging.Logger | None = None, lines: bool = True
    ) -> None:
        self.app = app
        self.log = logger or logging.getLogger(ACCESS_LOGGER)
        self.lines = lines

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = perf_counter()
        answer = Answer(send, request_id(scope))
        if not (self.lines and self.log.isEnabledFor(logging.INFO)):
            await self.app(scope, receive, answer.send)
            return
        failed = True
        try:
            await self.app(scope, receive, answer.send)
            failed = False
        finally:
            line = access_line(scope, answer, failed, perf_counter() - started)
            # `makeRecord` and `handle`, not `info`: `info` walks the stack for the caller's file
            # and line, which the line does not show.
            self.log.handle(self.log.makeRecord(self.log.name, logging.INFO, "", 0, line, (), None))


def access_line(scope: Scope, answer: Answer, failed: bool, seconds: float) -> str:
    """The line for a request: client, caller, request line, status, bytes, duration, `cut`."""
    status = answer.status
    if status == 0:
        # Nothing was sent: the app failed (the server answers 500), or the client left (499).
        status = 500 if failed else CLIENT_CLOSED_REQUEST
        cut = ""
    else:
        cut = "" if answer.complete else " cut"
    client = scope.get("client")
    if client is None:
        address = "-"
    elif client[1]:
        address = f"{client[0]}:{client[1]}"
    else:  # a trusted proxy named the client, not its port
        address = client[0]
    raw_path = scope.get("raw_path")
    target = raw_path.decode("ascii", "backslashreplace") if raw_path else quote(scope["path"])
    query = scope.get("query_string")
    if query:
        target = redacted_query(f"{target}?{query.decode('ascii', 'backslashreplace')}")
    target = _SECRET.sub(r"\1REDACTED", target)
    state = scope["state"]
    method = scope["method"]
    sent = 0 if method == "HEAD" else answer.sent  # the server sends a HEAD's answer no body
    return (
        f"{address} - {caller(state.get('principal'))} "
        f'"{method} {target} HTTP/{scope.get("http_version", "1.1")}" '
        f"{status} {sent} {seconds * 1000:.1f}ms{cut} {state.get('request_id', '-')}"
    )


def caller(principal: object) -> str:
    """Who called, as a line shows it: `key:<id prefix>`, `user:<name>`, or `-`."""
    if not isinstance(principal, Principal):
        return "-"
    if principal.user_id is None:
        return f"key:{principal.key_id[:KEY_ID_SHOWN]}"
    name = principal.user_id
    if " " in name or '"' in name or not name.isprintable():  # one field, on one line
        name = json.dumps(name)
    return f"user:{name}"
