"""Interactions: recording each conversation turn and action call, and reading the log."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from datetime import datetime

import anyio

from gptactions.llm.base import Usage
from gptactions.services.errors import Problem, check_text, invalid_input
from gptactions.services.keys import Principal
from gptactions.services.limits import Reservation, TokenQuota, give_back
from gptactions.store import queries, search
from gptactions.store.db import Database
from gptactions.store.models import (
    FinishReason,
    Interaction,
    InteractionKind,
    InteractionStatus,
    utcnow,
)
from gptactions.store.writer import Write

__all__ = [
    "ABANDONED",
    "SEARCH_MAX_LENGTH",
    "SEARCH_MAX_WORDS",
    "STOPPED",
    "FinishReason",
    "InteractionKind",
    "InteractionLog",
    "InteractionStatus",
    "LogEntry",
    "LogPage",
    "LogQuery",
    "NewConversation",
    "NewInteraction",
]

ABANDONED = "the client disconnected before the reply was complete"
"""The error recorded for an interaction whose client went away first."""
STOPPED = "the server stopped before the reply was complete"
"""The error recorded for an interaction cut short because the server is stopping."""

server_stopping: ContextVar[asyncio.Event | None] = ContextVar(
    "gptactions_server_stopping", default=None
)
"""The server's stop signal (`Runtime.stopping`), for the request being handled: set by the API
(`CancelOnDisconnect`), so that a request it cancels because the server is stopping is told
from one whose client left."""


def cancelled_error() -> str:
    """Why the running request was cancelled, as its interaction records it."""
    stopping = server_stopping.get()
    return STOPPED if stopping is not None and stopping.is_set() else ABANDONED


SEARCH_MAX_LENGTH = 200
"""`GET /logs?q=`: the most characters a search may have."""
SEARCH_MAX_WORDS = 16
"""`GET /logs?q=`: the most words a search may have (each must be found)."""
EXPORT_PAGE = 1_000
"""Rows an export reads per query: its memory stays that of one page, whatever the log's size."""


@dataclass(frozen=True)
class NewInteraction:
    """An interaction to record."""

    principal: Principal
    kind: InteractionKind
    user_id: str
    message: str
    reply: str
    status: InteractionStatus = InteractionStatus.OK
    error: str | None = None
    conversation_id: str | None = None
    action: str | None = None
    backend: str | None = None
    model: str | None = None
    latency_ms: int = 0
    usage: Usage = field(default_factory=Usage)
    at: datetime | None = None
    finish_reason: FinishReason | None = None
    http_status: int | None = None
    endpoint: str | None = None


@dataclass(frozen=True, slots=True)
class NewConversation:
    """A conversation to create with its first interaction (a plain record: an ORM object was
    a measurable part of each turn's cost)."""

    id: str
    tenant: str
    user_id: str
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True)
class LogEntry:
    """One row of `GET /logs`."""

    id: int
    timestamp: datetime
    tenant: str
    user_id: str
    message: str
    reply: str
    conversation_id: str | None
    kind: InteractionKind
    action: str | None
    status: InteractionStatus
    error: str | None
    backend: str | None
    model: str | None
    latency_ms: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    finish_reason: FinishReason | None = None
    http_status: int | None = None
    endpoint: str | None = None


@dataclass(frozen=True)
class LogPage:
    """A page of the log, newest first, and the cursor of the next page if there is one."""

    entries: list[LogEntry]
    next_cursor: str | None


@dataclass(frozen=True)
class LogQuery:
    """The caller's filters, as given."""

    user_id: str | None = None
    conversation_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 100
    cursor: str | None = None
    q: str | None = None
    """Words that the message or reply must hold (each of them), as typed."""
    kind: InteractionKind | None = None


def checked_search(q: str | None) -> str | None:
    """A search as typed, once it is known to hold words within bounds (a 400 otherwise)."""
    if q is None:
        return None
    if len(q) > SEARCH_MAX_LENGTH:
        raise invalid_input(Problem("/q", f"must be at most {SEARCH_MAX_LENGTH} characters"))
    found = search.words(q)
    if not found:
        raise invalid_input(Problem("/q", "must hold at least one word (letters or digits)"))
    if len(found) > SEARCH_MAX_WORDS:
        raise invalid_input(Problem("/q", f"must hold at most {SEARCH_MAX_WORDS} different words"))
    return q


