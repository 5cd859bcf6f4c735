"""The HTTP layer's limits, against the real server: header size, header deadline, keep-alive,
a connection budget under slowloris, and timestamped log lines."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import logging.config
import os
import re
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gptactions.api.access import ACCESS_LOGGER
from gptactions.config import Settings
from gptactions.serving import QUIET_AT_DEBUG, http_limits, log_config
from tests.conftest import ADMIN_KEY
from tests.serving import Server, serve

ISO_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00 ")
LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the module, with one-second header and keep-alive timeouts."""
    env = {
        "GPTACTIONS_HEADER_TIMEOUT": "1",
        "GPTACTIONS_KEEPALIVE_TIMEOUT": "1",
        "GPTACTIONS_LOG_LEVEL": "info",
    }
    with serve(tmp_path_factory.mktemp("serving"), key=ADMIN_KEY, env=env) as running:
        yield running


def connect(server: Server) -> socket.socket:
    """A raw TCP connection to the server, whose reads give up after 15 s."""
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=15)
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a reset counts as closed)."""
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return received


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    """One response, without waiting for the connection to close: its status and body."""
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        assert chunk, "closed before a response"
        received += chunk
    head, body = received.split(b"\r\n\r\n", 1)
    length = int(re.search(rb"content-length: (\d+)", head, re.IGNORECASE)[1])  # type: ignore[index]
    while len(body) < length:
        body += sock.recv(65536)
    return int(head.split()[1]), body


def send_head(sock: socket.socket, head: bytes) -> None:
    """Send, tolerating a server that closes the connection before everything is sent."""
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        sock.sendall(head)


def assert_error(answer: bytes, status: int, code: str) -> None:
    """The answer is `status` in the API's error shape, or the connection closed unanswered."""
    if not answer:
        return
    head, body = answer.split(b"\r\n\r\n", 1)
    assert head.split()[1] == str(status).encode()
    assert json.loads(body)["error"]["code"] == code
    assert re.search(rb"\r\nx-request-id: req_[0-9a-f]{32}\r\n", head), head  # as every answer


HUGE_HEADS = {
    "one long header": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: "
    + b"a" * 100_000
    + b"\r\n\r\n",
    "many headers": b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
    + b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 40) for i in range(2500))
    + b"\r\n",
    "long URL": b"GET /healthz?q=" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "long method line": b"G" * 100_000 + b" / HTTP/1.1\r\nHost: x\r\n\r\n",
    "ten megabytes, never ending": b"GET /healthz HTTP/1.1\r\nX-Big: " + b"a" * 10_000_000,
}


@pytest.mark.parametrize("head", HUGE_HEADS.values(), ids=HUGE_HEADS.keys())
def test_headers_over_the_limit_are_refused(server: Server, head: bytes) -> None:
    with connect(server) as sock:
        send_head(sock, head)
        answer = read_until_closed(sock)
    if head.startswith(b"G" * 20):
        assert_error(answer, 400, "invalid_request")  # the parser refuses such a method first
    else:
        assert_error(answer, 431, "headers_too_large")


@pytest.mark.parametrize(
    ("head", "reason"),
    [
        (b"FOO / HTTP/1.1\r\nHost: x\r\n\r\n", "Invalid method encountered"),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", "Content-Length"),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "Duplicate Content-Length",
        ),
    ],
)
def test_a_malformed_request_is_told_what_is_wrong(
    server: Server, head: bytes, reason: str
) -> None:
    """Every one was answered "Invalid HTTP request received." alone."""
    with connect(server) as sock:
        send_head(sock, head)
        answer = read_until_closed(sock)
    assert_error(answer, 400, "invalid_request")
    message = json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["message"]
    assert message.startswith("Invalid HTTP request received: ") and reason in message


def test_a_pipelined_request_with_huge_headers_is_refused(server: Server) -> None:
    small = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    with connect(server) as sock:
        send_head(sock, small + HUGE_HEADS["ten megabytes, never ending"])
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert_error(answer[answer.index(b"HTTP/1.1", 10) :], 431, "headers_too_large")


def test_headers_under_the_limit_are_served(server: Server) -> None:
    big = b"a" * (LIMIT - 1000)
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + big + b"\r\n\r\n")
        assert read_response(sock)[0] == 200


def test_partial_headers_are_answered_408_after_the_header_timeout(server: Server) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        answer = read_until_closed(sock)
    assert answer
    assert_error(answer, 408, "request_timeout")


