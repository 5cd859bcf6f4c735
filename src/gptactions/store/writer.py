"""Group commit: one writer per process commits the interactions of concurrent requests together.

Each request hands its rows to the writer and waits. The writer takes everything waiting, writes
it in one transaction (multi-row inserts) and commits once, then wakes each request with its own
row's id. While one batch commits, the next one gathers, so under load 32 requests share one
commit (one fsync on SQLite) instead of making 32; alone, a request waits for its own commit only.

A batch whose transaction fails fails every request in it, and nothing in it is acknowledged;
the writer goes on with the next batch. One exception: a constraint one row breaks (its
conversation deleted meanwhile, say) is that row's fault, not its neighbours', so the batch is
then written again one request per transaction, and only the faulty one fails.

On SQLite the writer owns a plain (synchronous) `sqlite3` connection, kept open, in a process of
its own by default (`writer_process`: the statements, the commit and the sync off this process's
GIL, one pipe write and one read per batch) or in a thread of its own. Either way a batch is ONE
hand-off: its inserts, its update and its commit run there together as plain SQL (written once
in `queries`), and one callback per batch wakes its requests. SQLAlchemy's statement machinery
held the GIL for ~0.2 ms a batch, on the path of every reply; the driver's errors are still
raised as SQLAlchemy's. Through
aiosqlite each statement (BEGIN, each INSERT, the UPDATE, COMMIT) crossed threads and back, which
was about a fifth of the event loop's time at one request at a time; a writer task between the
requests and the thread cost two more wake-ups of the loop per batch. The batch starts at the
loop's next turn, so the writes of requests that reached the writer together share it. The
writers of several processes on one file (workers) take turns through a lock file beside it
(`_turn`). With `synchronous=FULL` the writer's connection commits with `NORMAL` and the writer
then syncs the WAL file itself, outside its turn: as durable (a request is woken only once the
frames of its commit are on the disk: FULL's one difference from NORMAL in WAL mode is that sync,
inside the commit), but the next writer no longer waits for this one's fsync, and a sync covers
every commit written before it. PostgreSQL keeps its async pool (asyncpg) and a writer task,
which sends each batch as one statement run as its own transaction (`queries.postgres_write`).

A request alone in its process (`alone`, told by the server: nothing else in flight) writes on
the event loop itself, on a connection of the loop's own (`_Inline`), when the writer is idle: the
hand-off exists to let the loop serve others while a batch commits, and with nobody else to serve
it only costs the round trip (the pipe, two wake-ups: ~0.3 ms of a ~1.4 ms request at one client
at a time, bench/README.md). That write never waits: it takes the writers' turn only if it is
free at once, and SQLite's lock without a busy timeout; either taken meanwhile, the request goes
the usual way. It leaves the WAL's checkpoints to a thread (`CHECKPOINT_EVERY`), not the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import exc as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import PoolProxiedConnection

from gptactions.store import queries, search
from gptactions.store.writer_process import (
    Answer,
    Config,
    Statement,
    WriterProcess,
    connect,
    execute,
    sync_file,
)

log = logging.getLogger(__name__)

MAX_BATCH = 256
"""The most requests one transaction commits (SQLAlchemy splits its inserts further if needed)."""

ROUNDS_FOR_COMPANY = 4
"""SQLite: how many times the event loop goes round (each a pass over the callbacks ready then)
before a batch is sent while other requests are being served: the writes they are about to make
join it. A request's way from its upstream's answer to its write takes a few such rounds."""

CHECKPOINT_EVERY = 250
"""Inline commits between two checkpoints of the WAL, run in a thread. Each commits a few
pages: about every 1,000 pages, as SQLite's own automatic checkpoint, which the inline
connection turns off (it would run on the event loop)."""
SQLITE_BUSY = 5
"""SQLite's primary result code for a lock another connection holds (`sqlite_errorcode & 0xFF`)."""


