"""The seed's log operation, GET /api/v1/gpt/logs."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BeforeValidator

from gptactions.api.deps import LogsCaller, RuntimeDep
from gptactions.api.direct import DirectRoute
from gptactions.api.forwarded import public_path
from gptactions.api.responses import LogItem
from gptactions.api.schemas import (
    CONVERSATION_ID_MAX_LENGTH,
    CURSOR_MAX_LENGTH,
    LOGS_DEFAULT_LIMIT,
    USER_ID_FILTER_MAX_LENGTH,
    NulFree,
    Timestamp,
    check_limit,
)
from gptactions.services.interactions import InteractionKind, LogEntry, LogQuery, cursor_after
from gptactions.services.sizing import fit, json_length

router = APIRouter(prefix="/api/v1/gpt", route_class=DirectRoute)

_INTEGER = re.compile(r"-?[0-9]+")


def _integer(value: object) -> object:
    """A query string's integer as JSON writes one: pydantic's `int` also reads `1_0`, `+5`,
    ` 5` and `10.0`, which the document's `type: integer` does not admit (nor a JSON body)."""
    if isinstance(value, str) and not _INTEGER.fullmatch(value):
        raise ValueError("must be an integer")
    return value


QueryInteger = Annotated[int, BeforeValidator(_integer)]
"""An integer of a query string (`?limit=`): an optional minus and ASCII digits, nothing else."""

LONGEST_CURSOR = "x" * CURSOR_MAX_LENGTH
"""A stand-in for a next page's cursor when a page is measured: no cursor this server makes is
longer (it would not take one back)."""
NEXT_CURSOR_ROOM = json_length({"nextCursor": LONGEST_CURSOR}) - 1
"""The most that `,"nextCursor":"…"` adds to an object."""


def rfc3339(moment: datetime) -> str:
    """`2026-11-25T18:03:04.123Z`: a time in UTC, millisecond precision, a four-digit year
    (`0171-…`, which strftime's %Y does not pad)."""
    return moment.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def log_item(entry: LogEntry) -> dict[str, Any]:
    """One interaction as /logs answers it."""
    return log_model(entry).wire()


def log_model(entry: LogEntry) -> LogItem:
    """One interaction, as the model that describes it."""
    return LogItem(
        timestamp=rfc3339(entry.timestamp),
        user_id=entry.user_id,
        message=entry.message,
        reply=entry.reply,
        id=entry.id,
        conversation_id=entry.conversation_id,
        kind=entry.kind,
        action=entry.action,
        status=entry.status,
        error=entry.error,
        model=entry.model,
        latency_ms=entry.latency_ms,
        prompt_tokens=entry.prompt_tokens,
        completion_tokens=entry.completion_tokens,
        cached_tokens=entry.cached_tokens,
        finish_reason=entry.finish_reason,
        http_status=entry.http_status,
        endpoint=entry.endpoint,
    )


EXPORT_FIELDS = (
    *(
        field.alias or name
        for name, field in LogItem.model_fields.items()
        if name != "truncated_fields"  # only /logs shortens rows
    ),
    "tenant",
)
"""The fields of `gptactions logs export`: GET /logs's, and the tenant (an export spans them)."""


def export_item(entry: LogEntry) -> dict[str, Any]:
    """An interaction as `gptactions logs export` writes it."""
    return {**log_item(entry), "tenant": entry.tenant}


@router.get("/logs", operation_id="getLogs")
async def logs(
    request: Request,
    caller: LogsCaller,
    runtime: RuntimeDep,
    userId: Annotated[NulFree, Query(min_length=1, max_length=USER_ID_FILTER_MAX_LENGTH)] = None,
    conversationId: Annotated[
        NulFree, Query(min_length=1, max_length=CONVERSATION_ID_MAX_LENGTH)
    ] = None,
    since: Annotated[Timestamp, Query()] = None,
    until: Annotated[Timestamp, Query()] = None,
    limit: Annotated[QueryInteger, Query(ge=1)] = LOGS_DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(min_length=1, max_length=CURSOR_MAX_LENGTH)] = None,
    q: Annotated[NulFree, Query()] = None,
    kind: Annotated[InteractionKind | None, Query()] = None,
) -> JSONResponse:
    """Fetch interaction logs."""
    check_limit(limit, runtime.settings.logs_max_limit)
    page = await runtime.log.page(
        caller,
        LogQuery(
            user_id=userId,
            conversation_id=conversationId,
            since=_aware(since),
            until=_aware(until),
            limit=limit,
            cursor=cursor,
            q=q,
            kind=kind,
        ),
    )
    # ChatGPT refuses longer responses: fewer items, and the next page starts after the last.
    budget = runtime.settings.max_response_chars
    rows = [log_item(e) for e in page.entries]
    items, cut_short = fit(rows, budget)
    next_cursor = None
    if cut_short or page.next_cursor:
        # ChatGPT hands the model the body alone, never the headers: the seed's answer is an
        # array, so the page's last item carries the next page's cursor, within the budget.
        items, cut_short = fit(rows, budget - NEXT_CURSOR_ROOM)
        next_cursor = cursor_after(page.entries[len(items) - 1]) if cut_short else page.next_cursor
        items[-1] = {**items[-1], "nextCursor": next_cursor}
    return JSONResponse(items, headers=next_link(request, next_cursor))


def next_link(request: Request, cursor: str | None) -> dict[str, str]:
    """The `Link` header to the page at `cursor` (the same query otherwise); none without one.

    An absolute URL (as GitHub's API gives), since clients follow it as it is (`requests`'
    `response.links`); at the scheme and host the request came to (a trusted proxy's), which
    the caller can reach whatever GPTACTIONS_PUBLIC_URL says, and under the prefix the caller
    reached this server under, as the document's `servers` is."""
    if not cursor:
        return {}
    params = [(k, v) for k, v in request.query_params.multi_items() if k != "cursor"]
    params.append(("cursor", cursor))
    prefix = public_path(request, request.app.state.runtime.settings)
    origin = f"{request.url.scheme}://{request.url.netloc}"
    return {"Link": f'<{origin}{prefix}{request.url.path}?{urlencode(params)}>; rel="next"'}


def _aware(moment: datetime | None) -> datetime | None:
    """Times without an offset are read as UTC."""
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment
