"""Prompt templates of user-defined actions, rendered in worker processes within bounds.

The Jinja2 sandbox keeps a template away from Python's internals, but not from the CPU or the
memory: two nested loops run for hours and `'x' * 10**9` allocates a gigabyte. So templates never
render on the event loop or in the server's process. They render in worker processes, each under
an address-space limit; a render that outlasts the time bound has its process killed and replaced,
and output beyond the size bound is refused. A template thus costs at most a bounded time, memory
and output, whatever its parameters.

This module imports nothing of the server beyond Jinja2, so a worker starts quickly.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

log = logging.getLogger(__name__)

WORKERS = 2
"""Worker processes per server process: a slow template holds up one, not every action."""

_START_TIMEOUT = 60.0
"""Seconds a new worker may take to start (a loaded machine is slow to spawn Python)."""

_MEMORY_HEADROOM = 128 * 1024 * 1024
"""Address space a render may take beyond the worker's own, plus a few times the output bound."""

_FORBIDDEN = {
    nodes.Include: "include",
    nodes.Import: "import",
    nodes.FromImport: "import",
    nodes.Extends: "extends",
}


def template_environment() -> ImmutableSandboxedEnvironment:
    """The Jinja2 environment prompts render in: sandboxed, strict about undefined names, no
    autoescaping (prompts are not HTML), and without the helper globals a prompt has no use for."""
    environment = ImmutableSandboxedEnvironment(
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
    )
    for name in ("lipsum", "cycler", "joiner"):
        environment.globals.pop(name, None)
    return environment


def forbidden_statement(parsed: nodes.Template) -> tuple[str, int] | None:
    """The first include, import or extends of a parsed template, with its line, if any.

    A template is one self-contained string: there is no other template to load, and the
    environment has no loader, so these statements could only fail when the action runs.
    """
    for node in parsed.find_all(tuple(_FORBIDDEN)):
        return _FORBIDDEN[type(node)], node.lineno
    return None


class TemplateLimitExceeded(Exception):
    """A render passed the time, output or memory bound; the message says which."""


class TemplateFailed(Exception):
    """The template raised an error while rendering (an undefined name, a sandbox refusal...)."""


@dataclass(frozen=True)
class RenderLimits:
    """The bounds of one render: seconds, and characters of each rendered template."""

    timeout: float = 2.0
    max_output: int = 100_000


class TemplateRenderer:
    """Renders templates in a small pool of worker processes, started when first needed.

    Each render waits for a worker on a thread of its own pool (so the event loop never blocks,
    and the other threads of the process are not taken), sends the sources and values over a
    pipe, and waits at most `limits.timeout` seconds for the answer.
    """

    def __init__(self, limits: RenderLimits | None = None, *, workers: int = WORKERS) -> None:
        self.limits = limits or RenderLimits()
        self._size = workers
        self._threads: ThreadPoolExecutor | None = None
        self._idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        self._all: set[_Worker] = set()
        self._lock = threading.Lock()
        self._rendering = 0

    @property
    def rendering(self) -> int:
        """How many renders a worker is busy with now."""
        return self._rendering

    async def render(self, sources: Sequence[str], values: Mapping[str, Any]) -> list[str]:
        """Each source rendered with the values; TemplateLimitExceeded or TemplateFailed if not.

        A caller that is cancelled stops waiting at once; its render still ends within the
        time bound, and only then is its worker reused.
        """
        job = (list(sources), dict(values))
        with self._lock:
            if self._threads is None:
                self._threads = ThreadPoolExecutor(
                    self._size, thread_name_prefix="gptactions-templates"
                )
            threads = self._threads
        return await asyncio.get_running_loop().run_in_executor(threads, self._render, job)

    def _render(self, job: tuple[list[str], dict[str, Any]]) -> list[str]:
        worker = self._take()
        kind, payload = "died", "the rendering process ended abruptly"
        with self._lock:
            self._rendering += 1
        try:
            kind, payload = worker.render(job, self.limits.timeout)
        finally:
            with self._lock:
                self._rendering -= 1
            # A process that passed a bound or ran out of memory is not trusted again.
            self._give_back(worker, healthy=kind in ("ok", "error", "output"))
        if kind == "ok":
            rendered: list[str] = payload
            return rendered
        if kind == "error":
            raise TemplateFailed(payload)
        raise TemplateLimitExceeded(payload)

    def _take(self) -> _Worker:
        while True:
            try:
                idle = self._idle.get_nowait()
            except queue.Empty:
                break
            if idle.alive:
                return idle
        worker = _Worker(self.limits.max_output)
        with self._lock:
            self._all.add(worker)
        return worker

    def _give_back(self, worker: _Worker, *, healthy: bool) -> None:
        if healthy and worker.alive:
            self._idle.put(worker)
            return
        worker.kill()
        with self._lock:
            self._all.discard(worker)

    async def close(self) -> None:
        """Stop every worker process; renders still running fail with TemplateLimitExceeded."""
        await asyncio.get_running_loop().run_in_executor(None, self.shutdown)

    def shutdown(self) -> None:
        """`close`, for callers without an event loop. A later render starts new workers."""
        with self._lock:
            workers, self._all = list(self._all), set()
            threads, self._threads = self._threads, None
        for worker in workers:
            worker.kill()
        if threads is not None:
            threads.shutdown(wait=True)


