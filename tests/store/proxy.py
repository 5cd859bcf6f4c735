"""A TCP proxy in front of a server, that a test closes (cutting every connection) and reopens,
turns into a black hole that accepts connections and never answers, or hangs: every connection,
open or new, stays up and carries nothing until it resumes (a server stopped with SIGSTOP)."""

from __future__ import annotations

import asyncio
import contextlib
import threading

from tests.serving import free_port


class TcpProxy:
    """Forwards 127.0.0.1:`port` to `target`; `start()` opens it, `stop()` ends it."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.blackhole = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._flowing: asyncio.Event | None = None  # made in the proxy's loop, set unless hung

    def start(self) -> TcpProxy:
        """Run the proxy's thread and open it."""
        self._thread.start()
        self.open()
        return self

    def open(self) -> None:
        """Accept connections again (forwarding them, unless it is a black hole)."""
        self._call(self._open())

    def close(self) -> None:
        """Stop listening and cut every connection, as a database going down does (a hang ends)."""
        self._call(self._close())

    def hang(self) -> None:
        """Forward nothing more, in either direction, and answer no new connection, until
        `resume`; no connection is closed."""
        self._call(self._set_flowing(False))

    def resume(self) -> None:
        """Forward again what waited, and what comes."""
        self._call(self._set_flowing(True))

    def stop(self) -> None:
        """Close, then end the thread."""
        self.close()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def _call(self, work: object) -> None:
        asyncio.run_coroutine_threadsafe(work, self._loop).result(timeout=10)  # type: ignore[arg-type]

    async def _set_flowing(self, flowing: bool) -> None:
        flow = self._flow()
        if flowing:
            flow.set()
        else:
            flow.clear()

    def _flow(self) -> asyncio.Event:
        if self._flowing is None:
            self._flowing = asyncio.Event()
            self._flowing.set()
        return self._flowing

    async def _open(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(
                self._accept, "127.0.0.1", self.port, reuse_address=True
            )

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        self._flow().set()  # what waited in a hang finds its connections cut

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        if self.blackhole:
            return  # held open, never answered, until the proxy closes
        await self._flow().wait()
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.add(up_writer)
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                await self._flow().wait()
                writer.write(data)
                await writer.drain()
        writer.transport.abort()
        self._writers.discard(writer)
