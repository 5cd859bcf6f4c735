"""Usage: requests and tokens per key and per user over a window, summed from the log.

The window is `since` to `until` (until defaults to now), or the `window` (a duration such as
`24h` or `7d`) that ends now; without either it is the last 24 hours. A key sees its tenant's
usage (an admin key every tenant's), an OAuth token its own user's only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from gptactions.config import parse_duration
from gptactions.services.errors import Problem, check_text, invalid_input
from gptactions.services.interactions import in_utc
from gptactions.services.keys import Principal
from gptactions.store import usage as store
from gptactions.store.db import Database
from gptactions.store.models import utcnow

DEFAULT_WINDOW = "24h"


@dataclass(frozen=True)
class UsageQuery:
    """The caller's window and how many rows each list may hold."""

    since: datetime | None = None
    until: datetime | None = None
    window: str | None = None
    user_id: str | None = None
    limit: int = 100


@dataclass(frozen=True)
class UsageSums:
    """Requests and tokens of one key, one user, or everything; `rejected` of the requests were
    refused before the model."""

    requests: int
    rejected: int
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        """Prompt and completion tokens."""
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class KeyUsage:
    """One key's sums; `name` is None for a key deleted or unknown here."""

    key_id: str | None
    name: str | None
    sums: UsageSums


@dataclass(frozen=True)
class UserUsage:
    """One user's sums, within a tenant."""

    tenant: str
    user_id: str
    sums: UsageSums


@dataclass(frozen=True)
class UsageReport:
    """The window, its totals, and the heaviest keys and users (`truncated`: there are more)."""

    since: datetime
    until: datetime
    total: UsageSums
    keys: list[KeyUsage]
    users: list[UserUsage]
    truncated: bool


def _sums(row: store.UsageRow) -> UsageSums:
    return UsageSums(row.requests, row.rejected, row.prompt_tokens, row.completion_tokens)


def _window(query: UsageQuery, now: datetime) -> tuple[datetime, datetime]:
    """The window the query asks for, in UTC; a 400 when it is not one."""
    if query.window is not None and query.since is not None:
        raise invalid_input(Problem("/window", "must be absent when since is given"))
    until = in_utc(query.until, "/until") or now
    since = in_utc(query.since, "/since")
    if since is None:
        try:
            length = parse_duration(query.window or DEFAULT_WINDOW)
        except ValueError:
            raise invalid_input(
                Problem("/window", "must be a duration such as 90m, 24h or 30d")
            ) from None
        try:
            since = until - timedelta(seconds=length)
        except OverflowError:
            raise invalid_input(Problem("/window", "reaches before the year 1")) from None
    if since > until:  # equal: an empty range (since is in it, until is not)
        raise invalid_input(Problem("/since", "must not be after until"))
    return since, until


class UsageService:
    """Reads usage from the interaction log."""

    def __init__(self, database: Database) -> None:
        self._database = database

    async def report(self, principal: Principal, query: UsageQuery) -> UsageReport:
        """The caller's usage over the query's window (see the module's docstring)."""
        check_text(("/window", query.window), ("/userId", query.user_id))
        since, until = _window(query, utcnow())
        usage_filter = store.UsageFilter(
            tenant=None if principal.is_admin else principal.tenant,
            since=since,
            until=until,
            # An OAuth token sees only its own user's usage.
            user_id=principal.acting_as(query.user_id),
            limit=query.limit,
        )
        async with self._database.session() as session:
            total = await store.usage_total(session, usage_filter)
            by_key = await store.usage_by_key(session, usage_filter)
            by_user = await store.usage_by_user(session, usage_filter)
            names = await store.key_names(
                session, [row.key_id for row in by_key if row.key_id is not None]
            )
        keys = [
            KeyUsage(row.key_id, names.get(row.key_id or ""), _sums(row))
            for row in by_key[: query.limit]
        ]
        users = [
            UserUsage(row.tenant or "", row.user_id or "", _sums(row))
            for row in by_user[: query.limit]
        ]
        truncated = len(by_key) > query.limit or len(by_user) > query.limit
        return UsageReport(since, until, _sums(total), keys, users, truncated)
