"""Several worker processes on one port, each accepting on a listening socket of its own.

uvicorn's supervisor hands one listening socket to all its workers, and whichever wakes first
accepts: keep-alive connections split unevenly (24 of 32 on one worker was seen), and the worker
with few of them idled while the other was saturated. Here each worker binds the port itself with
`SO_REUSEPORT`, and the kernel spreads new connections over the workers' sockets by a hash of
each client's address and port. Each worker is a `GracefulServer`: SIGTERM drains every worker
the way it drains one, where uvicorn's workers cancel what runs after their grace. A worker
listens only once its app has started, so a starting (or restarting) worker is given no
connections it would keep waiting.

On SIGTERM or SIGINT the supervisor sends each worker SIGTERM, which starts its grace; on a second
signal, SIGINT (`HURRY`), which ends it, as a second signal does for one process. A worker's own
SIGTERM only ever starts its grace: systemd's default `KillMode=control-group` sends SIGTERM to
every process of the unit, and a worker given both systemd's and the supervisor's must not take
the second for an operator's hurry. The workers are in a process group of their own, so a
terminal's Ctrl+C reaches them once, through the supervisor; each also stops gracefully if the
supervisor dies (`SUPERVISOR_DIED`).

The supervisor replaces a worker that dies, and stops with exit status 3 when a worker fails to
start (the app, or the port: it would fail the same way again). On SIGHUP it replaces every
worker, one at a time: a new worker starts beside the old one, and once it serves, the old one
stops gracefully; the next starts once it has ended. New workers load the code installed now (an
upgrade without dropping a request); one that fails to start ends the reload, and the workers
running keep serving.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import logging.config
import multiprocessing
import os
import signal
import socket
import time
from dataclasses import dataclass
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event
from types import FrameType

from gptactions import serving
from gptactions.config import Settings
from gptactions.graceful import CLOSE_TIMEOUT, RECORD_TIMEOUT, serve_one
from gptactions.metrics import Metrics
from gptactions.serving import STARTUP_FAILURE

log = logging.getLogger("gptactions.workers")

RESTART_PAUSE = 1.0
"""Seconds between two starts of one worker's slot, so a worker that dies at once is not
restarted in a tight loop."""
_PR_SET_PDEATHSIG = 1
SUPERVISOR_DIED = signal.SIGUSR1
"""The signal a worker gets when its supervisor dies, which only ever starts its grace.

Not SIGTERM: the kernel sends it once per thread of the supervisor that exits while the worker
is its child (the worker is handed to the next live thread, then to init), so a supervisor of
two threads killed with SIGKILL sent two, and the second ended the grace as an operator's would.
"""
HURRY = signal.SIGINT
"""What the supervisor sends its workers on a second signal: end the grace now."""
WORKER_STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, SUPERVISOR_DIED)
"""Signals that only ever start a worker's grace, however many times they come."""


def run(settings: Settings) -> None:
    """Serve the app from the environment's settings: one process, or `settings.workers`.

    Each server process stops gracefully (`gptactions.graceful`). Several workers each listen on
    a socket of their own, under `Supervisor`; where the system cannot share a port that way,
    uvicorn's own supervisor runs them, without the graceful stop.
    """
    if settings.workers <= 1:
        serve_one(settings)
    elif supported():
        raise SystemExit(Supervisor(settings).run())
    else:
        import uvicorn

        options = serving.uvicorn_options(settings)
        uvicorn.run(serving.APP, workers=settings.workers, **options)


def supported() -> bool:
    """Whether this system lets several sockets listen on one port (Linux, the BSDs)."""
    return hasattr(socket, "SO_REUSEPORT")