@dataclass(frozen=True)
class Write:
    """One request's rows: an interaction, and the conversation it creates or continues.

    `conversation` is a new conversation's row, inserted in the same transaction before the
    interaction; otherwise the interaction's existing conversation, if any, is marked active.
    """

    interaction: dict[str, Any]
    conversation: dict[str, Any] | None = None

    @property
    def touches(self) -> tuple[str, datetime] | None:
        """The existing conversation to mark active, and when."""
        conversation_id = self.interaction.get("conversation_id")
        if self.conversation is not None or conversation_id is None:
            return None
        return conversation_id, self.interaction["created_at"]


@dataclass
class _Pending:
    write: Write
    done: asyncio.Future[int]


@dataclass
class _Outcome:
    """What became of one transaction of the writer thread: its ids, or the error to raise
    (`as_is`, else what the database's outage handling makes of it)."""

    batch: list[_Pending]
    ids: list[int] = field(default_factory=list)
    seconds: float = 0.0
    error: BaseException | None = None
    as_is: bool = True


class _Stop:
    """Put in the queue by `close`: everything before it is written, then the writer ends."""


class GroupWriter:
    """Commits the writes of concurrent requests in shared transactions, one batch at a time.

    `engine` is an async engine (PostgreSQL), or a synchronous one (SQLite) whose connection
    only the writer's own thread uses. `committed` is told how many seconds each commit took;
    `failed` maps a batch's error to what its requests raise (the database's outage handling),
    and `succeeded` is told of each commit that worked. `synchronous` is SQLite's mode for the
    writer's connections (NORMAL with `sync_wal`; None: SQLite's default); `busy_timeout`, in
    seconds, how long they wait for another's lock (not the loop's own connection: never).
    """

    def __init__(
        self,
        engine: AsyncEngine | Engine,
        *,
        committed: Callable[[float], None],
        failed: Callable[[BaseException], BaseException],
        succeeded: Callable[[], None],
        max_batch: int = MAX_BATCH,
        sync_wal: bool = False,
        synchronous: str | None = None,
        busy_timeout: float = 5.0,
        process: Config | None = None,
    ) -> None:
        self._engine = engine
        self._committed = committed
        self._failed = failed
        self._succeeded = succeeded
        self._max_batch = max_batch
        self._queue: asyncio.Queue[_Pending | _Stop] | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread: ThreadPoolExecutor | None = None
        # SQLite: the writes waiting for the next batch, whether a batch is being written, the
        # loop the requests wait in, and who waits for the writer to be idle (`close`).
        self._waiting: list[_Pending] = []
        self._busy = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle: asyncio.Future[None] | None = None
        database = engine.url.database if isinstance(engine, Engine) else None
        self._lock_path: str | None = None
        """SQLite: the file the writers of every process serving this database take turns on."""
        if is_sqlite_file(database):
            self._lock_path = f"{database}-writer.lock"
        self._lock_file: int | None = None
        self._wal_path = f"{database}-wal" if sync_wal and self._lock_path is not None else None
        """SQLite with `synchronous=FULL`: the WAL file the writer syncs itself after each commit,
        outside the writers' turn (its connection commits with `synchronous=NORMAL`)."""
        self._connection: PoolProxiedConnection | None = None
        """The writer thread's own (driver) connection, kept open between batches."""
        self._process: WriterProcess | None = None
        """SQLite file, `process` given: the writer's process (`writer_process`), not a thread."""
        if process is not None and self._lock_path is not None:
            config = replace(process, lock_path=self._lock_path, wal_path=self._wal_path)
            self._process = WriterProcess(config)
        self._inline: _Inline | None = None
        if self._lock_path is not None and isinstance(engine, Engine):
            assert database is not None
            self._inline = _Inline(
                database, self._lock_path, self._wal_path, synchronous, busy_timeout
            )
        self.serving: Callable[[], int] | None = None
        """How many HTTP requests its process is serving now. SQLite file: a request alone
        writes on the loop when the writer is idle; with others, a batch waits for the loop to
        go round `ROUNDS_FOR_COMPANY` times first. Unset: never alone, never waiting."""
        self.batches = 0
        """How many transactions the writer committed or tried (tests read it)."""
        self.inline = 0
        """How many of them were written on the event loop (tests read it)."""

    def start(self) -> None:
        """Start the writer's process, where there is one, before the first write needs it."""
        if self._process is not None:
            self._process.start(asyncio.get_running_loop())

    async def write(self, write: Write) -> int:
        """Store `write` in the next batch; returns its interaction's id once committed.

        The request's own row is committed when this returns. Cancelling the caller does not
        take the write back: once handed over, it is committed with its batch.
        """
        loop = asyncio.get_running_loop()
        if (
            self._inline is not None
            and self.serving is not None
            and not (self._busy and self._loop is loop)
            and self.serving() <= 1
        ):
            ident = self._write_inline(loop, write)
            if ident is not None:
                return ident
        pending = _Pending(write, loop.create_future())
        if isinstance(self._engine, AsyncEngine):
            self._running_queue(loop).put_nowait(pending)
        else:
            self._hand_over(loop, pending)
        return await pending.done

    def _write_inline(self, loop: asyncio.AbstractEventLoop, write: Write) -> int | None:
        """On the loop, nothing else to serve: `write` committed here, its id; None when the
        writers' turn or SQLite's lock is taken (the write then goes the usual way)."""
        assert self._inline is not None
        try:
            # Not indexed for search here: an FTS5 segment per commit would double what a
            # request alone writes and syncs (store/search.py). The next batch, search or
            # checkpoint catches the index up.
            answer = self._inline.write(_sqlite_statements([write], index=False))
        except ValueError as error:  # a row the statements cannot hold, as `_send` fails it
            raise self._failed(error) from error
        if answer is None:
            return None
        self.batches += 1
        self.inline += 1
        last, seconds, failure = answer
        if failure is not None:
            raised = _as_sqlalchemy(failure)
            # As a batch of one: a broken constraint is the request's own fault (`_failed`).
            raise raised if isinstance(raised, sa.IntegrityError) else self._failed(raised)
        assert last is not None
        self._committed(seconds)
        self._succeeded()
        self._inline.checkpoint_when_due(loop)
        return last

    # SQLite: the writer thread, fed from the loop by callbacks

    def _hand_over(self, loop: asyncio.AbstractEventLoop, pending: _Pending) -> None:
        if self._loop is not loop:  # a new event loop (tests run several): start afresh
            self._loop, self._waiting, self._busy, self._idle = loop, [], False, None
        self._waiting.append(pending)
        if not self._busy:
            self._busy = True
            self._after_company(loop, 1)

    def _after_company(self, loop: asyncio.AbstractEventLoop, least: int) -> None:
        """On the loop: the next batch, after `least` rounds of the loop or, while other
        requests are being served, `ROUNDS_FOR_COMPANY`: the writes they are about to make join
        it. A batch's cost in the writer is mostly its own (~100 us of SQL and WAL sync, then
        ~10 us a row), so at 32 concurrent requests batches of ~12 instead of ~4 cost the writer
        and the loop less per request, for a few microseconds' wait when the loop is idle.
        (DataLoader batches what one tick of the event loop asks for, likewise.)"""
        rounds = least
        waiting = len(self._waiting)
        if self.serving is not None and waiting < self._max_batch and self.serving() > waiting:
            rounds = max(rounds, ROUNDS_FOR_COMPANY)
        self._go_round(loop, rounds)

    def _go_round(self, loop: asyncio.AbstractEventLoop, rounds: int) -> None:
        """On the loop: the next batch, `rounds` rounds of the loop from now (0: at once)."""
        if rounds:
            loop.call_soon(self._go_round, loop, rounds - 1)
        else:
            self._next_batch(loop)

    def _next_batch(self, loop: asyncio.AbstractEventLoop) -> None:
        """On the loop: send the waiting writes to the writer thread, or note that it is idle."""
        if loop is not self._loop:
            return
        batch, self._waiting = self._waiting[: self._max_batch], self._waiting[self._max_batch :]
        if not batch:
            self._busy = False
            if self._idle is not None and not self._idle.done():
                self._idle.set_result(None)
            return
        if self._process is not None:
            self._send(loop, batch)
            return
        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="gptactions-writer")
        try:
            self._thread.submit(self._write_in_thread, loop, batch)
        except RuntimeError as error:  # the interpreter is shutting down
            self._settle(loop, [_Outcome(batch, error=error, as_is=False)])

    def _send(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending]) -> None:
        """On the loop: the batch as one transaction to the writer's process."""
        assert self._process is not None
        self.batches += 1
        answered = functools.partial(self._answered, loop, batch)
        try:
            self._process.submit(loop, [_sqlite_statements([p.write for p in batch])], answered)
        except Exception as error:  # a row the statements cannot hold: nothing was sent
            self._settle(loop, [_Outcome(batch, error=error, as_is=False)])

    def _answered(
        self, loop: asyncio.AbstractEventLoop, batch: list[_Pending], answers: list[Answer]
    ) -> None:
        """On the loop: what the process made of a batch. A row breaking a constraint sends the
        batch again, one request per transaction (as `_outcomes` does in the thread)."""
        (answer,) = answers
        outcome = _answer_outcome(batch, answer)
        if isinstance(outcome.error, sa.IntegrityError) and len(batch) > 1:
            log.warning(
                "a batch broke a constraint (%s); writing its requests one by one", outcome.error
            )
            assert self._process is not None
            self.batches += len(batch)
            singly = [_sqlite_statements([pending.write]) for pending in batch]
            self._process.submit(
                loop, singly, functools.partial(self._answered_singly, loop, batch)
            )
            return
        self._settle(loop, [outcome])

    def _answered_singly(
        self, loop: asyncio.AbstractEventLoop, batch: list[_Pending], answers: list[Answer]
    ) -> None:
        outcomes = [
            _answer_outcome([pending], answer)
            for pending, answer in zip(batch, answers, strict=True)
        ]
        self._settle(loop, outcomes)

    def _write_in_thread(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending]) -> None:
        """In the writer's thread: the batch's transactions (`_outcomes`), then one callback to
        the loop with what became of them."""
        outcomes = _outcomes(batch, self._sqlite_transaction)
        with contextlib.suppress(RuntimeError):  # its loop is closed: nobody waits any more
            loop.call_soon_threadsafe(self._settle, loop, outcomes)

    def _sqlite_transaction(self, writes: list[Write]) -> tuple[list[int], float]:
        self.batches += 1
        assert isinstance(self._engine, Engine)
        if self._connection is None:
            self._connection = self._engine.raw_connection()
        connection = self._connection.driver_connection
        assert isinstance(connection, sqlite3.Connection)
        try:
            with self._turn():
                ids, seconds = _write_sqlite_batch(connection, writes)
            if self._wal_path is not None:
                seconds += sync_file(self._wal_path)
            return ids, seconds
        except Exception:
            # Start the next batch on a fresh connection, whatever state this one is in.
            connection, self._connection = self._connection, None
            with contextlib.suppress(Exception):
                connection.close()
            raise

    @contextlib.contextmanager
    def _turn(self) -> Iterator[None]:
        """In the writer thread: the writers of every process serving one SQLite file (workers,
        or replicas on one disk) take turns through a lock file, waiting in the kernel and woken
        as soon as it is free. Without it they meet at SQLite's write lock, whose busy handler
        polls in sleeps of 1, 2, 5... ms while a batch holds that lock for a fraction of a
        millisecond: two workers served no more than one. SQLite's own lock still decides what
        is correct; the lock file only orders the waiting, so a file that cannot be opened (a
        read-only directory) costs speed, not writes."""
        if self._lock_file is None and self._lock_path is not None:
            try:
                self._lock_file = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as error:
                log.warning("writers cannot take turns through %s: %s", self._lock_path, error)
                self._lock_path = None
        if self._lock_file is None:
            yield
            return
        fcntl.flock(self._lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)

    def _settle(self, loop: asyncio.AbstractEventLoop, outcomes: list[_Outcome]) -> None:
        """On the loop: wake each request of the batch, then start the next one."""
        self._wake(outcomes)
        self._after_company(loop, 0)

    def _wake(self, outcomes: list[_Outcome]) -> None:
        """On the loop: each request gets its id, or its transaction's error."""
        for outcome in outcomes:
            if outcome.error is not None:
                error = outcome.error if outcome.as_is else self._failed(outcome.error)
                _fail(outcome.batch, error)
                continue
            self._committed(outcome.seconds)
            self._succeeded()
            for pending, ident in zip(outcome.batch, outcome.ids, strict=True):
                if not pending.done.done():
                    pending.done.set_result(ident)

    def _running_queue(self, loop: asyncio.AbstractEventLoop) -> asyncio.Queue[_Pending | _Stop]:
        """The queue of the writer task of this event loop, started on first use."""
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._queue = asyncio.Queue()
            self._task = loop.create_task(self._run(self._queue), name="gptactions-writer")
        assert self._queue is not None
        return self._queue

    async def close(self) -> None:
        """Write everything handed over so far, then stop the writer (graceful shutdown)."""
        loop = asyncio.get_running_loop()
        if self._busy and self._loop is loop:
            if self._idle is None or self._idle.done():
                self._idle = loop.create_future()
            await asyncio.shield(self._idle)
        task, queue = self._task, self._queue
        self._task = self._queue = None
        if task is None or queue is None or task.done():
            return
        if task.get_loop() is not asyncio.get_running_loop():
            task.cancel()  # a loop that is gone: nothing of it can be awaited any more
            return
        queue.put_nowait(_Stop())
        await task

    def dispose(self) -> None:
        """Close the writer's own connection, thread or process (after `close`)."""
        if self._process is not None:
            self._process.close()
        if self._thread is not None:
            self._thread.shutdown(wait=True)
            self._thread = None
        if self._connection is not None:
            with contextlib.suppress(Exception):
                self._connection.close()
            self._connection = None
        if self._lock_file is not None:
            os.close(self._lock_file)
            self._lock_file = None
        if self._inline is not None:
            self._inline.close()
        if isinstance(self._engine, Engine):
            self._engine.dispose()

    async def _run(self, queue: asyncio.Queue[_Pending | _Stop]) -> None:
        while True:
            first = await queue.get()
            batch: list[_Pending] = []
            stop = isinstance(first, _Stop)
            if isinstance(first, _Pending):
                batch.append(first)
            while not stop and len(batch) < self._max_batch and not queue.empty():
                item = queue.get_nowait()
                if isinstance(item, _Stop):
                    stop = True
                else:
                    batch.append(item)
            if batch:
                await self._commit(batch)
            if stop:
                return

    async def _commit(self, batch: list[_Pending]) -> None:
        """Write and commit one batch (`_outcomes`, on one connection); wake each request with
        its id or its transaction's error."""
        assert isinstance(self._engine, AsyncEngine)

        def transactions(connection: Connection) -> list[_Outcome]:
            def transaction(writes: list[Write]) -> tuple[list[int], float]:
                self.batches += 1
                return _write_batch(connection, writes)

            return _outcomes(batch, transaction)

        try:
            async with self._engine.connect() as connection:
                # Each batch is one statement, its own transaction (`_write_batch`).
                autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
                outcomes = await autocommit.run_sync(transactions)
        except Exception as error:  # no connection to be had
            outcomes = [_Outcome(batch, error=error, as_is=False)]
        self._wake(outcomes)


