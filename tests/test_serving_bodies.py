"""A request's body, against the real server: it must all arrive within GPTACTIONS_REQUEST_DEADLINE
of the end of its head, on every route (408, the connection closed); and connections still
receiving a body make room for a new connection when the connection budget is full."""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN_KEY
from tests.serving import Server, serve
from tests.test_serving import connect, read_until_closed, send_head

DEADLINE = 1.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the module, with a one-second request deadline."""
    env = {"GPTACTIONS_REQUEST_DEADLINE": f"{DEADLINE:g}", "GPTACTIONS_LOG_LEVEL": "info"}
    with serve(tmp_path_factory.mktemp("bodies"), key=ADMIN_KEY, env=env, port=18351) as running:
        yield running


def slow_post(path: str, key: str, length: int = 1000) -> bytes:
    """A POST's head announcing `length` bytes of body (a form to the OAuth server, JSON
    elsewhere), and its first byte."""
    form = path.startswith("/oauth/")
    kind = b"application/x-www-form-urlencoded" if form else b"application/json"
    return b"POST %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n" % (
        path.encode(),
        key.encode(),
    ) + b"Content-Type: %s\r\nContent-Length: %d\r\n\r\n%s" % (
        kind,
        length,
        b"a" if form else b"{",
    )


def responses(answer: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Every response in `answer`: status, headers (lower case) and body."""
    found = []
    while answer:
        head, rest = answer.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines[1:])
        length = int(headers["content-length"])
        found.append((int(lines[0].split()[1]), headers, rest[:length]))
        answer = rest[length:]
    return found


ROUTES = ["/oauth/token", "/oauth/authorize", "/mcp", "/v1/chat/completions"]


@pytest.mark.parametrize("path", [*ROUTES, "/api/v1/gpt/conversations"])
def test_a_body_that_does_not_all_arrive_in_time_is_a_408_on_every_route(
    server: Server, path: str
) -> None:
    """One byte every 0.2 s of a 1000-byte body: it stayed open forever outside /api/v1/gpt.
    Answered once (under /api/v1/gpt the app's deadline comes first), then closed."""
    with connect(server) as sock:
        started = time.monotonic()
        sock.sendall(slow_post(path, server.key))
        for _ in range(50):
            readable, _, _ = select.select([sock], [], [], 0.2)  # the server's answer, or go on
            if readable:
                break
            send_head(sock, b" ")
        else:
            pytest.fail("the server kept reading the trickled body")
        answer = read_until_closed(sock)
        elapsed = time.monotonic() - started
    assert elapsed < DEADLINE + 1.5
    [(status, headers, body)] = responses(answer)
    assert status == 408 and headers["connection"] == "close"
    assert headers["x-request-id"].startswith("req_")
    error = json.loads(body)["error"]
    assert error["code"] == "request_timeout" and "body did not all arrive" in error["message"]


def test_a_body_that_arrives_in_time_is_served(server: Server) -> None:
    body = b'{"grant_type": "nothing"}'
    head = slow_post("/oauth/token", server.key, len(body))[:-1]
    with connect(server) as sock:
        sock.sendall(head)
        time.sleep(DEADLINE / 2)
        sock.sendall(body)
        time.sleep(DEADLINE)  # past the deadline counted from the head: the answer stands
        sock.shutdown(socket.SHUT_WR)
        [(status, _, _)] = responses(read_until_closed(sock))
    assert status != 408


def test_healthz_answers_while_slow_bodies_fill_the_connection_budget(tmp_path: Path) -> None:
    """80 connections sending their bodies a byte at a time, on a server allowed 40: connections
    still receiving a body were never closed to make room, so every newcomer, /healthz too, was
    the one closed. Now the ones receiving longest are closed (408), the newest kept."""
    budget = 40
    env = {"GPTACTIONS_MAX_CONNECTIONS": str(budget)}
    with serve(tmp_path, key=ADMIN_KEY, env=env, open_files=128, port=18352) as running:
        attackers: list[socket.socket] = []
        try:
            for index in range(2 * budget):
                sock = connect(running)
                attackers.append(sock)
                send_head(sock, slow_post(ROUTES[index % len(ROUTES)], running.key))
                time.sleep(0.02)  # the server has the head: a request receiving its body
            for _ in range(3):
                response = httpx.get(f"{running.url}/healthz", timeout=5)
                assert response.status_code == 200
            # The connections receiving their bodies longest were closed to make room.
            readable, _, _ = select.select(attackers, [], [], 0)
            answers = {sock: read_until_closed(sock) for sock in readable}
            assert len(attackers) - len(answers) <= budget
            assert attackers[0] in answers and attackers[-1] not in answers
            for answer in answers.values():  # told why, or closed without a word
                assert [status for status, _, _ in responses(answer)] in ([], [408])
        finally:
            for sock in attackers:
                sock.close()


def test_a_body_still_coming_after_an_early_answer_is_cut_off_at_the_deadline(
    server: Server,
) -> None:
    """/oauth/token refuses JSON before reading it: its answer is out, then the connection
    closes at the deadline, with no second answer."""
    head = slow_post("/oauth/token", server.key).replace(
        b"application/x-www-form-urlencoded", b"application/json"
    )
    with connect(server) as sock:
        started = time.monotonic()
        sock.sendall(head)
        answer = b""
        while time.monotonic() - started < DEADLINE + 1.5:
            readable, _, _ = select.select([sock], [], [], 0.2)
            if readable:
                try:
                    chunk = sock.recv(65536)
                except ConnectionResetError:  # closed, with a byte of ours unread
                    break
                if not chunk:
                    break
                answer += chunk
            send_head(sock, b" ")
        else:
            pytest.fail("the server kept reading the trickled body")
    assert [status for status, _, _ in responses(answer)] == [400]
