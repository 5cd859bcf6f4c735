"""Graceful restarts: uvicorn's server, stopping the way an orchestrator expects.

On SIGTERM (or SIGINT) the server stops accepting connections and lets the requests in flight
finish for up to `GPTACTIONS_SHUTDOWN_GRACE` seconds. Then the app's `Runtime.stopping` is set:
each request still running is cancelled, stores its partial reply as `cancelled`, and tells its
client the server is restarting (a 503, or a last `error` event on an open stream). A second
signal skips what is left of the grace, but the partial replies are still stored. The process
then exits 0, where uvicorn would re-raise the signal and die by it. A worker's supervisor dying
only ever starts the grace (`stop_signals`): it may be signalled more than once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import threading
import time
from collections.abc import Generator
from types import FrameType
from typing import Any

import uvicorn

log = logging.getLogger(__name__)

# Seconds the requests ended at the end of the grace have to store their partial replies.
RECORD_TIMEOUT = 10.0
# Seconds the app's own shutdown (closing the model and the database) may take.
CLOSE_TIMEOUT = 15.0
_HANDLED = (signal.SIGINT, signal.SIGTERM)


def _stopping_event(app: Any) -> asyncio.Event | None:
    """The app's `Runtime.stopping`, found under the middleware uvicorn wraps it in."""
    for _ in range(16):
        runtime = getattr(getattr(app, "state", None), "runtime", None)
        if runtime is not None:
            stopping = getattr(runtime, "stopping", None)
            return stopping if isinstance(stopping, asyncio.Event) else None
        app = getattr(app, "app", None)
        if app is None:
            break
    return None


class GracefulServer(uvicorn.Server):
    """uvicorn's server with a bounded grace that ends, rather than drops, what is running."""

    def __init__(
        self, config: uvicorn.Config, *, grace: float, stop_signals: tuple[signal.Signals, ...] = ()
    ) -> None:
        super().__init__(config)
        self.grace = grace
        self.stop_signals = stop_signals
        """Signals that start the grace and never end it, however often they come."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        """Handle SIGINT and SIGTERM while serving; unlike uvicorn, do not re-raise them after."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, self.handle_exit) for sig in _HANDLED}
        original |= {sig: signal.signal(sig, self.handle_stop) for sig in self.stop_signals}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """The first signal starts the grace; any second one ends it."""
        if self.should_exit:
            if not self.force_exit:
                log.warning("second signal: ending the requests in flight now")
            self.force_exit = True
        else:
            log.info("stopping: %g s for the requests in flight to finish", self.grace)
            self.should_exit = True

    def handle_stop(self, sig: int, frame: FrameType | None) -> None:
        """One of `stop_signals`: starts the grace if nothing has yet, and never ends it."""
        if not self.should_exit:
            self.handle_exit(sig, frame)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Stop accepting, wait out the grace, end what still runs, then close the app."""
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()  # idle ones close; busy ones close after their answer
        deadline = time.monotonic() + self.grace
        # Wake up often enough to notice a second signal (`force_exit`).
        while self.server_state.tasks and not self.force_exit and time.monotonic() < deadline:
            await asyncio.wait(set(self.server_state.tasks), timeout=0.1)
        running = set(self.server_state.tasks)
        if running:
            log.warning("ending %d request(s) still running: restarting", len(running))
            stopping = _stopping_event(self.config.loaded_app)
            if stopping is not None:
                # The app cancels its requests, which store their partial replies (shielded)
                # and answer; a native cancel now could cut a reply's storing short.
                stopping.set()
                _, running = await asyncio.wait(running, timeout=RECORD_TIMEOUT)
            for task in running:
                task.cancel(msg="the server is stopping")
            _, left = await asyncio.wait(running, timeout=RECORD_TIMEOUT) if running else ((), ())
            if left:
                log.error("%d request(s) did not end in %g s", len(left), RECORD_TIMEOUT)
        for connection in list(self.server_state.connections):
            connection.shutdown()
        try:
            await asyncio.wait_for(self.lifespan.shutdown(), timeout=CLOSE_TIMEOUT)
        except TimeoutError:
            log.error("the app did not close in %g s", CLOSE_TIMEOUT)