def test_trickled_headers_do_not_extend_the_deadline(server: Server) -> None:
    """One byte every 0.2 s: the deadline counts from the head's start, not from the last byte."""
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 1000
    with connect(server) as sock:
        for byte in head:
            sock.sendall(bytes([byte]))
            readable, _, _ = select.select([sock], [], [], 0.2)  # the server's answer, or go on
            if readable:
                break
        else:
            pytest.fail("the server kept reading the trickled head")
        answer = read_until_closed(sock)
    assert_error(answer, 408, "request_timeout")


def test_a_connection_that_sends_nothing_is_closed(server: Server) -> None:
    with connect(server) as sock:
        assert read_until_closed(sock) == b""


def test_idle_keepalive_connections_are_closed(server: Server) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(sock)[0] == 200
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # still open after a request
        assert read_response(sock)[0] == 200
        assert read_until_closed(sock) == b""


def test_every_log_line_starts_with_an_iso_timestamp(server: Server) -> None:
    with connect(server) as sock:
        send_head(sock, HUGE_HEADS["one long header"])  # a warning
        read_until_closed(sock)
    assert httpx.get(f"{server.url}/healthz").status_code == 200  # an access line
    lines = [
        line
        for line in server.log.read_text().splitlines()
        if line and not line.startswith("gptactions ")  # the banner `serve` prints first
    ]
    assert any("431" in line for line in lines)
    assert any('"GET /healthz HTTP/1.1" 200' in line for line in lines)
    assert [line for line in lines if not ISO_LINE.match(line)] == []


def test_healthz_answers_while_slowloris_connections_hold_the_files(tmp_path: Path) -> None:
    """50 connections that never finish their headers, on a server allowed 64 open files."""
    with serve(tmp_path, key=ADMIN_KEY, open_files=64) as running:
        budget = 32  # half the open files
        attackers = [connect(running) for _ in range(50)]
        try:
            for sock in attackers:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: a")
            for _ in range(3):
                response = httpx.get(f"{running.url}/healthz", timeout=10)
                assert response.status_code == 200
            # The oldest idle connections were closed to make room; the newest still wait.
            readable, _, _ = select.select(attackers, [], [], 0)
            closed = [sock for sock in readable if read_until_closed(sock) == b""]
            assert len(attackers) - len(closed) <= budget
            assert attackers[-1] not in closed
        finally:
            for sock in attackers:
                sock.close()


def test_the_connection_budget_defaults_to_half_the_open_files() -> None:
    settings = Settings()
    assert http_limits(settings, 64).max_connections == 32
    assert http_limits(settings, 1_000_000).max_connections == 4096
    assert http_limits(Settings(max_connections=10), 64).max_connections == 10


@contextlib.contextmanager
def logging_configured(config: dict[str, Any], *names: str) -> Iterator[io.StringIO]:
    """`config` applied, every handler writing to the stream yielded; the loggers `names` (and
    the root, uvicorn's and the access logger) as they were afterwards."""
    stream = io.StringIO()
    for handler in config["handlers"].values():
        handler["stream"] = stream
    names = ("", "uvicorn", "uvicorn.error", ACCESS_LOGGER, *names)
    saved = {
        name: (logger.handlers[:], logger.level, logger.propagate)
        for name in names
        for logger in [logging.getLogger(name)]
    }
    logging.config.dictConfig(config)
    try:
        yield stream
    finally:
        for name, (handlers, level, propagate) in saved.items():
            logger = logging.getLogger(name)
            logger.handlers[:] = handlers
            logger.setLevel(level)
            logger.propagate = propagate


def _logged(config: dict[str, Any]) -> list[str]:
    """The lines a line of the app's, one of uvicorn's and an access line are, under `config`."""
    with logging_configured(config) as stream:
        logging.getLogger("gptactions.test").warning("from the app")
        logging.getLogger("uvicorn.error").info("from uvicorn")
        logging.getLogger(ACCESS_LOGGER).info('1.2.3.4:5 - - "GET / HTTP/1.1" 200 2 1.0ms')
    return stream.getvalue().splitlines()


def test_at_debug_the_libraries_that_quote_secrets_stay_quiet() -> None:
    """At GPTACTIONS_LOG_LEVEL=debug the server's own lines come out, not those of the
    libraries that quote what the access log redacts (aiosqlite's statements and parameters)."""
    with logging_configured(log_config("debug"), *QUIET_AT_DEBUG, "gptactions.test") as stream:
        logging.getLogger("aiosqlite").debug("executing MATCH ('\"secretword\"')")
        logging.getLogger("gptactions.test").debug("the server's own debug line")
    assert "the server's own debug line" in stream.getvalue()
    assert "secretword" not in stream.getvalue()


