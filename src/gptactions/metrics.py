"""Prometheus metrics: what the server counts, the middleware that times requests, the text page.

Each app has its own registry, so apps built side by side (tests) never share counters. Under
several workers (`gptactions serve --workers N`) `serve` points `PROMETHEUS_MULTIPROC_DIR` at a
directory of the server's own before any worker starts; each worker then writes its values there
and `GET /metrics`, whichever worker answers it, adds up every worker's.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    multiprocess,
)
from prometheus_client.exposition import choose_encoder
from starlette.routing import BaseRoute, Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from gptactions.llm.base import Backend, BackendError
    from gptactions.services.interactions import NewInteraction

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# No `*_created` series: in the text format each counter and histogram had a gauge of its
# start time beside it, doubling the series a scrape stores, for a time no panel plots.
disable_created_metrics()  # type: ignore[no-untyped-call]

# Requests take from a millisecond (status, logs) to minutes (a long reply on a CPU).
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
FIRST_TOKEN_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


def multiprocess_dir() -> Path | None:
    """The directory the workers share their values in, when serving with several workers."""
    value = os.environ.get(MULTIPROC_ENV)
    return Path(value) if value else None


@contextmanager
def shared_between_workers(workers: int) -> Iterator[Path | None]:
    """While serving: the directory where the server's workers share their values.

    With `PROMETHEUS_MULTIPROC_DIR` set (one worker or several), a directory of this server's own
    inside it (`own_directory`), so that servers given the same directory never add up, nor
    delete, each other's values; without it, under several workers, a temporary directory. The
    variable names that directory meanwhile: the workers read it when they start.
    """
    given = multiprocess_dir()
    if given is None and workers <= 1:
        yield None
        return
    directory = (
        own_directory(given)
        if given is not None
        else tempfile.TemporaryDirectory(prefix="gptactions-metrics-")
    )
    with directory as created:
        os.environ[MULTIPROC_ENV] = str(created)
        try:
            yield Path(created)
        finally:
            if given is None:
                del os.environ[MULTIPROC_ENV]
            else:
                os.environ[MULTIPROC_ENV] = str(given)


OWNER_LOCK = "server.lock"
"""The file in a server's own directory that it holds locked while it runs."""


@contextmanager
def own_directory(shared: Path) -> Iterator[Path]:
    """A new directory under `shared` for this server's values (`<host>-<pid>-<random>`), held
    by a lock on a file inside it while the server runs and removed when it stops.

    First the directories of servers that are gone are removed: those whose lock nobody holds
    (a server killed before it could remove its own). A lock, not a process id: ids are reused,
    and servers in containers sharing a volume may have the same one.
    """
    shared.mkdir(parents=True, exist_ok=True)
    remove_abandoned(shared)
    # Made under a hidden name, which `remove_abandoned` skips, until its lock is held.
    starting = Path(tempfile.mkdtemp(prefix=f".{socket.gethostname()}-{os.getpid()}-", dir=shared))
    lock = os.open(starting / OWNER_LOCK, os.O_CREAT | os.O_RDWR, 0o600)
    own = starting
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
        except OSError as error:  # a file system without locks: no server removes this one
            log.warning("cannot lock %s (%s): if this server is killed, remove it", starting, error)
        named = shared / starting.name.removeprefix(".")
        starting.rename(named)
        own = named
        yield own
    finally:
        shutil.rmtree(own, ignore_errors=True)
        os.close(lock)


def remove_abandoned(shared: Path) -> None:
    """Remove the directories under `shared` of servers no longer running: their lock is free."""
    for directory in shared.iterdir():
        if directory.name.startswith(".") or not directory.is_dir():
            continue
        try:
            lock = os.open(directory / OWNER_LOCK, os.O_RDWR)
        except OSError:  # not a server's directory, or removed meanwhile
            continue
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # its server runs
            os.close(lock)
            continue
        try:
            log.info("removing the metrics of a server no longer running: %s", directory)
            shutil.rmtree(directory, ignore_errors=True)
        finally:
            os.close(lock)


