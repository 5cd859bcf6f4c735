"""The access log: one line per request, written when it ends, with who called, the bytes sent
and the time taken; 499 for a client that left before the answer, `cut` for a body cut midway."""

from __future__ import annotations

import json
import logging
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gptactions.api.access import ACCESS_LOGGER, AccessLog
from gptactions.app import create_app
from gptactions.config import Settings
from gptactions.llm.fake import FakeBackend
from gptactions.services.keys import Principal
from tests.conftest import ADMIN_KEY, ApiClient, running_app
from tests.serving import Server, run_cli, serve
from tests.upstream.faulty import FaultyUpstream

API = "/api/v1/gpt"
MS = r"\d+\.\dms"
RID = r"req_[0-9a-f]{32}"


class Lines(logging.Handler):
    """The access lines written, as messages."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def access() -> Iterator[Lines]:
    """The access logger enabled for INFO, its lines kept."""
    logger = logging.getLogger(ACCESS_LOGGER)
    handler = Lines()
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def scope_of(path: str = "/", query: bytes = b"", **more: Any) -> Scope:
    """An HTTP request's scope, as uvicorn makes it."""
    return {
        "type": "http",
        "method": "GET",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "http_version": "1.1",
        "headers": [],
        "client": ("1.2.3.4", 5678),
        "state": {},
    } | more


async def run(app: ASGIApp, scope: Scope | None = None) -> list[Message]:
    """Run one request through `AccessLog(app)`; the messages the server was sent."""
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await AccessLog(app)(scope or scope_of(), receive, send)
    return sent