def _outcomes(
    batch: list[_Pending], transaction: Callable[[list[Write]], tuple[list[int], float]]
) -> list[_Outcome]:
    """The batch in one `transaction` (ids, seconds of commit); what became of each request.

    A transaction that fails fails its whole batch. But when a row breaks a constraint, which
    is that row's fault and not its neighbours', the batch is written again one request per
    transaction, so that only the faulty request fails.
    """
    try:
        return [_Outcome(batch, *transaction([pending.write for pending in batch]))]
    except sa.IntegrityError as error:
        if len(batch) == 1:
            return [_failed(batch, error)]
        log.warning("a batch broke a constraint (%s); writing its requests one by one", error)
        return [outcome for pending in batch for outcome in _outcomes([pending], transaction)]
    except Exception as error:
        return [_failed(batch, error)]


def _failed(batch: list[_Pending], error: BaseException) -> _Outcome:
    """A batch whose transaction failed: a broken constraint is raised as is (the request's
    own fault), anything else as the database's outage handling makes of it."""
    return _Outcome(batch, error=error, as_is=isinstance(error, sa.IntegrityError))


def _as_sqlalchemy(error: BaseException) -> BaseException:
    """SQLite's own error as SQLAlchemy's, which the rest of the server handles; others as is."""
    if isinstance(error, sqlite3.Error):
        return sa.DBAPIError.instance(None, None, error, sqlite3.Error)
    return error


