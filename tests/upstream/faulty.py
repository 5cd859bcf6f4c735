"""A fault-injecting OpenAI-compatible upstream on 127.0.0.1, served from its own thread.

The first path segment picks the behaviour, so one server plays every kind of upstream:
`http://127.0.0.1:<port>/<mode>/v1`. Modes:

- `ok`: a proper answer (streamed when asked), usage included when `stream_options` asks.
- `slow-<s>`: waits `s` seconds, then answers like `ok`.
- `hang-<s>`: silent for `s` seconds (counting a client that leaves meanwhile), then like `ok`.
- `drip-<s>`: streams one word every `s` seconds (and answers like `ok` when not streamed).
- `500`, `503`, `400`: that status with an OpenAI-style error body.
- `429-<s>`: 429 with `Retry-After: s`.
- `429date`: 429 with a `Retry-After` that is an HTTP date decades ahead.
- `longline-<n>`: a streamed answer whose first line is `n` bytes long (not streamed: a JSON
  body of `n` bytes, sent without a `Content-Length`); then silent, without ending the line or
  the answer, until the client hangs up (counted in `disconnects`) or 30 seconds pass.
- `reset`: reads the request, then resets the connection without answering.
- `malformed`: 200 with a body that is not JSON (or, streamed, an event that is not JSON).
- `midway`: streams two words, then closes the connection before the reply ends.
- `error-event`: streams a word, then an `{"error": ...}` event.
- `echo-auth`: 401 whose message repeats the Authorization header it was sent.
- `echo-prompt`: 400 whose message quotes the request's last message, as some upstreams do.
- `reasoning`: 400 to `max_tokens` and to `temperature`, as OpenAI's reasoning models answer.
- `no-stream-options`: 400 naming `stream_options` when asked for it; else like `ok`.
- `call`: calls the request's first tool with `CALL_ARGUMENTS` (streamed in two pieces).

`script` holds modes that override the path's mode, one per request, for sequences such as
"500, 500, then ok". Every request is kept in `requests`; `disconnects` counts streams the client
closed before they ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

REPLY = "Hello from the faulty upstream"
CALL_ARGUMENTS = '{"city": "Paris"}'


@dataclass
class Received:
    """A request the upstream received."""

    method: str
    path: str
    mode: str
    headers: dict[str, str]
    body: dict[str, Any] = field(default_factory=dict)


class FaultyUpstream:
    """Start with `start()`, stop with `stop()`; `url(mode)` is a base URL for a backend."""

    def __init__(self) -> None:
        self.script: deque[str] = deque()
        self.requests: list[Received] = []
        self.disconnects = 0
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._ready = threading.Event()

    def url(self, mode: str = "ok") -> str:
        """The base URL (…/v1) of an upstream that behaves as `mode`."""
        return f"http://127.0.0.1:{self.port}/{mode}/v1"

    def start(self) -> FaultyUpstream:
        """Serve on a free port of 127.0.0.1 until `stop()`."""
        self._thread = threading.Thread(target=self._run, name="faulty-upstream", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the faulty upstream did not start")
        return self

    def __enter__(self) -> FaultyUpstream:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop serving and join the thread."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def wait_for_disconnects(self, count: int, timeout: float = 5.0) -> bool:
        """Whether `count` client disconnects were seen within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.disconnects >= count:
                return True
            time.sleep(0.02)
        return self.disconnects >= count

    # The server's thread

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._server = loop.run_until_complete(
                asyncio.start_server(self._accept, "127.0.0.1", 0)
            )
            self.port = self._server.sockets[0].getsockname()[1]
            self._ready.set()
            loop.run_forever()
        finally:
            loop.run_until_complete(self._shutdown())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            received = await _read_request(reader)
            if received is None:
                return
            mode = self.script.popleft() if self.script else received.mode
            received.mode = mode
            self.requests.append(received)
            await self._answer(mode, received, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _answer(
        self,
        mode: str,
        received: Received,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        name, _, arg = mode.partition("-")
        wants_stream = bool(received.body.get("stream"))
        if received.path.endswith("/models") and name in ("ok", "slow", "drip"):
            await _send_json(writer, 200, {"object": "list", "data": [{"id": "faulty-model"}]})
            return
        if name == "slow":
            await asyncio.sleep(float(arg))
            name = "ok"
        if name == "hang":
            # Silent for `arg` seconds, noticing a client that hangs up meanwhile.
            try:
                await asyncio.wait_for(reader.read(1), float(arg))
            except TimeoutError:
                name = "ok"
            else:
                self.disconnects += 1
                return
        if name == "reset":
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return
        if name in ("500", "503", "400"):
            await _send_json(writer, int(name), _error(f"the upstream failed with {name}"))
            return
        if mode == "echo-prompt":
            messages = received.body.get("messages") or [{}]
            quoted = str(messages[-1].get("content", ""))
            await _send_json(writer, 400, _error(f"cannot complete the prompt {quoted!r}"))
            return
        if name == "echo":
            # A careless upstream that repeats the credentials it was sent.
            auth = received.headers.get("authorization", "")
            await _send_json(writer, 401, _error(f"invalid credentials: {auth}"))
            return
        if name == "429date":
            far = {"Retry-After": "Fri, 01 Jan 2100 00:00:00 GMT"}
            await _send_json(writer, 429, _error("rate limited"), headers=far)
            return
        if name == "longline":
            await self._long_line(int(arg), reader, writer, wants_stream)
            return
        if name == "429":
            await _send_json(
                writer, 429, _error("rate limited"), headers={"Retry-After": arg or "1"}
            )
            return
        if name == "reasoning" and "max_tokens" in received.body:
            message = (
                "Unsupported parameter: 'max_tokens' is not supported with this model. "
                "Use 'max_completion_tokens' instead."
            )
            await _send_json(writer, 400, _error(message))
            return
        if name == "reasoning" and "temperature" in received.body:
            message = "Unsupported value: 'temperature' does not support 0 with this model."
            await _send_json(writer, 400, _error(message))
            return
        if name == "no" and "stream_options" in received.body:
            await _send_json(writer, 400, _error("unknown field: stream_options"))
            return
        if name == "malformed":
            if wants_stream:
                await _send_events(writer, ["{not json"])
            else:
                await _send_raw(writer, 200, b'{"choices": [{"message": ', "application/json")
            return
        if name == "call":
            await self._call(received, writer, wants_stream)
            return
        if not wants_stream:
            await _send_json(writer, 200, _completion(received))
            return
        if name == "midway":
            await _start_stream(writer)
            for word in REPLY.split(" ")[:2]:
                await _write_chunk(writer, _event(_delta(word + " ")))
            return  # the connection closes without the terminating chunk
        if name == "error":
            await _start_stream(writer)
            await _write_chunk(writer, _event(_delta("Hello")))
            await _write_chunk(writer, _event(_error("the model crashed")))
            await _write_chunk(writer, _event("[DONE]"))
            await _write_chunk(writer, b"")
            return
        delay = float(arg) if name == "drip" else 0.0
        await self._stream_reply(received, reader, writer, delay)

    async def _call(
        self, received: Received, writer: asyncio.StreamWriter, wants_stream: bool
    ) -> None:
        tools = received.body.get("tools") or [{"function": {"name": "missing"}}]
        name = tools[0]["function"]["name"]
        if not wants_stream:
            answer = _completion(received)
            function = {"name": name, "arguments": CALL_ARGUMENTS}
            call = {"id": "call_up", "type": "function", "function": function}
            answer["choices"][0]["message"] = {"role": "assistant", "content": None}
            answer["choices"][0]["message"]["tool_calls"] = [call]
            answer["choices"][0]["finish_reason"] = "tool_calls"
            await _send_json(writer, 200, answer)
            return
        await _start_stream(writer)
        half = len(CALL_ARGUMENTS) // 2
        pieces = [
            {"index": 0, "id": "call_up", "type": "function", "function": {"name": name}},
            {"index": 0, "function": {"arguments": CALL_ARGUMENTS[:half]}},
            {"index": 0, "function": {"arguments": CALL_ARGUMENTS[half:]}},
        ]
        for piece in pieces:
            delta = _delta("")
            delta["choices"][0]["delta"] = {"tool_calls": [piece]}
            await _write_chunk(writer, _event(delta))
        final = _delta("")
        final["choices"][0]["delta"] = {}
        final["choices"][0]["finish_reason"] = "tool_calls"
        await _write_chunk(writer, _event(final))
        await _write_chunk(writer, _event("[DONE]"))
        await _write_chunk(writer, b"")

    async def _long_line(
        self,
        size: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        wants_stream: bool,
    ) -> None:
        if wants_stream:
            await _start_stream(writer)
            head = b"data: "
        else:
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            )
            head = b'{"choices": [{"message": {"content": "'
        try:
            await _write_chunk(writer, head)
            block = 1 << 16
            for start in range(0, size, block):
                await _write_chunk(writer, b"x" * min(block, size - start))
            # Neither a line end nor the end of the answer: wait for the client to hang up.
            if not await asyncio.wait_for(reader.read(1), 30):
                self.disconnects += 1
        except ConnectionError:
            self.disconnects += 1
        except TimeoutError:
            pass

    async def _stream_reply(
        self,
        received: Received,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        delay: float,
    ) -> None:
        await _start_stream(writer)
        gone = asyncio.ensure_future(reader.read(1))  # completes when the client hangs up
        try:
            words = REPLY.split(" ")
            for index, word in enumerate(words):
                if delay:
                    await asyncio.wait({gone}, timeout=delay)
                if gone.done():
                    self.disconnects += 1
                    return
                await _write_chunk(writer, _event(_delta(word if index == 0 else " " + word)))
            final = _delta("")
            final["choices"][0]["finish_reason"] = "stop"
            await _write_chunk(writer, _event(final))
            if (received.body.get("stream_options") or {}).get("include_usage"):
                await _write_chunk(
                    writer,
                    _event({"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 5}}),
                )
            await _write_chunk(writer, _event("[DONE]"))
            await _write_chunk(writer, b"")
        except ConnectionError:
            self.disconnects += 1
        finally:
            gone.cancel()


async def _read_request(reader: asyncio.StreamReader) -> Received | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, target, _version = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            key, value = line.split(":", 1)
            headers[key.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    raw = await reader.readexactly(length) if length else b""
    body = json.loads(raw) if raw else {}
    parts = target.split("?")[0].strip("/").split("/")
    return Received(method, target, parts[0] if parts else "", headers, body)


def _error(message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "server_error", "code": None}}


def _completion(received: Received) -> dict[str, Any]:
    return {
        "id": "chatcmpl-faulty",
        "object": "chat.completion",
        "model": received.body.get("model", "faulty-model"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": REPLY},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16},
    }


def _delta(text: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-faulty",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
    }


def _event(data: dict[str, Any] | str) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data)
    return f"data: {text}\n\n".encode()


async def _send_raw(
    writer: asyncio.StreamWriter,
    status: int,
    body: bytes,
    content_type: str,
    headers: dict[str, str] | None = None,
) -> None:
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    writer.write(
        f"HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n{extra}\r\n".encode()
        + body
    )
    await writer.drain()


async def _send_json(
    writer: asyncio.StreamWriter,
    status: int,
    data: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> None:
    await _send_raw(writer, status, json.dumps(data).encode(), "application/json", headers)


async def _start_stream(writer: asyncio.StreamWriter) -> None:
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    await writer.drain()


async def _write_chunk(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
    await writer.drain()


async def _send_events(writer: asyncio.StreamWriter, events: list[str]) -> None:
    await _start_stream(writer)
    for data in events:
        await _write_chunk(writer, _event(data))
    await _write_chunk(writer, b"")