def bound_socket(host: str, port: int) -> socket.socket:
    """A socket of its own bound to `host:port`, beside the other workers' sockets.

    Not listening yet: uvicorn listens on it once the app has started. Until then the kernel
    gives its share of new connections to the workers that are serving, not to one that would
    keep them waiting through its start-up (or drop them, failing it).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def worker_main(ready: Event | None = None) -> None:
    """A worker process: its own socket on the port, then one graceful server; `ready` is set
    once it serves."""
    os.setpgrp()  # the supervisor forwards the terminal's signals, once
    with contextlib.suppress(OSError, AttributeError):
        # Stop (gracefully) when the supervisor dies, rather than serve on as an orphan. Until
        # the server handles it, the signal's default action ends the worker, serving nothing.
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, SUPERVISOR_DIED)
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:
        raise SystemExit(0)  # the supervisor died before the signal was asked for
    settings = Settings()
    # As the server configures it (again) once it runs: every line names this worker.
    logging.config.dictConfig(serving.log_config(settings.log_level, worker=True))
    try:
        sock = bound_socket(settings.host, settings.port)
    except OSError as error:
        log.error("cannot bind %s:%s: %s", settings.host, settings.port, error)
        raise SystemExit(STARTUP_FAILURE) from None
    try:
        serve_one(
            settings,
            [sock],
            stop_signals=WORKER_STOP_SIGNALS,
            on_started=None if ready is None else ready.set,
            worker=True,
        )
    finally:
        # Stopped: a late repeat of a signal must not end the process by its default action.
        for sig in WORKER_STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)


@dataclass
class _Worker:
    """A worker process, the event it sets once it serves, and when it was started."""

    process: BaseProcess
    ready: Event
    started: float

    @property
    def running(self) -> bool:
        """Whether it has not exited yet."""
        return self.process.exitcode is None


class Supervisor:
    """Starts `settings.workers` workers, keeps them running, replaces them all on SIGHUP, and
    stops them on SIGTERM or SIGINT."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._context = multiprocessing.get_context("spawn")
        self._workers: list[_Worker] = []  # one per slot
        self._retiring: list[_Worker] = []  # replaced by a reload, stopping gracefully
        self._incoming: _Worker | None = None  # a reload's next worker, starting
        self._reloading: list[int] = []  # the slots a reload has still to replace
        self._signals = 0
        self._stopping: list[_Worker] = []  # the workers running when the stop began
        self._serving = False  # every worker has listened once: said, once

    def run(self) -> int:
        """Serve until a signal (0) or a worker that cannot start (3); the exit status."""
        logging.config.dictConfig(serving.log_config(self.settings.log_level))
        handlers = {signal.SIGINT: self._on_signal, signal.SIGTERM: self._on_signal}
        if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:  # not under `nohup`
            handlers[signal.SIGHUP] = self._on_hangup
        original = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
        try:
            for _ in range(self.settings.workers):
                self._workers.append(self._start())
            status = self._supervise()
            self._stop()
            return status
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    def _start(self) -> _Worker:
        ready = self._context.Event()
        process = self._context.Process(target=worker_main, args=(ready,), name="gptactions-worker")
        process.start()
        log.info("started worker [%s]", process.pid)
        return _Worker(process, ready, time.monotonic())

    def _live(self) -> list[_Worker]:
        incoming = [] if self._incoming is None else [self._incoming]
        return [worker for worker in [*self._workers, *self._retiring, *incoming] if worker.running]

    def _tell(self, sig: signal.Signals, workers: list[_Worker]) -> None:
        for worker in workers:
            if worker.process.pid is not None and worker.running:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.process.pid, sig)

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        """The first signal starts every worker's grace; any later one ends it."""
        self._signals += 1
        if self._signals == 1:  # counted now: an idle worker may be gone before `_stop` runs
            self._stopping = self._live()
        self._tell(signal.SIGTERM if self._signals == 1 else HURRY, self._live())

    def _on_hangup(self, sig: int, frame: FrameType | None) -> None:
        """SIGHUP: replace every worker (again, if a reload is under way)."""
        log.info("SIGHUP: replacing the %d workers one at a time", len(self._workers))
        self._reloading = list(range(len(self._workers)))

    def _supervise(self) -> int:
        while not self._signals:
            busy = self._incoming is not None or self._reloading or not self._serving
            wait(
                [worker.process.sentinel for worker in self._live()],
                timeout=0.1 if busy else 0.5,
            )
            if self._signals:
                break
            self._retiring = [worker for worker in self._retiring if worker.running]
            status = self._replace_the_dead()
            if status:
                return status
            self._say_serving()
            self._reload()
        return 0

    def _say_serving(self) -> None:
        """Once every worker listens, say the server serves (a script may wait for the line)."""
        if not self._serving and all(worker.ready.is_set() for worker in self._workers):
            self._serving = True
            host, port = self.settings.host, self.settings.port
            log.info("%s", serving.serving_on(host, port, len(self._workers)))

    def _replace_the_dead(self) -> int:
        """Start a worker in the place of each that died; 3 if one could not start."""
        for slot, worker in enumerate(self._workers):
            if worker.running or self._signals:
                continue
            if worker.process.exitcode == STARTUP_FAILURE:
                log.error("worker [%s] failed to start: stopping", worker.process.pid)
                return STARTUP_FAILURE
            log.warning(
                "worker [%s] died (exit status %s): starting another",
                worker.process.pid,
                worker.process.exitcode,
            )
            Metrics.worker_stopped(worker.process.pid)  # its live gauges (queue depth...) are gone
            pause = worker.started + RESTART_PAUSE - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            self._workers[slot] = self._start()
        return 0

    def _reload(self) -> None:
        """The reload's next step: start a slot's new worker once the previous old one ended;
        once it serves, stop the old one gracefully in its place."""
        incoming = self._incoming
        if incoming is None:
            if self._reloading and not self._retiring:
                self._incoming = self._start()
        elif incoming.ready.is_set():
            slot = self._reloading.pop(0)
            old, self._workers[slot] = self._workers[slot], incoming
            self._incoming = None
            log.info(
                "worker [%s] serves: stopping worker [%s]", incoming.process.pid, old.process.pid
            )
            self._retiring.append(old)
            self._tell(signal.SIGTERM, [old])
        elif not incoming.running:
            log.error(
                "worker [%s] failed to start (exit status %s): the reload stops, the %d running "
                "workers keep serving",
                incoming.process.pid,
                incoming.process.exitcode,
                len(self._workers),
            )
            self._incoming = None
            self._reloading = []

    def _stop(self) -> None:
        """Every worker stopped: told (again: a worker's SIGTERM only ever starts its grace, and
        one may have started after the signal), waited for, killed last."""
        if not self._signals:
            self._signals = 1
            self._stopping = self._live()
        self._tell(signal.SIGTERM, self._live())
        # Those running when the stop began (some may have ended since), and any started since.
        workers = [*self._stopping, *(w for w in self._live() if w not in self._stopping)]
        log.info("stopping %d worker%s", len(workers), "" if len(workers) == 1 else "s")
        limit = (
            time.monotonic() + self.settings.shutdown_grace + RECORD_TIMEOUT + CLOSE_TIMEOUT + 10
        )
        for worker in workers:
            worker.process.join(max(0.0, limit - time.monotonic()))
            if worker.running:
                log.error("worker [%s] did not stop in time: killing it", worker.process.pid)
                worker.process.kill()
                worker.process.join()
