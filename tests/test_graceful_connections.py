"""How a stopping server treats its connections, so that nginx never sends a request onto one the
server closes (a POST there is a 502 nginx does not retry): every answer from the stop on says
`Connection: close`; an idle keep-alive connection is left for its client to close, and a request
on it is answered; a connection the kernel accepted is taken in, not reset.

A `GracefulServer` (on uvloop, as `serve` runs it) serves a tiny app in a thread; the tests talk
to it over raw sockets, and the app starts the stop, as SIGTERM would, when asked to.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn

from gptactions.graceful import GracefulServer
from gptactions.serving import HttpLimits, http_protocol

ADDRESS = tuple[str, int]


class App:
    """`ok` to every request; `/stop` first starts the server's stop; `/stream` sends its head,
    then its body once `release` is set."""

    server: GracefulServer

    def __init__(self) -> None:
        self.release = threading.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        if scope["path"] == "/stop":
            self.server.handle_exit(signal.SIGTERM, None)
        if scope["path"] == "/stream":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            while not self.release.is_set():
                await asyncio.sleep(0.01)
            await send({"type": "http.response.body", "body": b"ok"})
            return
        length = [(b"content-length", b"2")]
        await send({"type": "http.response.start", "status": 200, "headers": length})
        await send({"type": "http.response.body", "body": b"ok"})


class BusyAsItStops(GracefulServer):
    """A server whose loop is busy elsewhere (reads nothing, accepts nothing) for `BUSY` seconds
    as its shutdown begins, as a loaded server's may be."""

    BUSY = 0.5

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        time.sleep(self.BUSY)
        await super().shutdown(sockets)


@contextlib.contextmanager
def serving(app: App, server_class: type[GracefulServer] = GracefulServer) -> Iterator[ADDRESS]:
    """`app` served by a `server_class` in a thread until the block ends; its address."""
    config = uvicorn.Config(
        app,
        lifespan="off",
        http=http_protocol(HttpLimits()),
        loop="uvloop",
        log_config=None,
        access_log=False,
    )
    app.server = server = server_class(config, grace=5)
    listening = socket.create_server(("127.0.0.1", 0))
    thread = threading.Thread(target=server.run, args=([listening],))
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive()
            time.sleep(0.01)
        yield listening.getsockname()
    finally:
        app.release.set()
        server.should_exit = True
        thread.join(30)
    assert not thread.is_alive()


def send(connection: socket.socket, path: str) -> None:
    connection.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())


def read_answer(connection: socket.socket, end: bytes = b"\r\n\r\nok") -> bytes:
    """The head of the answer, read up to `end` (a body of `ok`); lower case."""
    received = b""
    while not received.endswith(end):
        chunk = connection.recv(65536)
        assert chunk, f"closed before the answer: {received!r}"
        received += chunk
    return received.split(b"\r\n\r\n")[0].lower()


def exchange(connection: socket.socket, path: str) -> bytes:
    """Send a request on a keep-alive connection; the head of its answer."""
    send(connection, path)
    return read_answer(connection)


def closed(connection: socket.socket) -> bool:
    """Whether the server closed the connection (within its read timeout)."""
    return connection.recv(65536) == b""


def connect(address: ADDRESS) -> socket.socket:
    return socket.create_connection(address, timeout=10)


def test_once_the_stop_begins_every_answer_says_connection_close() -> None:
    # The signal comes while a request runs, before uvicorn's next tick (0.1 s) starts the
    # shutdown: its answer must not invite another request onto the connection.
    with serving(App()) as address, connect(address) as connection:
        assert b"connection: close" not in exchange(connection, "/")
        assert b"\r\nconnection: close" in exchange(connection, "/stop")
        assert closed(connection)  # and the server closed it after the answer


def test_an_idle_connection_is_left_open_and_a_request_on_it_answered() -> None:
    # uvicorn closes idle keep-alive connections as it stops: nginx may be sending a request on
    # one at that very moment. Left open, the request is answered, and the connection closed.
    with (
        serving(App()) as address,
        connect(address) as idle,
        connect(address) as stopping,
    ):
        assert b"connection: close" not in exchange(idle, "/")
        exchange(stopping, "/stop")
        time.sleep(0.3)  # past uvicorn's tick: the shutdown runs, the listening socket is closed
        with socket.socket() as refused:
            assert refused.connect_ex(address) != 0
        assert b"\r\nconnection: close" in exchange(idle, "/")
        assert closed(idle)


def test_after_a_stream_that_began_before_the_stop_the_next_request_is_answered() -> None:
    # The stream's head went out without `Connection: close`: its client may send its next
    # request as soon as the stream ends. The connection must not be closed under it.
    app = App()
    with serving(app) as address, connect(address) as streaming, connect(address) as stopping:
        send(streaming, "/stream")
        assert b"transfer-encoding: chunked" in read_answer(streaming, end=b"\r\n\r\n")
        exchange(stopping, "/stop")
        time.sleep(0.3)  # the shutdown runs
        app.release.set()
        read_answer(streaming, end=b"0\r\n\r\n")
        assert b"\r\nconnection: close" in exchange(streaming, "/")
        assert closed(streaming)


def test_a_connection_the_kernel_accepted_as_the_stop_begins_is_served_not_reset() -> None:
    # The kernel completes connections into the listening socket's queue until it closes; one
    # still queued then is reset, with the request nginx sent on it.
    with serving(App(), BusyAsItStops) as address, connect(address) as stopping:
        exchange(stopping, "/stop")
        time.sleep(0.1 + BusyAsItStops.BUSY / 2)  # past the tick: the loop is busy stopping
        with connect(address) as queued:
            assert b"\r\nconnection: close" in exchange(queued, "/")


class BusyAfterTakingIn(GracefulServer):
    """A server whose loop, once it has taken in what the kernel held as the stop began, is busy
    elsewhere for `BUSY` seconds before it closes its listening socket (a loaded loop's pass)."""

    BUSY = 0.5

    async def _take_in(self) -> None:
        await super()._take_in()
        time.sleep(self.BUSY)


def test_a_connection_the_kernel_accepted_just_before_the_socket_closes_is_served() -> None:
    # Completed into the queue after the loop's last accept, it was reset as the socket closed.
    with serving(App(), BusyAfterTakingIn) as address, connect(address) as stopping:
        exchange(stopping, "/stop")
        time.sleep(BusyAfterTakingIn.BUSY / 2)  # the loop is busy, past its last accept
        with connect(address) as queued:
            assert b"\r\nconnection: close" in exchange(queued, "/")