def _write_batch(connection: Connection, writes: list[Write]) -> tuple[list[int], float]:
    """PostgreSQL: the batch's conversations, touches and interactions in one statement, on a
    connection in autocommit (the statement is its own transaction, committed when it returns).

    Returns the interactions' ids and how many seconds the statement and its commit took.
    """
    statement, parameters = queries.postgres_write(
        [w.conversation for w in writes if w.conversation is not None],
        [t for t in (w.touches for w in writes) if t is not None],
        [w.interaction for w in writes],
    )
    started = time.perf_counter()
    ids = sorted(connection.exec_driver_sql(statement, parameters).scalars())
    return ids, time.perf_counter() - started


def _sqlite_statements(writes: list[Write], *, index: bool = True) -> list[Statement]:
    """A batch's SQLite statements: its new conversations, its interactions (the last
    statement that is not `many`: its last row id gives every id), its touches, and, with
    `index`, the search index's catch-up (store/search.py: the batch's rows and any before)."""
    statements: list[Statement] = []
    conversations = [w.conversation for w in writes if w.conversation is not None]
    if conversations:
        statements.append((*queries.sqlite_insert_conversations(conversations), False))
    interactions = [w.interaction for w in writes]
    statements.append((*queries.sqlite_insert_interactions(interactions), False))
    touches = [t for t in (w.touches for w in writes) if t is not None]
    if touches:
        statements.append((*queries.sqlite_touch_conversations(touches), True))
    if index:
        statements.extend((sql, [()], True) for sql in search.SQLITE_CATCH_UP)
    return statements