def answering(
    *chunks: bytes, end: bool = True, status: int = 200, principal: Any = None
) -> ASGIApp:
    """An app that answers `status` with `chunks`, ending the body or not (its client left)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if principal is not None:
            scope["state"]["principal"] = principal
        await send({"type": "http.response.start", "status": status, "headers": []})
        for chunk in chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        if end:
            await send({"type": "http.response.body", "body": b""})

    return app


async def test_a_request_is_one_line_when_it_ends(access: Lines) -> None:
    await run(answering(b"hello", b" world"))
    assert len(access.lines) == 1
    assert re.fullmatch(
        rf'1\.2\.3\.4:5678 - - "GET / HTTP/1\.1" 200 11 {MS} {RID}', access.lines[0]
    )


async def test_a_head_sent_no_body_bytes_whatever_the_app_wrote(access: Lines) -> None:
    # The app answers a HEAD as a GET (`HeadAsGet`); the server drops the body, as nginx counts.
    await run(answering(b"hello"), scope_of(method="HEAD"))
    assert re.fullmatch(
        rf'1\.2\.3\.4:5678 - - "HEAD / HTTP/1\.1" 200 0 {MS} {RID}', access.lines[0]
    )


async def test_a_body_cut_midway_is_its_status_and_cut(access: Lines) -> None:
    await run(answering(b"data: first\n\n", end=False))  # the client left: the app stopped
    assert re.fullmatch(
        rf'1\.2\.3\.4:5678 - - "GET / HTTP/1\.1" 200 13 {MS} cut {RID}', access.lines[0]
    )

    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        await answering(b"data: first\n\n", end=False)(scope, receive, send)
        raise RuntimeError("the server failed midway")

    with pytest.raises(RuntimeError):
        await run(failing)
    assert re.search(rf" cut {RID}$", access.lines[1]) and " 200 13 " in access.lines[1]


async def test_nothing_sent_is_499_when_the_client_left_and_500_when_the_app_failed(
    access: Lines,
) -> None:
    async def left(scope: Scope, receive: Receive, send: Send) -> None:
        return None  # as an app cancelled when its client disconnected returns

    async def failed(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("broken")

    await run(left)
    with pytest.raises(RuntimeError):
        await run(failed)
    assert re.fullmatch(rf'.* "GET / HTTP/1\.1" 499 0 {MS} {RID}', access.lines[0])
    assert re.fullmatch(rf'.* "GET / HTTP/1\.1" 500 0 {MS} {RID}', access.lines[1])


async def test_the_caller_is_the_keys_id_prefix_or_the_user_never_a_secret(access: Lines) -> None:
    key = Principal("0123456789abcdef0123456789abcdef", "ci", "default", frozenset({"chat"}))
    user = Principal("client-id", "oauth:gpt", "@users", frozenset({"chat"}), user_id="alice")
    spaced = Principal("client-id", "oauth:gpt", "@users", frozenset(), user_id='bob "b"\nsmith')
    for principal in (key, user, spaced):
        await run(answering(b"{}", principal=principal))
    callers = [line.split(" ")[2] for line in access.lines]
    assert callers[:2] == ["key:01234567", "user:alice"]
    assert access.lines[2].split(" - ", 1)[1].startswith('user:"bob \\"b\\"\\nsmith" "GET')
    assert all("\n" not in line for line in access.lines)


async def test_query_values_that_carry_secrets_are_redacted(access: Lines) -> None:
    callback = scope_of("/oauth/oidc/callback", b"code=c0de-s3cret&state=st4te")
    search = scope_of(f"{API}/logs", b"q=my+diagnosis&userId=alice&limit=5")
    keyed = scope_of(f"{API}/status", b"api_key=gpta_k3y&apikey=gpta_k3y&key=gpta_k3y")
    for scope in (callback, search, keyed):
        await run(answering(b"{}"), scope)
    callback_line, search_line, keyed_line = access.lines
    assert "c0de-s3cret" not in callback_line and "st4te" not in callback_line
    assert '"GET /oauth/oidc/callback?code=REDACTED&state=REDACTED HTTP/1.1"' in callback_line
    assert "diagnosis" not in search_line and "userId=alice&limit=5" in search_line
    assert "gpta_k3y" not in keyed_line
    assert "api_key=REDACTED&apikey=REDACTED&key=REDACTED" in keyed_line


async def test_a_secret_anywhere_in_the_target_is_redacted(access: Lines) -> None:
    # A key pasted into a path, or into a parameter not named as a secret's.
    key = "gpta_3Jc0abcdefghijklmnopqrstuvwxyz0123456789AB"
    await run(answering(b"x"), scope_of(f"/nonexistent/{key}", query=f"note={key}".encode()))
    await run(answering(b"x"), scope_of("/x/gpto_abcdefgh12345678/gptr_abcdefgh12345678"))
    assert '"GET /nonexistent/gpta_REDACTED?note=gpta_REDACTED HTTP/1.1"' in access.lines[0]
    assert '"GET /x/gpto_REDACTED/gptr_REDACTED HTTP/1.1"' in access.lines[1]
    assert "3Jc0" not in "".join(access.lines)


async def test_the_client_is_the_one_a_proxy_named_or_dash(access: Lines) -> None:
    await run(answering(b""), scope_of(client=("203.0.113.7", 0)))  # `api.forwarded`'s rewrite
    await run(answering(b""), scope_of(client=None))
    assert access.lines[0].startswith('203.0.113.7 - - "GET')
    assert access.lines[1].startswith('- - - "GET')


async def test_below_info_a_request_gets_its_id_and_no_line(access: Lines) -> None:
    """GPTACTIONS_LOG_LEVEL=warning: no access line, the answer's X-Request-ID all the same."""
    logger = logging.getLogger(ACCESS_LOGGER)
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        sent = await run(answering(b"{}"))
    finally:
        logger.setLevel(level)
    assert access.lines == []
    assert re.fullmatch(RID, dict(sent[0]["headers"])[b"x-request-id"].decode())


