"""SQLite's group writer in a process of its own: the statements and the fsync off the GIL.

In a thread, the writer's batch gave the GIL up at each SQLite step, the lock file and the fsync,
and won it back from the busy event loop each time: ~45 context switches and ~1.5 ms of CPU a
batch beyond the SQL itself, measured at 32 connections. In a process of its own it has its own
interpreter: the event loop sends a batch's statements down a pipe (one write), and the
writer answers each transaction's last row id (one read, woken by the loop's selector). One
worker made 7-15% more requests/s that way, two workers 11% more (bench/README.md).

The child is this file run by the interpreter alone (`python -I`: the standard library only, no
package imported, ~20 ms to start and ~12 MB). It opens its own connection (the pragmas of the
server's writer connection), then for each job runs each transaction in turn: the statements,
the commit, the WAL's sync outside the writers' turn when asked (as `writer.py` describes), and
answers what became of each. It ignores SIGINT and SIGTERM (a terminal's Ctrl+C and a service
manager's stop reach the whole process group, but the server drains its requests first, and the
writer commits their rows) and ends when its input closes: when the server closes it, or dies.

A job is `[[statement, ...], ...]`, a statement `(sql, parameters, many)`; the answer
`[(last_row_id, seconds, None) or (None, 0.0, error), ...]`, an error as `(kind, message,
code)`, rebuilt by the server as the `sqlite3` or OS error it was (`_error`). Both go through
`marshal`, which holds plain values only (the parameters are already SQLite's: strings,
numbers, bytes, None) and runs no code reading them, unlike pickle. Each frame is its length (4
bytes, big-endian) then its bytes, on a pipe that is the two processes' own.
"""

from __future__ import annotations

import contextlib
import fcntl
import marshal
import os
import signal
import sqlite3
import struct
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import astuple, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio

_HEADER = struct.Struct("!I")

Statement = tuple[str, Sequence[Any], bool]
"""SQL, its parameters (a sequence of them when `many`: `executemany`), and `many`."""
Answer = tuple[int | None, float, BaseException | None]
"""What became of one transaction: the last row id, the seconds of its commit and sync; or the
error that rolled it back."""
_Sent = tuple[int | None, float, tuple[str, str, int | None] | None]
"""An `Answer` as the child sends it: its error as (kind, message, code)."""
_SQLITE_ERRORS: dict[str, type[sqlite3.Error]] = {
    kind.__name__: kind
    for kind in (
        sqlite3.Error,
        sqlite3.DatabaseError,
        sqlite3.DataError,
        sqlite3.IntegrityError,
        sqlite3.InterfaceError,
        sqlite3.InternalError,
        sqlite3.NotSupportedError,
        sqlite3.OperationalError,
        sqlite3.ProgrammingError,
    )
}


@dataclass(frozen=True)
class Config:
    """How the child opens the database (sent as its one argument, a repr of a tuple)."""

    database: str
    synchronous: str
    busy_timeout: float
    lock_path: str | None = None
    """The file the writers of every process serving the database take turns on (writer.py)."""
    wal_path: str | None = None
    """The WAL file to sync after each commit (synchronous=FULL kept by hand), or None."""


class WriterProcessEnded(OSError):
    """The writer's process ended (killed, or could not start): its batch's fate is unknown, and
    the database counts as unavailable (a 503) until a new process answers."""


