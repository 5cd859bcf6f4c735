"""Several worker processes on one port, each accepting on a listening socket of its own.

uvicorn's supervisor hands one listening socket to all its workers, and whichever wakes first
accepts: keep-alive connections split unevenly (24 of 32 on one worker was seen), and the worker
with few of them idled while the other was saturated. Here each worker binds the port itself with
`SO_REUSEPORT`, and the kernel spreads new connections over the workers' sockets by a hash of
each client's address and port. Each worker is a `GracefulServer`: SIGTERM drains every worker
the way it drains one, where uvicorn's workers cancel what runs after their grace. A worker
listens only once its app has started, so a starting (or restarting) worker is given no
connections it would keep waiting.

The supervisor forwards SIGTERM and SIGINT to the workers (a second signal ends their grace, as
it does for one process), replaces a worker that dies, and stops with exit status 3 when a worker
fails to start (the app, or the port: it would fail the same way again). The workers are in a
process group of their own, so a terminal's Ctrl+C reaches them once, through the supervisor;
each also stops gracefully if the supervisor dies (`SUPERVISOR_DIED`).
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
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from types import FrameType

from gptactions import serving
from gptactions.config import Settings
from gptactions.graceful import CLOSE_TIMEOUT, RECORD_TIMEOUT
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


def run(settings: Settings) -> None:
    """Serve the app from the environment's settings: one process, or `settings.workers`.

    Each server process stops gracefully (`gptactions.graceful`). Several workers each listen on
    a socket of their own, under `Supervisor`; where the system cannot share a port that way,
    uvicorn's own supervisor runs them, without the graceful stop.
    """
    if settings.workers <= 1:
        serving.serve_one(settings)
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


def worker_main() -> None:
    """A worker process: its own socket on the port, then one graceful server."""
    os.setpgrp()  # the supervisor forwards the terminal's signals, once
    with contextlib.suppress(OSError, AttributeError):
        # Stop (gracefully) when the supervisor dies, rather than serve on as an orphan. Until
        # the server handles it, the signal's default action ends the worker, serving nothing.
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, SUPERVISOR_DIED)
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:
        raise SystemExit(0)  # the supervisor died before the signal was asked for
    settings = Settings()
    try:
        sock = bound_socket(settings.host, settings.port)
    except OSError as error:
        print(f"worker {os.getpid()}: cannot bind {settings.host}:{settings.port}: {error}")
        raise SystemExit(STARTUP_FAILURE) from None
    try:
        serving.serve_one(settings, [sock], stop_signals=(SUPERVISOR_DIED,))
    finally:
        # Stopped: a late repeat of the signal must not end the process by its default action.
        signal.signal(SUPERVISOR_DIED, signal.SIG_IGN)


class Supervisor:
    """Starts `settings.workers` workers, keeps them running, and stops them on a signal."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._context = multiprocessing.get_context("spawn")
        self._workers: list[BaseProcess] = []
        self._started: list[float] = []
        self._signals = 0

    def run(self) -> int:
        """Serve until a signal (0) or a worker that cannot start (3); the exit status."""
        logging.config.dictConfig(serving.log_config(self.settings.log_level))
        original = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            for _ in range(self.settings.workers):
                self._workers.append(self._start())
                self._started.append(time.monotonic())
            status = self._supervise()
            self._stop()
            return status
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    def _start(self) -> BaseProcess:
        worker = self._context.Process(target=worker_main, name="gptactions-worker")
        worker.start()
        log.info("started worker [%s]", worker.pid)
        return worker

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        self._signals += 1
        for worker in self._workers:
            if worker.pid is not None and worker.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGTERM)

    def _supervise(self) -> int:
        while not self._signals:
            wait([worker.sentinel for worker in self._workers], timeout=0.5)
            for slot, worker in enumerate(self._workers):
                if worker.exitcode is None or self._signals:
                    continue
                if worker.exitcode == STARTUP_FAILURE:
                    log.error("worker [%s] failed to start: stopping", worker.pid)
                    return STARTUP_FAILURE
                log.warning(
                    "worker [%s] died (exit status %s): starting another",
                    worker.pid,
                    worker.exitcode,
                )
                Metrics.worker_stopped(worker.pid)  # its live gauges (queue depth...) are gone
                pause = self._started[slot] + RESTART_PAUSE - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                self._workers[slot] = self._start()
                self._started[slot] = time.monotonic()
        return 0

    def _stop(self) -> None:
        """Every worker stopped: told once more (if no signal did), waited for, killed last."""
        if not self._signals:
            self._on_signal(signal.SIGTERM, None)
        log.info("stopping %d workers", len(self._workers))
        limit = (
            time.monotonic() + self.settings.shutdown_grace + RECORD_TIMEOUT + CLOSE_TIMEOUT + 10
        )
        for worker in self._workers:
            worker.join(max(0.0, limit - time.monotonic()))
            if worker.exitcode is None:
                log.error("worker [%s] did not stop in time: killing it", worker.pid)
                worker.kill()
                worker.join()