async def test_a_request_keeps_the_id_it_came_with_when_it_is_one(access: Lines) -> None:
    """nginx's `$request_id`, a client's own: kept when 8-128 characters that cannot break a
    line; anything else is replaced by a new one."""
    given = b"9f8e7d6c5b4a39281706f5e4d3c2b1a0"
    for value in (given, b"short", b"with space inside it", b"x" * 129):
        scope = scope_of(headers=[(b"x-request-id", value)])
        sent = await run(answering(b"{}"), scope)
        answered = dict(sent[0]["headers"])[b"x-request-id"]
        if value == given:
            assert answered == given and access.lines[-1].endswith(" " + given.decode())
        else:
            assert re.fullmatch(RID.encode(), answered), value


async def test_every_answer_carries_its_id_as_the_log_line_does(
    api: ApiClient, access: Lines
) -> None:
    ok = await api.get(f"{API}/status")
    refused = await api.get(f"{API}/status", key=None)
    for response, line in zip((ok, refused), access.lines, strict=True):
        assert re.fullmatch(RID, response.headers["x-request-id"])
        assert line.endswith(" " + response.headers["x-request-id"])


async def test_gptactions_access_log_false_writes_no_line_but_gives_ids(
    settings: Settings, access: Lines
) -> None:
    def outermost(app: Any) -> Any:
        return app.user_middleware[0].cls

    assert outermost(create_app(settings)) is AccessLog
    cors = settings.model_copy(update={"cors_origins": ["https://example.com"]})
    assert outermost(create_app(cors)) is AccessLog  # outside CORS: preflights are logged too
    quiet = settings.model_copy(update={"access_log": False})
    async with running_app(quiet, FakeBackend()) as api:
        response = await api.get(f"{API}/status")
    assert re.fullmatch(RID, response.headers["x-request-id"])
    assert access.lines == []


async def test_the_apps_lines_name_the_key_and_the_unauthenticated(
    api: ApiClient, access: Lines
) -> None:
    created = await api.runtime.keys.create("reader", scopes=("logs",))
    assert (await api.get(f"{API}/status", key=created.secret)).status_code == 200
    assert (await api.get(f"{API}/status", key=None)).status_code == 401
    body = {"userId": "u", "message": "hi"}
    assert (await api.post(f"{API}/conversations", body, key=created.secret)).status_code == 403
    # No route: the key is read for the log's `rejected` row, and the access line names it too.
    assert (await api.get(f"{API}/nope", key=created.secret)).status_code == 404
    ok, unauthenticated, forbidden, unrouted = access.lines
    assert f" - key:{created.info.id[:8]} " in ok and " 200 " in ok
    assert " - - " in unauthenticated and " 401 " in unauthenticated
    assert f" - key:{created.info.id[:8]} " in forbidden and " 403 " in forbidden
    assert f" - key:{created.info.id[:8]} " in unrouted and " 404 " in unrouted
    assert all(created.secret[:12] not in line for line in access.lines)


async def test_a_scrape_with_an_admin_key_names_it(settings: Settings, access: Lines) -> None:
    protected = settings.model_copy(update={"metrics_token": SecretStr("scrape-me-0123456789")})
    async with running_app(protected, FakeBackend()) as api:
        (admin,) = await api.runtime.keys.list()
        assert (await api.get("/metrics", key=ADMIN_KEY)).status_code == 200
        assert (await api.get("/metrics", key="scrape-me-0123456789")).status_code == 200
    by_key, by_token = access.lines
    assert f" - key:{admin.id[:8]} " in by_key and " - - " in by_token


# Against the real server


ACCESS_LINE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00 INFO: +(?P<client>\S+) - (?P<caller>\S+) "
    r'"(?P<request>[^"]*)" (?P<status>\d{3}) (?P<bytes>\d+) (?P<ms>\d+\.\d)ms(?P<cut> cut)? '
    r"(?P<id>\S+)$"
)


def access_lines(server: Server) -> list[dict[str, str | None]]:
    """The server's access lines, parsed."""
    text = server.log.read_text(errors="replace")
    return [m.groupdict() for line in text.splitlines() if (m := ACCESS_LINE.match(line))]


