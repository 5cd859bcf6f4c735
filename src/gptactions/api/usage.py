"""GET /api/v1/gpt/usage: requests and tokens per key and per user over a window of the log."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from gptactions.api.deps import LogsCaller, RuntimeDep
from gptactions.api.direct import DirectRoute
from gptactions.api.logs import QueryInteger, rfc3339
from gptactions.api.responses import KeyUsage, UsageResponse, UsageSums, UserUsage
from gptactions.api.schemas import (
    LOGS_DEFAULT_LIMIT,
    USER_ID_FILTER_MAX_LENGTH,
    NulFree,
    Timestamp,
    check_limit,
)
from gptactions.services import usage
from gptactions.services.sizing import fit, json_length

router = APIRouter(prefix="/api/v1/gpt", route_class=DirectRoute)

WINDOW_MAX_LENGTH = 16


def _sums(sums: usage.UsageSums) -> dict[str, int]:
    return {
        "requests": sums.requests,
        "rejected": sums.rejected,
        "prompt_tokens": sums.prompt_tokens,
        "completion_tokens": sums.completion_tokens,
        "total_tokens": sums.total_tokens,
    }


def usage_body(report: usage.UsageReport) -> dict[str, Any]:
    """The report as the document describes it."""
    return UsageResponse(
        since=rfc3339(report.since),
        until=rfc3339(report.until),
        total=UsageSums(**_sums(report.total)),
        keys=[KeyUsage(key_id=k.key_id, name=k.name, **_sums(k.sums)) for k in report.keys],
        users=[
            UserUsage(tenant=u.tenant, user_id=u.user_id, **_sums(u.sums)) for u in report.users
        ],
        truncated=report.truncated,
    ).wire()


@router.get("/usage", operation_id="getUsage")
async def get_usage(
    caller: LogsCaller,
    runtime: RuntimeDep,
    since: Annotated[Timestamp, Query()] = None,
    until: Annotated[Timestamp, Query()] = None,
    window: Annotated[str | None, Query(min_length=1, max_length=WINDOW_MAX_LENGTH)] = None,
    userId: Annotated[NulFree, Query(min_length=1, max_length=USER_ID_FILTER_MAX_LENGTH)] = None,
    limit: Annotated[QueryInteger, Query(ge=1)] = LOGS_DEFAULT_LIMIT,
) -> Any:
    """Requests and tokens per key and per user over a window of the log."""
    check_limit(limit, runtime.settings.logs_max_limit)
    report = await runtime.usage.report(
        caller,
        usage.UsageQuery(since=since, until=until, window=window, user_id=userId, limit=limit),
    )
    return within(usage_body(report), runtime.settings.max_response_chars)


def within(body: dict[str, Any], budget: int) -> dict[str, Any]:
    """The usage body within `budget` characters: the users with the fewest tokens are left out
    first, then the keys, and `truncated` becomes true (the totals still count everyone)."""
    if json_length(body) <= budget:
        return body
    body = {**body, "truncated": True}
    for name in ("users", "keys"):
        rows, body[name] = body[name], []
        room = budget - json_length(body) + 2
        kept, _ = fit(rows, room)
        body[name] = kept if json_length(kept) <= room else []
        if body[name]:
            break
    return body