def _write_sqlite_batch(
    connection: sqlite3.Connection, writes: list[Write]
) -> tuple[list[int], float]:
    """`_write_batch` on the driver's SQLite connection, its errors raised as SQLAlchemy's."""
    try:
        last, seconds = execute(connection, _sqlite_statements(writes))
    except sqlite3.Error as error:
        raise _as_sqlalchemy(error) from error
    assert last is not None
    return queries.sqlite_ids(last, len(writes)), seconds


def _answer_outcome(batch: list[_Pending], answer: Answer) -> _Outcome:
    """What the writer's process answered for `batch`'s transaction, as the thread's outcome:
    its ids, or its error as the thread's would be."""
    last, seconds, error = answer
    if error is None:
        assert last is not None
        return _Outcome(batch, queries.sqlite_ids(last, len(batch)), seconds)
    return _failed(batch, _as_sqlalchemy(error))


def is_sqlite_file(database: str | None) -> bool:
    """Whether a SQLite URL's database is a plain file (not in memory, not a `file:` URI)."""
    if database is None or database in ("", ":memory:"):
        return False
    return not database.startswith("file:")


class _Inline:
    """The event loop's own SQLite connection, for a request alone in its process (see the
    module's docstring). It never waits: the writers' turn is taken only if free (LOCK_NB), and
    SQLite's lock with no busy timeout; a lock taken meanwhile answers None, nothing written."""

    def __init__(
        self,
        database: str,
        lock_path: str,
        wal_path: str | None,
        synchronous: str | None,
        busy_timeout: float,
    ) -> None:
        self._database = database
        self._busy_timeout = busy_timeout
        self._lock_path: str | None = lock_path
        self._wal_path = wal_path
        self._synchronous = synchronous
        self._connection: sqlite3.Connection | None = None
        self._lock: int | None = None
        self._since_checkpoint = 0
        self._checkpointing = False

    def _connect(self) -> sqlite3.Connection:
        connection = connect(self._database, self._synchronous, busy_timeout=0)
        connection.execute("PRAGMA wal_autocheckpoint=0")
        return connection

    def write(self, statements: list[Statement]) -> Answer | None:
        """The statements' transaction, committed and synced; None if a lock was taken."""
        if self._lock is None:
            if self._lock_path is None:
                return None
            try:
                self._lock = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError:  # no turns to be had: always the usual way, which warns
                self._lock_path = None
                return None
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return None
        try:
            if self._connection is None:
                self._connection = self._connect()
            last, seconds = execute(self._connection, statements)
        except sqlite3.Error as error:
            if getattr(error, "sqlite_errorcode", 0) & 0xFF == SQLITE_BUSY:
                return None
            self._reset()
            return None, 0.0, error
        except Exception as error:
            self._reset()
            return None, 0.0, error
        finally:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
        self._since_checkpoint += 1
        if self._wal_path is not None:
            try:
                seconds += sync_file(self._wal_path)
            except OSError as error:
                return None, 0.0, error
        return last, seconds, None

    def checkpoint_when_due(self, loop: asyncio.AbstractEventLoop) -> None:
        """Every `CHECKPOINT_EVERY` inline commits, in a thread: the search index caught up
        with them, and a passive checkpoint."""
        if self._since_checkpoint < CHECKPOINT_EVERY or self._checkpointing:
            return
        try:
            future = loop.run_in_executor(
                None, _checkpoint, self._database, self._lock_path, self._busy_timeout
            )
        except RuntimeError:  # the loop's executor is shut down: the server is stopping
            return
        self._since_checkpoint, self._checkpointing = 0, True
        future.add_done_callback(self._checkpointed)

    def _checkpointed(self, future: asyncio.Future[None]) -> None:
        self._checkpointing = False
        if not future.cancelled() and future.exception() is not None:
            log.warning("checkpointing the SQLite WAL failed: %s", future.exception())

    def _reset(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.close()

    def close(self) -> None:
        self._reset()
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None


def _checkpoint(database: str, lock_path: str | None, busy_timeout: float) -> None:
    """In a thread: the search index caught up (in the writers' turn, as a writer), then a
    passive checkpoint of the WAL (it waits for no one), on a connection of its own."""
    connection = connect(database, None, busy_timeout)
    try:
        lock = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600) if lock_path else None
        try:
            if lock is not None:
                fcntl.flock(lock, fcntl.LOCK_EX)
            execute(connection, [(sql, [()], True) for sql in search.SQLITE_CATCH_UP])
        finally:
            if lock is not None:
                os.close(lock)  # which releases the turn
        connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
    finally:
        connection.close()


def _fail(batch: list[_Pending], error: BaseException) -> None:
    for pending in batch:
        if not pending.done.done():
            pending.done.set_exception(error)