def in_utc(moment: datetime | None, pointer: str) -> datetime | None:
    """The time in UTC (a time without an offset is UTC already); a 400 when UTC has no such
    time (9999-12-31T23:00-05:00 is in the year 10000)."""
    if moment is None:
        return None
    try:
        return queries.as_utc(moment)
    except OverflowError:
        raise invalid_input(
            Problem(pointer, "must be a time between years 1 and 9999 once converted to UTC")
        ) from None


def _entry(row: Interaction | queries.LogRow) -> LogEntry:
    return LogEntry(
        id=row.id,
        timestamp=queries.as_utc(row.created_at),
        tenant=row.tenant,
        user_id=row.user_id,
        message=row.message,
        reply=row.reply,
        conversation_id=row.conversation_id,
        kind=InteractionKind(row.kind),
        action=row.action,
        status=InteractionStatus(row.status),
        error=row.error,
        backend=row.backend,
        model=row.model,
        latency_ms=row.latency_ms,
        prompt_tokens=row.prompt_tokens,
        completion_tokens=row.completion_tokens,
        cached_tokens=row.cached_tokens,
        finish_reason=FinishReason(row.finish_reason) if row.finish_reason else None,
        http_status=row.http_status,
        endpoint=row.endpoint,
    )


class InteractionLog:
    """The log of interactions: writes each one, and reads them back a page at a time."""

    def __init__(self, database: Database, *, quota: TokenQuota | None = None) -> None:
        self._database = database
        self._quota = quota
        self.observer: Callable[[NewInteraction], None] | None = None
        """Told of each interaction once it is committed (the metrics listen)."""

    async def admit(
        self, principal: Principal, worst_case: Callable[[], int] = lambda: 0
    ) -> Reservation | None:
        """Refuse (429) a caller whose token window is used up, counting the tokens its
        requests in flight reserve, before anything is generated; else reserve this request's
        worst case there (`worst_case()`: its prompt's tokens, or an estimate, and the most it
        may generate), which others admitted meanwhile count.

        Every service that generates calls this first. `record` settles the reservation (the
        tokens used take its place); whoever admitted the request releases it (in a `finally`)
        when it ends with nothing recorded. None, and `worst_case` not called, when the caller
        has no token limit.
        """
        quota = self._quota
        if quota is None or quota.rate_for(principal) is None:
            return None
        return await quota.reserve(principal, worst_case())

    async def record(
        self,
        new: NewInteraction,
        *,
        new_conversation: NewConversation | None = None,
        reservation: Reservation | None = None,
    ) -> int:
        """Store the interaction (and its new conversation) in one committed transaction.

        The transaction is a group commit shared with concurrent requests (`store/writer.py`);
        this returns once it has committed. Its tokens then count against the caller's token
        limit: in place of the request's `reservation` (`admit`), which a failed write releases.
        """
        at = new.at or utcnow()
        conversation = None
        if new_conversation is not None:
            conversation = {
                "id": new_conversation.id,
                "tenant": new_conversation.tenant,
                "user_id": new_conversation.user_id,
                "created_at": new_conversation.created_at or at,
                "updated_at": new_conversation.updated_at or at,
            }
        interaction = {
            "created_at": at,
            "tenant": new.principal.tenant,
            "key_id": new.principal.key_id,
            "user_id": new.user_id,
            "conversation_id": new.conversation_id,
            "kind": str(new.kind),
            "action": new.action,
            "message": new.message,
            "reply": new.reply,
            "status": str(new.status),
            "error": new.error,
            "backend": new.backend,
            "model": new.model,
            "latency_ms": new.latency_ms,
            "prompt_tokens": new.usage.prompt_tokens,
            "completion_tokens": new.usage.completion_tokens,
            "cached_tokens": new.usage.cached_tokens,
            "finish_reason": str(new.finish_reason) if new.finish_reason else None,
            "http_status": new.http_status,
            "endpoint": new.endpoint,
        }
        try:
            ident = await self._database.write(Write(interaction, conversation))
        except BaseException:
            await give_back(reservation)
            raise
        tokens = new.usage.prompt_tokens + new.usage.completion_tokens
        if reservation is not None:
            await reservation.settle(tokens)
        elif self._quota is not None:
            await self._quota.charge(new.principal, tokens)
        if self.observer is not None:
            self.observer(new)
        return ident

    async def record_abandoned(
        self,
        new: NewInteraction,
        *,
        new_conversation: NewConversation | None = None,
        close: Callable[[], Awaitable[object]] | None = None,
        reservation: Reservation | None = None,
    ) -> None:
        """Record an interaction its client abandoned (or the server, stopping), as `cancelled`.

        This runs in a task being cancelled (the client went away, or the server is stopping), so
        it is shielded from the cancellation; `close` (the model's stream, say) is closed first,
        under the same shield. The `reservation` is settled by the record, or released when
        nothing can be recorded.
        """
        with anyio.CancelScope(shield=True):
            if close is not None:
                try:
                    await close()
                except BaseException:  # nothing will be recorded: the tokens held go back
                    await give_back(reservation)
                    raise
            await self.record(
                replace(
                    new,
                    status=InteractionStatus.CANCELLED,
                    error=cancelled_error(),
                    finish_reason=FinishReason.CANCELLED,
                ),
                new_conversation=new_conversation,
                reservation=reservation,
            )

    async def page(self, principal: Principal, query: LogQuery) -> LogPage:
        """The caller's tenant's interactions (every tenant's for an admin key), newest first."""
        log_filter = _filter(query, tenant=None if principal.is_admin else principal.tenant)
        # An OAuth token reads only its own user's interactions.
        log_filter = replace(log_filter, user_id=principal.acting_as(query.user_id))
        if log_filter.search is not None:
            await self._database.catch_up_search()
        async with self._database.session() as session:
            rows = await queries.list_interactions(session, log_filter)
        entries = [_entry(row) for row in rows[: query.limit]]
        next_cursor = None
        if len(rows) > query.limit:
            last = rows[query.limit - 1]
            next_cursor = queries.LogCursor(queries.as_utc(last.created_at), last.id).encode()
        return LogPage(entries, next_cursor)

    async def export(
        self, query: LogQuery, *, tenant: str | None = None, page_size: int = EXPORT_PAGE
    ) -> AsyncIterator[LogEntry]:
        """Every interaction matching `query` (in `tenant`, or all), newest first, for the
        operator: read a page at a time, each page seeking the time index past the last, so a
        log of any size is exported in the memory of one page."""
        log_filter = replace(_filter(query, tenant=tenant), limit=page_size, cursor=None)
        if log_filter.search is not None:
            await self._database.catch_up_search()
        while True:
            async with self._database.session() as session:
                rows = await queries.list_interactions(session, log_filter)
            for row in rows[:page_size]:
                yield _entry(row)
            if len(rows) <= page_size:
                return
            last = rows[page_size - 1]
            cursor = queries.LogCursor(queries.as_utc(last.created_at), last.id)
            log_filter = replace(log_filter, cursor=cursor)