class _Worker:
    """One worker process and the parent's end of its socket.

    The worker is a fresh interpreter (`python -m gptactions.services.templates`), not a
    multiprocessing child: spawning through multiprocessing would import the parent's main
    module again, which not every program that embeds the app can bear.
    """

    def __init__(self, max_output: int) -> None:
        ours, theirs = socket.socketpair()
        package_root = str(Path(__file__).resolve().parents[2])
        path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
        with theirs:
            self._process = subprocess.Popen(  # noqa: S603 - this interpreter, this module
                [sys.executable, "-m", __name__, str(theirs.fileno()), str(max_output)],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                env={**os.environ, "PYTHONPATH": path},
            )
        self._connection = Connection(ours.detach())
        self._lock = threading.Lock()
        self._dead = False
        try:
            ready = self._connection.poll(_START_TIMEOUT) and self._connection.recv() == "ready"
        except (EOFError, OSError):
            ready = False
        if not ready:
            self.kill()
            raise RuntimeError("a template worker process did not start")

    @property
    def alive(self) -> bool:
        """Whether the process is running."""
        with self._lock:
            return not self._dead and self._process.poll() is None

    def render(self, job: tuple[list[str], dict[str, Any]], timeout: float) -> tuple[str, Any]:
        """The worker's answer: (`ok`, texts), (`error`, why), or a bound passed, (kind, why)."""
        try:
            self._connection.send(job)
            if not self._connection.poll(timeout):
                self.kill()
                return "time", f"rendering took longer than {timeout:g}s"
            answer: tuple[str, Any] = self._connection.recv()
        except (EOFError, OSError):
            self.kill()
            return "died", "the rendering process ended abruptly (out of memory?)"
        return answer

    def kill(self) -> None:
        """Stop the process at once and free the socket (any number of times, from any thread)."""
        with self._lock:
            if self._dead:
                return
            self._dead = True
            self._process.kill()
            self._process.wait()
            self._connection.close()


# The worker process


def serve(connection: Connection, max_output: int) -> None:
    """The worker's loop: render each job it receives, until the pipe closes."""
    _limit_memory(max_output)
    environment = template_environment()
    compiled: dict[str, jinja2.Template] = {}
    connection.send("ready")
    while True:
        try:
            sources, values = connection.recv()
        except (EOFError, OSError):
            return
        try:
            answer: tuple[str, Any] = (
                "ok",
                [_render(environment, compiled, source, values, max_output) for source in sources],
            )
        except _TooLong:
            answer = ("output", f"the rendered prompt is longer than {max_output} characters")
        except MemoryError:
            answer = ("memory", "rendering needed more memory than a template may use")
        except RecursionError:
            answer = ("error", "the template recurses too deeply")
        except Exception as exc:
            answer = ("error", str(exc) or type(exc).__name__)
        connection.send(answer)


class _TooLong(Exception):
    pass


def _render(
    environment: ImmutableSandboxedEnvironment,
    compiled: dict[str, jinja2.Template],
    source: str,
    values: dict[str, Any],
    max_output: int,
) -> str:
    template = compiled.get(source)
    if template is None:
        template = compiled[source] = environment.from_string(source)
    parts: list[str] = []
    length = 0
    for part in template.generate(values):
        length += len(part)
        if length > max_output:
            raise _TooLong
        parts.append(part)
    return "".join(parts)


def _limit_memory(max_output: int) -> None:
    """Cap the process's address space a little above what it takes now (Linux only)."""
    try:
        import resource

        with open("/proc/self/statm", encoding="ascii") as statm:
            pages = int(statm.read().split()[0])
    except (ImportError, OSError, ValueError):
        return
    current = pages * os.sysconf("SC_PAGE_SIZE")
    limit = current + _MEMORY_HEADROOM + 16 * max_output
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def main(argv: Sequence[str]) -> None:
    """`python -m gptactions.services.templates FD MAX_OUTPUT`: serve the socket FD."""
    serve(Connection(int(argv[0])), int(argv[1]))


if __name__ == "__main__":
    main(sys.argv[1:])