def error_kind(error: type[BackendError]) -> str:
    """A backend failure's `kind` label: its class's name in snake case (`backend_timeout`)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", error.__name__).lower()


class Metrics:
    """The server's metrics, in a registry of their own."""

    def __init__(self) -> None:
        self.in_flight = 0
        """HTTP requests this process is serving now (`RequestMetrics` counts them)."""
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.http_requests = Counter(
            "gptactions_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=r,
        )
        self.http_duration = Histogram(
            "gptactions_http_request_duration_seconds",
            "Time to answer an HTTP request (to the end of its body), by method, route template "
            "and status.",
            ["method", "route", "status"],
            buckets=REQUEST_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "gptactions_tokens",
            "Tokens the models read (input) and wrote (output), by backend.",
            ["backend", "direction"],
            registry=r,
        )
        self.interactions = Counter(
            "gptactions_interactions",
            "Interactions recorded in the log, by kind and status.",
            ["kind", "status"],
            registry=r,
        )
        self.first_token = Histogram(
            "gptactions_time_to_first_token_seconds",
            "Time from a generation's start to its first piece of text, by backend.",
            ["backend"],
            buckets=FIRST_TOKEN_BUCKETS,
            registry=r,
        )
        self.backend_errors = Counter(
            "gptactions_backend_errors",
            "Generations that failed, by backend and kind of error.",
            ["backend", "kind"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "gptactions_model_queue_depth",
            "Generations waiting for the model, by backend.",
            ["backend"],
            multiprocess_mode="livesum",
            registry=r,
        )
        self.sequences_in_use = Gauge(
            "gptactions_model_sequences_in_use",
            "Generations the model is running now, by backend.",
            ["backend"],
            multiprocess_mode="livesum",
            registry=r,
        )
        self.commit_duration = Histogram(
            "gptactions_db_commit_duration_seconds",
            "Time to commit a database transaction.",
            buckets=COMMIT_BUCKETS,
            registry=r,
        )
        self.rate_limited = Counter(
            "gptactions_rate_limit_rejections",
            "Requests refused with 429 because the key's rate limit was reached.",
            registry=r,
        )
        self.unauthenticated_rejections = Counter(
            "gptactions_unauthenticated_rejections",
            "Requests to /api/v1/gpt, /v1 and /mcp refused without a valid key or token (not in "
            "the log), by status.",
            ["status"],
            registry=r,
        )
        # Bounded: methods, route templates and statuses are (see `route_template`).
        self._request_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered request (a method outside HTTP's own as `OTHER`: anyone can send
        PROPFIND or M-SEARCH, and each would be new series of every route and status)."""
        if method not in HTTP_METHODS:
            method = OTHER_METHOD
        key = (method, route, status)
        children = self._request_children.get(key)
        if children is None:
            # `labels()` checks its values and takes a lock each time: once per combination.
            labels = (method, route, str(status))
            children = self.http_requests.labels(*labels), self.http_duration.labels(*labels)
            self._request_children[key] = children
        requests, duration = children
        requests.inc()
        duration.observe(seconds)

    def interaction_recorded(self, new: NewInteraction) -> None:
        """Count a committed interaction and the tokens it used."""
        self.interactions.labels(str(new.kind), str(new.status)).inc()
        backend = new.backend or "none"
        if new.usage.prompt_tokens:
            self.tokens.labels(backend, "input").inc(new.usage.prompt_tokens)
        if new.usage.completion_tokens:
            self.tokens.labels(backend, "output").inc(new.usage.completion_tokens)

    def serving(self) -> int:
        """How many HTTP requests this process is serving now."""
        return self.in_flight

    def commit_took(self, seconds: float) -> None:
        """Time one database commit."""
        self.commit_duration.observe(seconds)

    def first_chunk(self, backend: str, seconds: float) -> None:
        """Time a stream's first piece of text."""
        self.first_token.labels(backend).observe(seconds)

    def failed(self, backend: str, error: BackendError) -> None:
        """Count a backend's failure by its kind: its class (`backend_timeout`, ...)."""
        self.backend_errors.labels(backend, error_kind(type(error))).inc()

    def known_backends(self, names: Iterable[str]) -> None:
        """Show each backend's failure counters at 0 from the start, by every kind: a series
        that appears only at the first failure has no past for `rate()` or a panel to show."""
        from gptactions.llm.base import BackendError, PromptTooLong

        kinds: list[type[BackendError]] = [BackendError]
        for kind in kinds:
            kinds.extend(kind.__subclasses__())
        for name in names:
            for kind in kinds:
                if not issubclass(kind, PromptTooLong):  # the request's fault, never counted
                    self.backend_errors.labels(name, error_kind(kind))

    async def settled(self, backend: Backend) -> None:
        """After a generation: the embedded model's queue and sequences, as they are now."""
        await self.refresh_load([backend])

    async def refresh_load(self, backends: Iterable[Backend]) -> None:
        """Read the load of the embedded models (upstreams report none, and are not probed)."""
        for backend in backends:
            if backend.kind != "local":
                continue
            try:
                state = await backend.state()
            except Exception:  # a scrape never fails over one backend's state
                log.debug("no state from backend %r", backend.name, exc_info=True)
                continue
            queue = getattr(state, "queue_depth", None)
            in_use = getattr(state, "sequences_in_use", None)
            if queue is not None:
                self.queue_depth.labels(backend.name).set(queue)
            if in_use is not None:
                self.sequences_in_use.labels(backend.name).set(in_use)

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The page and its content type, in the format the scraper's `Accept` asks for
        (OpenMetrics, or Prometheus' text format, the default): this process's values, or every
        worker's under multiprocess mode."""
        encode, content_type = choose_encoder(accept or "")
        if multiprocess_dir() is None:
            return encode(self.registry), content_type
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return encode(registry), content_type

    @staticmethod
    def worker_stopped(pid: int | None = None) -> None:
        """Drop a worker's live gauges from the shared values when it stops: this process's,
        or (the supervisor, for a worker that died) process `pid`'s."""
        if multiprocess_dir() is not None:
            multiprocess.mark_process_dead(pid or os.getpid())  # type: ignore[no-untyped-call]


UNMATCHED = "unmatched"
"""The route label of requests no route matched, so unknown paths cannot grow the label set."""
HTTP_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)
"""The methods counted by name (RFC 9110's, and PATCH); any other is counted as `OTHER_METHOD`."""
OTHER_METHOD = "OTHER"

CLIENT_CLOSED_REQUEST = 499
"""The status counted for a request whose client left before it was answered (nginx's)."""


def route_template(scope: Scope, routed: Scope, routes: Iterable[BaseRoute]) -> str:
    """The template of the route that took the request: `/api/v1/gpt/respond`, `/console/{path}`.

    `routed` is the scope after the app ran (the router notes its route there); `scope` is the
    request's own, which is matched again when no route was noted: a middleware answered before
    any routing (a 415, say) or handed the router a copy, or the route does not take the method
    (a 405). A path a trailing slash away from a route's is that route's (it is redirected there,
    `api.methods.slash_twin`); only a path no route knows is `unmatched`.
    """
    route = routed.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    if isinstance(template, str):
        return template
    path: str = scope["path"]
    twin = path[:-1] if path.endswith("/") else path + "/"
    for candidate_path in (path, twin) if path != "/" else (path,):
        template = _matching_template(routes, {**scope, "path": candidate_path})
        if template is not None:
            return template
    return UNMATCHED


def _matching_template(routes: Iterable[BaseRoute], scope: Scope) -> str | None:
    """The template of the route the router would pick for `scope`: the first that takes its
    path and method, else the first that takes its path (which answers the 405)."""
    partial: str | None = None
    for candidate in routes:
        match, _ = candidate.matches(scope)
        if match is Match.NONE:
            continue
        template = _template_of(candidate, scope)
        if match is Match.FULL and template is not None:
            return template
        partial = partial or template
    return partial


def _template_of(candidate: BaseRoute, scope: Scope) -> str | None:
    """`candidate`'s template; for a router included in the app (FastAPI), its matching route's."""
    included = getattr(candidate, "original_router", None)
    if included is not None:
        return _matching_template(included.routes, scope)
    if isinstance(candidate, Mount):
        return f"{candidate.path}/{{path}}"
    template = getattr(candidate, "path_format", None) or getattr(candidate, "path", None)
    return template if isinstance(template, str) else None


class RequestMetrics:
    """Counts and times every HTTP request: a pure ASGI middleware, cheap on the hot path."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics, routes: Iterable[BaseRoute]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status: int | None = None
        request_scope = dict(scope)  # the router adds to `scope`; matching needs it as it came
        self.metrics.in_flight += 1

        async def counting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        failed = True
        try:
            await self.app(scope, receive, counting_send)
            failed = False
        finally:
            self.metrics.in_flight -= 1
            if status is None:
                # Unanswered: the app failed (500), or it returned because its client had left
                # (499, "client closed request", as nginx logs it).
                status = 500 if failed else CLIENT_CLOSED_REQUEST
            self.metrics.observe_request(
                scope["method"],
                route_template(request_scope, scope, self.routes),
                status,
                time.perf_counter() - started,
            )