def _filter(query: LogQuery, *, tenant: str | None) -> queries.LogFilter:
    """The store's filter for a caller's query: each field checked, a 400 for a bad one."""
    check_text(
        ("/userId", query.user_id),
        ("/conversationId", query.conversation_id),
        ("/cursor", query.cursor),
        ("/q", query.q),
    )
    cursor = None
    if query.cursor:
        try:
            cursor = queries.LogCursor.decode(query.cursor)
        except ValueError as error:
            raise invalid_input(Problem("/cursor", f"query parameter cursor: {error}")) from None
    since, until = in_utc(query.since, "/since"), in_utc(query.until, "/until")
    if since and until and since > until:  # equal: an empty range (since is in it, until is not)
        raise invalid_input(Problem("/since", "must not be after until"))
    return queries.LogFilter(
        tenant=tenant,
        user_id=query.user_id,
        conversation_id=query.conversation_id,
        since=since,
        until=until,
        cursor=cursor,
        limit=query.limit,
        search=checked_search(query.q),
        kind=query.kind,
    )


def log_entry(row: Interaction | queries.LogRow) -> LogEntry:
    """A stored interaction as the log shows it."""
    return _entry(row)


def cursor_after(entry: LogEntry) -> str:
    """The cursor of the page that starts after `entry`."""
    return queries.LogCursor(entry.timestamp, entry.id).encode()
