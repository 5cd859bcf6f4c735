"""How the HTTP layer writes a response: a head with `Content-Length` leaves in the same write as
its body, so a process killed between the two cannot leave a client a head without its body.

The protocol runs on a real socket, in this test's event loop; its transport records each write.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from gptactions.serving import GuardedHttpProtocol, HttpLimits

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

JSON_BODY = b'{"reply":"hello"}'


class RecordingTransport:
    """The connection's transport, remembering the bytes of each `write`."""

    def __init__(self, transport: asyncio.Transport, writes: list[bytes]) -> None:
        self.transport = transport
        self.writes = writes

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self.transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


class App:
    """Answers by path: `/json` a fixed body, `/stream` chunks after `release`, `/broken` a head
    with a length and then an error."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        if scope["path"] == "/stream":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await self.release.wait()
            await send({"type": "http.response.body", "body": b"event", "more_body": False})
            return
        length = [(b"content-length", b"%d" % len(JSON_BODY))]
        await send({"type": "http.response.start", "status": 200, "headers": length})
        if scope["path"] == "/broken":
            raise RuntimeError("the app failed after starting its answer")
        await send({"type": "http.response.body", "body": JSON_BODY})


@pytest.fixture
async def served() -> AsyncIterator[tuple[App, list[bytes], int]]:
    """The protocol serving `App` on a loopback port; the writes of its (one) connection."""
    app = App()
    config = Config(app=app, lifespan="off", access_log=False, log_config=None)
    config.load()
    state = ServerState()
    writes: list[bytes] = []

    def protocol() -> GuardedHttpProtocol:
        made = GuardedHttpProtocol(config, state, {}, limits=HttpLimits())
        connection_made = made.connection_made
        made.connection_made = lambda transport: connection_made(  # type: ignore[method-assign]
            RecordingTransport(transport, writes)  # type: ignore[arg-type]
        )
        return made

    server = await asyncio.get_running_loop().create_server(protocol, "127.0.0.1", 0)
    try:
        yield app, writes, server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for connection in list(state.connections):
            connection.shutdown()
        await server.wait_closed()


async def read_head(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)


async def test_a_head_with_a_length_leaves_in_one_write_with_its_body(
    served: tuple[App, list[bytes], int],
) -> None:
    _, writes, port = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for _ in range(2):  # and again on the same keep-alive connection
        writer.write(b"GET /json HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await read_head(reader)
        assert head.startswith(b"HTTP/1.1 200")
        assert await asyncio.wait_for(reader.readexactly(len(JSON_BODY)), 10) == JSON_BODY
    writer.close()
    assert len(writes) == 2
    assert all(write == head + JSON_BODY for write in writes)


async def test_a_streamed_head_leaves_before_its_first_chunk(
    served: tuple[App, list[bytes], int],
) -> None:
    app, writes, port = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await read_head(reader)  # while the app still waits for `release`
    assert b"transfer-encoding: chunked" in head
    app.release.set()
    assert await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 10) == b"5\r\nevent\r\n0\r\n\r\n"
    writer.close()
    assert writes[0] == head


async def test_the_head_of_a_head_request_is_sent(served: tuple[App, list[bytes], int]) -> None:
    _, writes, port = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"HEAD /json HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await read_head(reader)
    assert head.startswith(b"HTTP/1.1 200")
    assert b"content-length: %d" % len(JSON_BODY) in head
    writer.close()
    assert writes == [head]


async def test_a_head_whose_body_never_comes_is_not_sent(
    served: tuple[App, list[bytes], int], caplog: pytest.LogCaptureFixture
) -> None:
    _, writes, port = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /broken HTTP/1.1\r\nHost: x\r\n\r\n")
    assert await asyncio.wait_for(reader.read(), 10) == b""  # closed, with nothing sent
    writer.close()
    assert writes == []
    assert "the app failed after starting its answer" in caplog.text
