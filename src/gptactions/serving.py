"""Serving over HTTP: uvicorn's httptools protocol with bounded headers, header and keep-alive
timeouts and a connection budget, so no client can stall the server at the HTTP layer; and log
lines that start with an ISO 8601 timestamp, then the level and the logger (uvicorn's as
`uvicorn`), and in a worker of several its pid (the access lines are the app's: `api.access`).

uvicorn's own protocols never time out a request whose headers are incomplete, and httptools
accepts headers of any size (concatenating each chunk into the pending header: quadratic time).
The subclass below counts the bytes of a request's head before handing them to the parser, answers
431 past the limit and 408 past the deadline, closes idle keep-alive connections, and, when the
process holds more connections than its budget, closes the oldest ones that are not running a
request (slowloris connections are all of that kind), so a legitimate request always gets in.

Nor does uvicorn bound the time a request's body takes: a client announcing a body and sending a
byte of it now and then held its connection for ever. A body must all arrive within
`HttpLimits.body_timeout` of the end of its head (GPTACTIONS_REQUEST_DEADLINE), on every route;
past it, unless the app has begun its answer, the request is answered 408 and its connection
closed. And with the budget spent and no idle connection left, the connections still receiving a
body close, the one receiving longest first, before a new one goes unserved.

Once the server drains (`drain`, at the stop signal itself), every response whose head is still
to be sent says `Connection: close`, and its connection closes after it: a client (nginx) learns
from the answer not to send another request on it, instead of sending one onto a connection the
server is closing, which for a POST nginx answers 502 rather than retry.

uvicorn also writes a response's head and its body in two writes. A process killed between them
leaves the client (or nginx, which passes the head on) a `200` whose body never comes. The cycle's
transport here holds a head with a `Content-Length` back until its body is written, so the two
leave in one write: a client gets the whole answer or no answer at all.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import json
import logging
import resource
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httptools
from uvicorn.config import Config
from uvicorn.logging import DefaultFormatter
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from gptactions import __version__
from gptactions.api.access import ACCESS_LOGGER, REQUEST_ID_HEADER, new_request_id
from gptactions.api.errors import error_body
from gptactions.config import Settings

log = logging.getLogger(__name__)

# The most connections one process keeps by default, whatever its file limit: each costs memory.
DEFAULT_CONNECTION_CEILING = 4096
# What `serve` raises the soft limit on open files to, when the hard limit allows.
OPEN_FILES_TARGET = 65536


@dataclass(frozen=True)
class HttpLimits:
    """The bounds every connection is held to."""

    max_header_bytes: int = 64 * 1024
    header_timeout: float = 10.0
    keepalive_timeout: float = 5.0
    max_connections: int = 1024
    # Seconds a request's body has to arrive, from the end of its head: the server's share of
    # GPTACTIONS_REQUEST_DEADLINE, which bounds the whole request (under /api/v1/gpt the app
    # answers the same 408 slightly earlier, `CancelOnDisconnect`; only one answer goes out).
    body_timeout: float = 40.0


class _Rejected(Exception):
    """Raised from a parser callback to stop parsing a request that was already answered."""


class _Room:
    """One server's connections that may be closed to make room: those not running a request,
    then those whose request is still receiving its body."""

    def __init__(self) -> None:
        self.idle: dict[GuardedHttpProtocol, None] = {}  # oldest first
        self.receiving: dict[GuardedHttpProtocol, None] = {}  # the body's start, oldest first
        self.evicted: set[GuardedHttpProtocol] = set()  # closed, connection_lost not yet seen
        self.draining = False  # the server is stopping: no response keeps its connection

    def make_room(self, connections: int, limit: int) -> None:
        """Close the oldest idle connections until at most `limit` remain open; then, if that is
        not enough, those receiving a body, the one receiving longest first."""
        while connections - len(self.evicted) > limit and self.idle:
            victim = next(iter(self.idle))
            del self.idle[victim]
            self.evicted.add(victim)
            log.info("over %d connections: closing the oldest idle one", limit)
            victim.transport.close()
        while connections - len(self.evicted) > limit and self.receiving:
            victim = next(iter(self.receiving))
            del self.receiving[victim]
            self.evicted.add(victim)
            log.info("over %d connections: closing the one receiving a body longest", limit)
            victim.body_cut_short(limit)

    def forget(self, protocol: GuardedHttpProtocol) -> None:
        """The connection is gone."""
        self.idle.pop(protocol, None)
        self.receiving.pop(protocol, None)
        self.evicted.discard(protocol)


class _HeadWithBody:
    """A request cycle's view of the transport: a head announcing a body goes out with it.

    A head with `Content-Length` (all of our JSON answers) waits for the body's first write, and
    both leave in one `write`. A chunked head (a stream) goes at once: its first event may be
    seconds away. A head whose body never comes (the app failed midway) is dropped when the cycle
    closes the connection, rather than sent as a truncated answer.
    """

    __slots__ = ("cycle", "head_seen", "held", "transport")

    def __init__(self, transport: asyncio.Transport, cycle: Any) -> None:
        self.transport = transport
        self.cycle = cycle
        self.head_seen = False
        self.held: bytes | None = None

    def write(self, data: bytes) -> None:
        """Write `data`, after the held head; or hold `data` if it is a head with a body to come."""
        if self.held is not None:
            data, self.held = self.held + data, None
        elif not self.head_seen and getattr(self.cycle, "response_started", False):
            self.head_seen = True  # the cycle's first write once its response started: the head
            cycle = self.cycle
            # Read with defaults: a uvicorn that names these otherwise writes as it always did.
            if (
                getattr(cycle, "chunked_encoding", None) is False
                and getattr(cycle, "expected_content_length", 0) > 0
                and cycle.scope.get("method") != "HEAD"  # its body is never written
            ):
                self.held = data
                return
        self.transport.write(data)

    def close(self) -> None:
        """Close the connection; a held head had no body, so it is not sent."""
        self.held = None
        self.transport.close()

    def is_closing(self) -> bool:
        """Whether the connection is closing."""
        return self.transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


_rooms: weakref.WeakKeyDictionary[ServerState, _Room] = weakref.WeakKeyDictionary()


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with the limits of `HttpLimits` on every connection."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: HttpLimits,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits
        self.timeout_keep_alive = limits.keepalive_timeout  # type: ignore[assignment]
        self.room = _rooms.setdefault(server_state, _Room())
        # Bytes of the coming request's head received so far; counted from the end of the
        # previous request (or the connection's start) to the end of this one's headers.
        self.head_bytes = 0
        self.counting = True
        self.head_started = False  # the parser is inside a request's head
        self.head_timer: asyncio.TimerHandle | None = None
        self.head_overflow = False  # a pipelined head passed the limit during a request
        self.body_pending = False  # the parser is inside a request's body
        self.body_started = 0.0  # when, in loop time
        self.body_timer: asyncio.TimerHandle | None = None

    # Connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the deadline for the first request's head; make room if over budget."""
        super().connection_made(transport)
        self.head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timed_out)
        # The others first: the newcomer, idle too, is closed only if none of them can be.
        self.room.make_room(len(self.connections), self.limits.max_connections)
        self.room.idle[self] = None
        self.room.make_room(len(self.connections), self.limits.max_connections)

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the timers and forget the connection."""
        self._cancel_head_timer()
        self._cancel_body_timer()
        self.room.forget(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Count the head's bytes before parsing more of them; start its deadline."""
        if self.counting:
            self.head_bytes += len(data)
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        except httptools.HttpParserError as error:
            if not isinstance(error.__context__, _Rejected):  # _Rejected: already answered
                # llhttp's reason is a fixed text ("Duplicate Content-Length"), never the data.
                reason = str(error).rstrip(".") or "malformed"
                self._reject(400, "invalid_request", f"Invalid HTTP request received: {reason}.")
            return
        if self.transport.is_closing():
            return
        if self.counting and self.head_bytes > self.limits.max_header_bytes:
            if self._between_requests():
                self._reject(431, "headers_too_large", self._too_large())
            else:  # a pipelined head: answer once the running request's response is out
                self.head_overflow = True
                self.flow.pause_reading()
        elif self.head_started and self.head_timer is None and self._between_requests():
            self.head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timed_out)
        if self.body_pending and self.body_timer is None and self._running(self.cycle):
            self._start_body_timer()

    # Parser callbacks

    def on_message_begin(self) -> None:
        """A request's head starts."""
        self.head_started = True
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        """Check the head's exact size, then run the request."""
        self._cancel_head_timer()
        self.head_started = False
        self.counting = False
        self.head_bytes = 0
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self.limits.max_header_bytes:
            self._reject(431, "headers_too_large", self._too_large())
            raise _Rejected
        self.room.idle.pop(self, None)
        previous = self.cycle
        super().on_headers_complete()
        if self.cycle is not None and self.cycle is not previous:  # not an upgrade: a new cycle
            self.cycle.transport = _HeadWithBody(self.transport, self.cycle)  # type: ignore[assignment]
            if self.room.draining:
                self.cycle.keep_alive = False
            # Until on_message_complete, most often within this same `feed_data` (no body): the
            # body's deadline starts once the parser has been fed (`data_received`), from now.
            self.body_pending = True
            self.body_started = self.loop.time()

    def drain(self) -> None:
        """The responses still to come on this connection say `Connection: close`, then close it.

        A response whose head is out (a stream's) can no longer say it: its client may send the
        next request as soon as it ends, so the connection stays open after it, as an idle one
        (`gptactions.graceful`), and that request is answered with `Connection: close`.
        """
        cycles = [self.cycle, *(cycle for cycle, _ in self.pipeline)]
        for cycle in cycles:
            if cycle is not None and not cycle.response_started:
                cycle.keep_alive = False

    def on_message_complete(self) -> None:
        """What comes next on this connection is the next request's head."""
        self.counting = True
        self.body_pending = False
        self._cancel_body_timer()
        self.room.receiving.pop(self, None)
        if self._between_requests() and not self.head_overflow and not self.transport.is_closing():
            self.room.idle[self] = None  # answered before its body all came
        super().on_message_complete()

    def on_response_complete(self) -> None:
        """Once nothing runs on the connection any more, it may be closed to make room."""
        super().on_response_complete()
        if self.transport.is_closing():
            return
        if self.body_pending and self.body_timer is None and self._running(self.cycle):
            # A pipelined request, started now: its body could not be read until now.
            self.body_started = self.loop.time()
            self._start_body_timer()
        if not self._between_requests():
            return
        if self.head_overflow:
            self._reject(431, "headers_too_large", self._too_large())
        elif not self.body_pending:  # else answered before its body arrived: idle once it has
            self.room.idle[self] = None

    # Answers

    def _between_requests(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _too_large(self) -> str:
        return f"the request's headers are larger than {self.limits.max_header_bytes} bytes"

    def _head_timed_out(self) -> None:
        self.head_timer = None
        if self.transport.is_closing():
            return
        if self.head_started:
            seconds = f"{self.limits.header_timeout:g}"
            self._reject(408, "request_timeout", f"the request's headers took over {seconds} s")
        else:  # nothing was sent: close without a word, as for an idle keep-alive connection
            self.transport.close()

    def _running(self, cycle: Any) -> bool:
        """Whether `cycle` is the request the app runs (not one pipelined behind it)."""
        return cycle is not None and all(queued is not cycle for queued, _ in self.pipeline)

    def _start_body_timer(self) -> None:
        """The body has `body_timeout` from the end of its head; meanwhile, it may make room."""
        remaining = self.body_started + self.limits.body_timeout - self.loop.time()
        self.body_timer = self.loop.call_later(max(0.0, remaining), self._body_timed_out)
        self.room.receiving[self] = None

    def _body_timed_out(self) -> None:
        self.body_timer = None
        self.room.receiving.pop(self, None)
        if not self.transport.is_closing() and self.body_pending:
            seconds = f"{self.limits.body_timeout:g}"
            message = f"the request's body did not all arrive within {seconds} s"
            self._cut_body_short(f"{message} (GPTACTIONS_REQUEST_DEADLINE)")

    def body_cut_short(self, limit: int) -> None:
        """Closed to make room (`_Room`): the request, still receiving its body, is told so."""
        seconds = f"{self.loop.time() - self.body_started:.1f}"
        self._cut_body_short(
            f"the request's body was still arriving after {seconds} s when the server, at its"
            f" limit of {limit} connections, needed its connection"
        )

    def _cut_body_short(self, message: str) -> None:
        """Answer 408 and close, unless the app has begun its answer: then close once it ends
        (a streamed answer), or at once (the answer is out, the body still coming)."""
        self._cancel_body_timer()
        cycle = self.cycle
        if cycle is None or not cycle.response_started:
            self._answer(408, "request_timeout", message)
        elif cycle.response_complete:
            self.transport.close()
        else:
            cycle.keep_alive = False

    def _reject(self, status: int, code: str, message: str) -> None:
        self._answer(status, code, message)
        self.room.forget(self)

    def _answer(self, status: int, code: str, message: str) -> None:
        """Answer `status` in the API's error shape, with no more of the request read, and close
        the connection."""
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "unknown client"
        # A new id: the request's own, if it sent one, may be in what was refused.
        identifier = new_request_id()
        log.warning("%s: %d %s %s", client, status, message, identifier)
        body = json.dumps(error_body(status, message, code=code)).encode()
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            REQUEST_ID_HEADER + b": " + identifier.encode("ascii") + b"\r\n",
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
            body,
        ]
        self.transport.write(b"".join(head))
        self.transport.close()

    def _cancel_head_timer(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def _cancel_body_timer(self) -> None:
        if self.body_timer is not None:
            self.body_timer.cancel()
            self.body_timer = None


def drain(server_state: ServerState) -> None:
    """The server stops: from now on every response on its connections says `Connection: close`.

    Called from the stop signal's handler, so that the answers sent before uvicorn's next tick
    (up to 0.1 s later) begins the shutdown say it too. Plain attribute writes, safe wherever the
    signal interrupts.
    """
    _rooms.setdefault(server_state, _Room()).draining = True
    for connection in list(server_state.connections):
        if isinstance(connection, GuardedHttpProtocol):
            connection.drain()


def raise_open_files_limit() -> int:
    """Raise this process's soft limit on open files towards its hard limit; return the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ceiling = OPEN_FILES_TARGET if hard == resource.RLIM_INFINITY else min(hard, OPEN_FILES_TARGET)
    if soft != resource.RLIM_INFINITY and soft < ceiling:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))
            soft = ceiling
        except (ValueError, OSError):  # some containers refuse: keep the limit we have
            pass
    return OPEN_FILES_TARGET if soft == resource.RLIM_INFINITY else soft


def http_limits(settings: Settings, open_files: int) -> HttpLimits:
    """The limits from the settings; without a connection budget, half the open-files limit."""
    budget = settings.max_connections or max(16, min(DEFAULT_CONNECTION_CEILING, open_files // 2))
    return HttpLimits(
        max_header_bytes=settings.max_header_bytes,
        header_timeout=settings.header_timeout,
        keepalive_timeout=settings.keepalive_timeout,
        max_connections=budget,
        body_timeout=settings.request_deadline,
    )


def http_protocol(limits: HttpLimits) -> Any:
    """The protocol factory to give uvicorn as `http` (it pickles, for worker processes)."""
    return functools.partial(GuardedHttpProtocol, limits=limits)


class _IsoTime(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """The record's time in ISO 8601, UTC, to the millisecond."""
        return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


class IsoFormatter(_IsoTime, DefaultFormatter):
    """uvicorn's formatter, with an ISO 8601 timestamp."""


class ServerFormatter(IsoFormatter):
    """The server's lines, uvicorn's among them, named alike: uvicorn's life-cycle lines come from
    its logger `uvicorn.error`, named `uvicorn` here, as none of them is an error."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        """The line, with `uvicorn.error` named `uvicorn`."""
        if record.name == "uvicorn.error":
            record = copy.copy(record)  # other handlers may see the record: it stays as it was
            record.name = "uvicorn"
        return super().formatMessage(record)


WORKER_TAG = "[worker %(process)d] "
"""What a worker's lines carry after their level when there are several workers."""


QUIET_AT_DEBUG = ("aiosqlite", "asyncio", "httpcore", "httpx", "hpack", "multipart")
"""Loggers kept at INFO when GPTACTIONS_LOG_LEVEL is debug (`log_config`)."""


def log_config(level: str, *, worker: bool = False) -> dict[str, Any]:
    """uvicorn's logging configuration with timestamps, also applied to the app's own loggers.

    Every line but the access lines says which logger wrote it; a `worker` of several also says
    which worker it is (`WORKER_TAG`). The access lines (`api.access`, one per request) go to
    standard output at `level`, in the format README documents; uvicorn's own access log is off
    (`uvicorn_options`).
    """
    here = __name__
    tag = WORKER_TAG if worker else ""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "app": {
                "()": f"{here}.ServerFormatter",
                "fmt": f"%(asctime)s %(levelprefix)s {tag}%(name)s: %(message)s",
                "use_colors": None,
            },
            "access": {
                "()": f"{here}.IsoFormatter",
                "fmt": "%(asctime)s %(levelprefix)s %(message)s",
                "use_colors": None,
            },
        },
        "handlers": {
            "app": {
                "formatter": "app",
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
            },
            "access": {
                "formatter": "access",
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stdout",
            },
        },
        "loggers": {
            "uvicorn": {"handlers": ["app"], "level": "INFO", "propagate": False},
            "uvicorn.error": {"level": "INFO"},
            ACCESS_LOGGER: {"handlers": ["access"], "level": level.upper(), "propagate": False},
            "alembic": {"level": "WARNING"},  # its start-up chatter, at every worker's start
            # Libraries whose debug lines quote what the access log redacts: aiosqlite every
            # statement with its parameters (a search's words, keys' and tokens' hashes),
            # the HTTP clients every header. At debug, the server's own lines only.
            **{name: {"level": "INFO"} for name in QUIET_AT_DEBUG},
        },
        "root": {"handlers": ["app"], "level": level.upper()},
    }


def address(host: str, port: int) -> str:
    """The URL of the server listening on `host:port`."""
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def serving_on(host: str, port: int, workers: int = 1) -> str:
    """The line logged once the server accepts connections (a script may wait for it)."""
    several = f" with {workers} workers" if workers > 1 else ""
    return f"gptactions {__version__} serving on {address(host, port)}{several}"


APP = "gptactions.app:create_app_from_environment"
STARTUP_FAILURE = 3
"""A server process's exit status when its app failed to start (uvicorn's too)."""


def uvicorn_options(settings: Settings, *, worker: bool = False) -> dict[str, Any]:
    """uvicorn's options for one server process (a `worker` of several), under the HTTP
    limits."""
    limits = http_limits(settings, raise_open_files_limit())
    return {
        "factory": True,
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "log_config": log_config(settings.log_level, worker=worker),
        "access_log": False,  # the app writes its own, when each request ends (`api.access`)
        # Proxy headers are read by api/forwarded.py, from GPTACTIONS_TRUSTED_PROXIES only.
        "proxy_headers": False,
        "http": http_protocol(limits),
        "timeout_graceful_shutdown": settings.shutdown_grace,
    }