class WriterProcess:
    """The parent's side: starts the child (`start`, else with the first job), sends jobs,
    hands each answer back.

    Jobs go out in order and are answered in order, one answer per job, to the callback given
    with it, on the event loop that sent it. A child that ends fails the jobs it held (their
    callbacks get `WriterProcessEnded` for every transaction); the next job starts a new one.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self._process: subprocess.Popen[bytes] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._out = bytearray()
        self._in = bytearray()
        self._waiting: deque[tuple[int, Callable[[list[Answer]], None]]] = deque()
        self.pid: int | None = None
        """The child's process id, once started (tests signal it)."""

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the child now, not with the first job: an interpreter takes ~20 ms to start,
        which the first request after every start or restart would wait. A child that cannot
        start is tried again by the first job, which fails if it cannot start either."""
        try:
            self._running(loop)
        except OSError as error:
            import logging  # here: the child imports nothing it does not need

            logging.getLogger(__name__).warning(
                "the SQLite writer process could not start: %s", error
            )

    def submit(
        self,
        loop: asyncio.AbstractEventLoop,
        transactions: list[list[Statement]],
        answered: Callable[[list[Answer]], None],
    ) -> None:
        """Send one job; `answered` is called on `loop` with one `Answer` per transaction."""
        try:
            self._running(loop)
        except OSError as error:
            ended = WriterProcessEnded(f"the SQLite writer process could not start: {error}")
            loop.call_soon(_fail, deque([(len(transactions), answered)]), ended)
            return
        job = marshal.dumps(transactions)  # ValueError for a value SQLite does not take
        self._waiting.append((len(transactions), answered))
        was_empty = not self._out
        self._out += _HEADER.pack(len(job)) + job
        if was_empty:
            self._flush()

    def _running(self, loop: asyncio.AbstractEventLoop) -> None:
        """A child serving `loop`, started if there is none (OSError when it cannot start)."""
        if self._loop is not loop:  # a new event loop (tests run several): a new child
            self.close()
        if self._process is None:
            self._start(loop)

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        command = [sys.executable, "-I", os.path.abspath(__file__), repr(astuple(self.config))]
        # This interpreter, this file, the server's own settings: no outside input. An empty
        # environment: the server's secrets (keys, upstream credentials) are not the child's.
        process = subprocess.Popen(  # noqa: S603
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env={}
        )
        assert process.stdin is not None and process.stdout is not None
        os.set_blocking(process.stdin.fileno(), False)
        os.set_blocking(process.stdout.fileno(), False)
        loop.add_reader(process.stdout.fileno(), self._readable)
        self._process, self._loop, self.pid = process, loop, process.pid

    def _flush(self) -> None:
        """Write what is pending without blocking; the loop resumes when the pipe has room."""
        process, loop = self._process, self._loop
        assert process is not None and process.stdin is not None and loop is not None
        descriptor = process.stdin.fileno()
        try:
            while self._out:
                written = os.write(descriptor, self._out)
                del self._out[:written]
        except BlockingIOError:
            loop.add_writer(descriptor, self._flush)
            return
        except OSError:  # the child is gone: its output's end tells the waiting jobs
            self._out.clear()
        loop.remove_writer(descriptor)

    def _readable(self) -> None:
        process = self._process
        assert process is not None and process.stdout is not None
        try:
            chunk = os.read(process.stdout.fileno(), 1 << 16)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._ended()
            return
        self._in += chunk
        while len(self._in) >= _HEADER.size:
            (size,) = _HEADER.unpack_from(self._in)
            if len(self._in) < _HEADER.size + size:
                break
            frame = self._in[_HEADER.size : _HEADER.size + size]
            sent: list[_Sent] = marshal.loads(frame)  # noqa: S302 (our child's, on our pipe)
            del self._in[: _HEADER.size + size]
            _, answered = self._waiting.popleft()
            answered([(last, seconds, _error(error)) for last, seconds, error in sent])

    def _ended(self) -> None:
        """The child's output closed: it ended. Fail what it held; the next job starts anew."""
        process = self._process
        self._stop()
        status = process.wait() if process is not None else None
        waiting, self._waiting = self._waiting, deque()
        _fail(waiting, WriterProcessEnded(f"the SQLite writer process ended (status {status})"))

    def _stop(self) -> None:
        """Forget the child: no more reading or writing to it (it is not waited for)."""
        process, loop = self._process, self._loop
        self._process = self._loop = None
        self._out.clear()
        self._in.clear()
        if process is None:
            return
        assert process.stdin is not None and process.stdout is not None
        if loop is not None and not loop.is_closed():
            loop.remove_reader(process.stdout.fileno())
            loop.remove_writer(process.stdin.fileno())
        with contextlib.suppress(OSError):
            process.stdin.close()
        process.stdout.close()

    def close(self, timeout: float = 10.0) -> None:
        """End the child: its input closes, it finishes the job it runs and exits (waited for up
        to `timeout` seconds, then killed). Jobs not answered by then are failed."""
        process = self._process
        waiting, self._waiting = self._waiting, deque()
        self._stop()
        if process is not None:
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        _fail(waiting, WriterProcessEnded("the SQLite writer process was closed"))


def _fail(waiting: deque[tuple[int, Callable[[list[Answer]], None]]], error: OSError) -> None:
    """Answer each waiting job with `error` for every one of its transactions."""
    for count, answered in waiting:
        answered([(None, 0.0, error)] * count)


def _error(sent: tuple[str, str, int | None] | None) -> BaseException | None:
    """The error the child sent, as what it was: a `sqlite3` error (with its code), an
    `OSError`, or a RuntimeError naming anything else."""
    if sent is None:
        return None
    kind, message, code = sent
    if kind in _SQLITE_ERRORS:
        error = _SQLITE_ERRORS[kind](message)
        if code is not None:
            error.sqlite_errorcode = code
        return error
    if kind == "OSError":
        return OSError(code, message)
    return RuntimeError(message)