def test_the_log_configuration_stamps_app_and_uvicorn_lines() -> None:
    lines = _logged(log_config("info"))
    assert len(lines) == 3
    assert all(ISO_LINE.match(line) for line in lines)
    assert "gptactions.test: from the app" in lines[0]
    assert lines[2].endswith(' INFO:     1.2.3.4:5 - - "GET / HTTP/1.1" 200 2 1.0ms')
    # Below INFO, no access lines (GPTACTIONS_LOG_LEVEL=warning).
    assert log_config("warning")["loggers"][ACCESS_LOGGER]["level"] == "WARNING"


def test_uvicorns_lines_name_their_logger_as_the_apps_do() -> None:
    """uvicorn's life-cycle lines come from `uvicorn.error`: named `uvicorn`, as none is one."""
    app, uvicorn, _ = _logged(log_config("info"))
    assert app.split(" ", 1)[1] == "WARNING:  gptactions.test: from the app"
    assert uvicorn.split(" ", 1)[1] == "INFO:     uvicorn: from uvicorn"


def test_a_workers_lines_name_it_but_the_access_lines_keep_their_format() -> None:
    app, uvicorn, access = _logged(log_config("info", worker=True))
    worker = f"[worker {os.getpid()}]"
    assert app.split(" ", 1)[1] == f"WARNING:  {worker} gptactions.test: from the app"
    assert uvicorn.split(" ", 1)[1] == f"INFO:     {worker} uvicorn: from uvicorn"
    assert access.split(" ", 1)[1] == 'INFO:     1.2.3.4:5 - - "GET / HTTP/1.1" 200 2 1.0ms'


@pytest.mark.parametrize("path", ["/api/v1/gpt/conversations", "/v1/chat/completions"])
def test_a_client_that_leaves_inside_its_body_is_counted_499_not_an_error(
    server: Server, path: str
) -> None:
    """Half a body, then the connection closed: nobody to answer, and nothing went wrong. The
    request is counted with nginx's 499 ("client closed request"), never as a 500, and the log
    has no traceback for it."""
    body = json.dumps({"userId": "leaver", "message": "a message never sent whole"}).encode()
    with connect(server) as sock:
        sock.sendall(
            b"POST %s HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer %s\r\n"
            b"Content-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s"
            % (path.encode(), server.key.encode(), len(body) + 100, body)
        )
    counted = re.compile(
        rf'^gptactions_http_requests_total\{{method="POST",route="{re.escape(path)}",'
        r'status="(\d+)"\} (\S+)$',
        re.M,
    )
    headers = {"Authorization": f"Bearer {server.key}"}
    deadline = time.monotonic() + 15
    statuses: dict[str, float] = {}
    while not statuses and time.monotonic() < deadline:  # the server sees the close on its own
        metrics = httpx.get(f"{server.url}/metrics", headers=headers).text
        statuses = {status: float(count) for status, count in counted.findall(metrics)}
    assert statuses == {"499": 1.0}
    log = server.log.read_text()
    # One access line for it, at its end, with the status the metrics counted.
    assert len(re.findall(rf' - key:\w{{8}} "POST {re.escape(path)} HTTP/1.1" 499 0 ', log)) == 1
    assert "Traceback" not in log
    assert "unhandled error" not in log


def test_the_access_log_keeps_secrets_and_searches_out_of_its_lines(server: Server) -> None:
    """An OpenID Connect provider's callback carries its code, `/logs?q=` what a user wrote:
    the access line names the parameters, not their values (tests/test_access_log.py has the
    other parameters)."""
    headers = {"Authorization": f"Bearer {server.key}"}
    search = f"{server.url}/api/v1/gpt/logs?q=my+diagnosis&userId=alice&limit=5"
    assert httpx.get(search, headers=headers).status_code == 200
    callback = f"{server.url}/oauth/oidc/callback?code=c0de-s3cret&state=st4te"
    httpx.get(callback)
    deadline = time.monotonic() + 10
    while "/oauth/oidc/callback" not in (log := server.log.read_text()):
        assert time.monotonic() < deadline, log
        time.sleep(0.05)
    assert "diagnosis" not in log and "c0de-s3cret" not in log and "st4te" not in log
    assert '"GET /api/v1/gpt/logs?q=REDACTED&userId=alice&limit=5 HTTP/1.1" 200 ' in log
    assert '"GET /oauth/oidc/callback?code=REDACTED&state=REDACTED HTTP/1.1" ' in log