def lines_for(server: Server, request: str, count: int = 1) -> list[dict[str, str | None]]:
    """The access lines of `request` ("POST /path"), once there are `count` (or 10 s passed)."""
    deadline = time.monotonic() + 10
    while True:
        found = [line for line in access_lines(server) if line["request"] == f"{request} HTTP/1.1"]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def raw_request(server: Server, head: bytes, body: bytes = b"") -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=15)
    sock.sendall(head + body)
    return sock


@pytest.mark.upstream
def test_the_server_writes_one_line_per_request_as_it_ends(tmp_path: Path) -> None:
    upstream = FaultyUpstream().start()
    backends = [
        {"name": "slow", "url": upstream.url("slow-3"), "model": "slow"},
        {"name": "drip", "url": upstream.url("drip-0.2"), "model": "drip"},
    ]
    env = {
        "GPTACTIONS_LOG_LEVEL": "info",
        "GPTACTIONS_BACKENDS": json.dumps(backends),
        "GPTACTIONS_FALLBACK": "none",
    }
    try:
        with serve(tmp_path, key=ADMIN_KEY, env=env) as server:
            (admin,) = json.loads(run_cli(server, "keys", "list", "--json"))
            auth = {"Authorization": f"Bearer {ADMIN_KEY}"}
            assert httpx.get(f"{server.url}{API}/status", headers=auth).status_code == 200
            assert httpx.get(f"{server.url}{API}/logs?q=my+words", headers=auth).status_code == 200
            assert httpx.get(f"{server.url}{API}/status").status_code == 401

            def post(model: str, stream: bool) -> socket.socket:
                body = json.dumps({"userId": "u", "message": "hi", "model": model}).encode()
                accept = b"text/event-stream" if stream else b"application/json"
                head = (
                    b"POST %s/conversations?model=%s HTTP/1.1\r\nHost: x\r\n"
                    b"Authorization: Bearer %s\r\nContent-Type: application/json\r\n"
                    b"Accept: %s\r\nContent-Length: %d\r\n\r\n"
                    % (API.encode(), model.encode(), ADMIN_KEY.encode(), accept, len(body))
                )
                return raw_request(server, head, body)

            # A client that leaves while the slow backend thinks: nothing was sent.
            with post("slow", stream=False):
                time.sleep(0.5)
            # A stream whose client leaves after its first event.
            with post("drip", stream=True) as cut:
                received = b""
                while b"event: " not in received:  # the head comes first, then the events
                    chunk = cut.recv(65536)
                    assert chunk, received
                    received += chunk
            (gone_line,) = lines_for(server, f"POST {API}/conversations?model=slow")
            (cut_line,) = lines_for(server, f"POST {API}/conversations?model=drip")
            time.sleep(0.5)  # nothing more comes
            lines = access_lines(server)
    finally:
        upstream.stop()
    statuses = [line for line in lines if line["request"] == f"GET {API}/status HTTP/1.1"]
    assert [line["status"] for line in statuses] == ["200", "401"]
    status, unauthenticated = statuses
    (logs,) = [line for line in lines if (line["request"] or "").startswith(f"GET {API}/logs")]
    caller = f"key:{admin['id'][:8]}"
    assert status["caller"] == caller and status["status"] == "200" and status["cut"] is None
    assert int(status["bytes"] or 0) > 0 and str(status["client"]).startswith("127.0.0.1:")
    assert logs["caller"] == caller and "my+words" not in (logs["request"] or "")
    assert unauthenticated["caller"] == "-" and unauthenticated["status"] == "401"
    assert gone_line["status"] == "499" and gone_line["bytes"] == "0" and gone_line["cut"] is None
    assert gone_line["caller"] == caller and float(gone_line["ms"] or 0) >= 400
    assert cut_line["status"] == "200" and cut_line["cut"] == " cut"
    assert int(cut_line["bytes"] or 0) > 0
    # One line per request: the three GETs and the two POSTs (and `serve`'s probes of /healthz).
    assert len([line for line in lines if line["request"] != "GET /healthz HTTP/1.1"]) == 5
