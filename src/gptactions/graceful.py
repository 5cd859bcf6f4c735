"""Graceful restarts: uvicorn's server, stopping the way an orchestrator expects.

On SIGTERM (or SIGINT, or SIGHUP) the server answers with `Connection: close` from then on,
accepts the connections the kernel already holds for it and stops accepting, and for up to
`GPTACTIONS_SHUTDOWN_GRACE` seconds lets the requests in flight finish and its clients close
their idle keep-alive connections (or these time out). Then the app's `Runtime.stopping` is set:
each request still running is cancelled, stores its partial reply as `cancelled`, and tells its
client the server is restarting (a 503, or a last `error` event on an open stream). A second
SIGTERM or SIGINT skips what is left of the grace, but the partial replies are still stored. The
process then exits 0, where uvicorn would re-raise the signal and die by it.

SIGHUP (a terminal closed; systemd's `SendSIGHUP=yes`) only ever starts the grace, unless the
process was started ignoring it (`nohup`), which it then keeps doing. So do a worker's
`stop_signals`: systemd's SIGTERM and the one its supervisor forwards both reach a worker, as does
the signal of a supervisor that died, maybe more than once; only SIGINT, which the supervisor
sends on a second signal of its own, ends a worker's grace (`gptactions.workers`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Generator
from types import FrameType
from typing import TYPE_CHECKING, Any

import uvicorn

from gptactions.serving import APP, STARTUP_FAILURE, drain, serving_on, uvicorn_options

if TYPE_CHECKING:
    from gptactions.config import Settings

log = logging.getLogger(__name__)

# Seconds the requests ended at the end of the grace have to store their partial replies.
RECORD_TIMEOUT = 10.0
# Seconds the app's own shutdown (closing the model and the database) may take.
CLOSE_TIMEOUT = 15.0
_HANDLED = (signal.SIGINT, signal.SIGTERM)
# Passes of the event loop, as the stop begins, to accept the connections the kernel holds and
# read their requests: a connection accepted, then its request read, each a pass later on asyncio.
_TAKE_IN_PASSES = 4


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
        self,
        config: uvicorn.Config,
        *,
        grace: float,
        stop_signals: tuple[signal.Signals, ...] = (),
        on_started: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(config)
        self.grace = grace
        self.stop_signals = stop_signals
        """Signals that start the grace and never end it, however often they come."""
        self.on_started = on_started
        """Called once the server listens, its app started (a worker tells its supervisor)."""

    def signal_handlers(self) -> dict[signal.Signals, Callable[[int, FrameType | None], None]]:
        """What each signal does while serving: starts the grace, and maybe ends it."""
        handlers: dict[signal.Signals, Callable[[int, FrameType | None], None]]
        handlers = {sig: self.handle_exit for sig in _HANDLED}
        if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:  # not under `nohup`
            handlers[signal.SIGHUP] = self.handle_stop
        return handlers | {sig: self.handle_stop for sig in self.stop_signals}

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        """Handle the signals while serving; unlike uvicorn, do not re-raise them after."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {
            sig: signal.signal(sig, handler) for sig, handler in self.signal_handlers().items()
        }
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
            drain(self.server_state)

    def handle_stop(self, sig: int, frame: FrameType | None) -> None:
        """One of `stop_signals`: starts the grace if nothing has yet, and never ends it."""
        if not self.should_exit:
            self.handle_exit(sig, frame)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's start-up; then, if it started and is not stopping already, `on_started`.

        The one server of its process (not given `sockets`) then says it serves: it listens.
        A worker says nothing of its own; its supervisor says it once every worker listens.
        """
        await super().startup(sockets)
        if not self.started or self.should_exit:
            return
        if sockets is None and self.servers and self.servers[0].sockets:
            port = self.servers[0].sockets[0].getsockname()[1]  # the one bound, for a port 0
            log.info("%s", serving_on(self.config.host, port))
        if self.on_started is not None:
            self.on_started()

    def _log_started_message(self, listeners: Any) -> None:
        """Not uvicorn's "Uvicorn running on", logged before `started`: `startup` says it."""

    async def _take_in(self) -> None:
        """A few passes of the loop, which accepts what the kernel queued and reads it."""
        for _ in range(_TAKE_IN_PASSES):
            await asyncio.sleep(0)

    def _stop_listening(self, sockets: list[socket.socket] | None) -> list[socket.socket]:
        """Stop listening; returns the connections the kernel had queued meanwhile, accepted.

        A loaded loop's pass may run for milliseconds after it last accepted: a connection
        completed into the queue then would be reset with the listening socket. So each
        listening socket is kept open (a duplicate) while the servers close, emptied by hand,
        and closed at once: between its last empty `accept` and its close, no other code runs.
        """
        held: list[socket.socket] = []
        for server in self.servers:
            for listener in server.sockets or ():
                with contextlib.suppress(OSError):
                    held.append(socket.socket(fileno=os.dup(listener.fileno())))
            server.close()
        for sock in sockets or []:
            sock.close()
        accepted: list[socket.socket] = []
        for listener in held:
            with listener:
                listener.setblocking(False)
                while True:
                    try:
                        connection, _ = listener.accept()
                    except OSError:  # BlockingIOError: the queue is empty
                        break
                    connection.setblocking(False)
                    accepted.append(connection)
        return accepted

    async def _serve_taken(self, connection: socket.socket) -> None:
        """Serve a connection `_stop_listening` took in, as the servers would have."""
        loop = asyncio.get_running_loop()
        with contextlib.suppress(OSError):  # its client left already (or its TLS failed)
            await loop.connect_accepted_socket(self._new_protocol, connection, ssl=self.config.ssl)

    def _new_protocol(self) -> asyncio.Protocol:
        """The protocol of a connection taken in by `_stop_listening`, as uvicorn makes one."""
        protocol: asyncio.Protocol = self.config.http_protocol_class(  # type: ignore[call-arg]
            config=self.config, server_state=self.server_state, app_state=self.lifespan.state
        )
        return protocol

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Stop accepting, wait out the grace, end what still runs, then close the app."""
        # Accept first the connections the kernel already holds for us: a listening socket
        # closed with connections in its queue resets them, and nginx, which may have sent a
        # request on one, answers a POST there 502 (it never retries one it sent). A pass of
        # the loop accepts, the next reads (on plain asyncio, a pass later each).
        await self._take_in()
        taken = [self._serve_taken(c) for c in self._stop_listening(sockets)]
        if taken:
            await asyncio.wait(map(asyncio.ensure_future, taken), timeout=self.grace)
        # Unlike uvicorn, leave the idle keep-alive connections open: closed now, one may be
        # carrying a request its client just sent (nginx: a 502 again). They close as they
        # would anyway, by their client (nginx's keepalive_timeout is below ours) or by their
        # keep-alive timeout; a request on one meanwhile is answered with `Connection: close`
        # (`serving.drain`), as is every answer from now on.
        deadline = time.monotonic() + self.grace
        state = self.server_state
        # Wake up often enough to notice a second signal (`force_exit`).
        while (state.tasks or state.connections) and not self.force_exit:
            if time.monotonic() >= deadline:
                break
            if state.tasks:
                await asyncio.wait(set(state.tasks), timeout=0.1)
            else:
                await asyncio.sleep(0.1)
        # The grace is over: no request may start any more (idle connections close; busy ones
        # close after their answer), and those running end now.
        for connection in list(state.connections):
            connection.shutdown()
        running = set(state.tasks)
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


def serve_one(
    settings: Settings,
    sockets: list[socket.socket] | None = None,
    *,
    stop_signals: tuple[signal.Signals, ...] = (),
    on_started: Callable[[], None] | None = None,
    worker: bool = False,
) -> None:
    """One server process, stopping gracefully; exits 3 when the app fails to start.

    `stop_signals` only ever start the grace, where a second SIGTERM or SIGINT ends it;
    `on_started` is called once the server listens. A `worker` of several names itself in each
    line it logs.
    """
    import uvicorn

    config = uvicorn.Config(APP, **uvicorn_options(settings, worker=worker))
    server = GracefulServer(
        config, grace=settings.shutdown_grace, stop_signals=stop_signals, on_started=on_started
    )
    server.run(sockets)
    if not server.started:
        raise SystemExit(STARTUP_FAILURE)