def _sent(error: Exception) -> tuple[str, str, int | None]:
    """`error` as the child sends it (`_error` rebuilds it)."""
    if isinstance(error, sqlite3.Error) and type(error).__name__ in _SQLITE_ERRORS:
        return type(error).__name__, str(error), getattr(error, "sqlite_errorcode", None)
    if isinstance(error, OSError):
        return "OSError", error.strerror or str(error), error.errno
    return "RuntimeError", f"{type(error).__name__}: {error}", None


# --- the transaction (the child's, and the writer thread's) -------------------------------------


def execute(
    connection: sqlite3.Connection, statements: list[Statement]
) -> tuple[int | None, float]:
    """Run `statements`, then commit (or roll back and raise). Returns the last row id of the
    last statement that is not `many`, and how many seconds the commit took."""
    last = None
    try:
        for sql, parameters, many in statements:
            if many:
                connection.executemany(sql, parameters)
            else:
                last = connection.execute(sql, parameters).lastrowid
        started = time.perf_counter()
        connection.commit()
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            connection.rollback()
        raise
    return last, time.perf_counter() - started


def sync_file(path: str) -> float:
    """Flush `path`'s data to the disk; how many seconds it took. Opened anew each time: the
    WAL file is a new one after SQLite deletes it (its last connection closed)."""
    started = time.perf_counter()
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(descriptor)
    finally:
        os.close(descriptor)
    return time.perf_counter() - started


# --- the child ----------------------------------------------------------------------------------


def connect(database: str, synchronous: str | None, busy_timeout: float) -> sqlite3.Connection:
    """A writer's connection (this child's, the event loop's own, the checkpointing thread's in
    store/writer.py), set up as the server's writer connection is (store/db.py): the busy
    timeout, foreign keys and the synchronous mode (None: SQLite's default). The server made the
    file WAL already."""
    connection = sqlite3.connect(database, timeout=busy_timeout, check_same_thread=False)
    connection.execute(f"PRAGMA busy_timeout={round(busy_timeout * 1000)}")
    if synchronous is not None:
        connection.execute(f"PRAGMA synchronous={synchronous}")
    connection.execute("PRAGMA foreign_keys=ON")
    # As the server's connections (store/vacuum.py): a WAL reset by a checkpoint is cut back to
    # this size. Spelled here: the child imports nothing of the server's.
    connection.execute("PRAGMA journal_size_limit=67108864")
    return connection


class _Child:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.connection: sqlite3.Connection | None = None
        self.lock: int | None = None
        if config.lock_path is not None:
            with contextlib.suppress(OSError):  # only speed depends on it (writer.py, `_turn`)
                self.lock = os.open(config.lock_path, os.O_RDWR | os.O_CREAT, 0o600)

    def transaction(self, statements: list[Statement]) -> _Sent:
        try:
            if self.connection is None:
                config = self.config
                self.connection = connect(config.database, config.synchronous, config.busy_timeout)
            connection = self.connection
            if self.lock is not None:
                fcntl.flock(self.lock, fcntl.LOCK_EX)
            try:
                last, seconds = execute(connection, statements)
            finally:
                if self.lock is not None:
                    fcntl.flock(self.lock, fcntl.LOCK_UN)
            if self.config.wal_path is not None:
                seconds += sync_file(self.config.wal_path)
            return last, seconds, None
        except Exception as error:
            # Start the next transaction on a fresh connection, whatever state this one is in.
            broken, self.connection = self.connection, None
            if broken is not None:
                with contextlib.suppress(Exception):
                    broken.close()
            return None, 0.0, _sent(error)


def _read_exactly(stream: Any, size: int) -> bytes | None:
    data = stream.read(size)
    if len(data) < size:
        return None  # the server closed our input: no more jobs
    return bytes(data)


def main(argv: list[str]) -> int:
    """The child: answer each job on standard input until it closes."""
    import ast

    config = Config(*ast.literal_eval(argv[1]))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    jobs, answers = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing else may write to the answers' pipe
    child = _Child(config)
    while True:
        header = _read_exactly(jobs, _HEADER.size)
        if header is None:
            return 0
        job = _read_exactly(jobs, _HEADER.unpack(header)[0])
        if job is None:
            return 0
        transactions = marshal.loads(job)  # noqa: S302 (our server's, on our pipe)
        answer = marshal.dumps([child.transaction(statements) for statements in transactions])
        try:
            answers.write(_HEADER.pack(len(answer)) + answer)
            answers.flush()
        except BrokenPipeError:  # the server is gone
            return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
