"""Usage over a window of the log: requests and tokens summed per key and per user.

Each sum is one aggregate query over a range of `created_at`, which the interactions' indexes
bound: (tenant, created_at) for a tenant, (tenant, user_id, created_at) for one user, and
(created_at) across tenants.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from gptactions.store.models import ApiKey, Interaction, InteractionStatus, OAuthClient


@dataclass(frozen=True)
class UsageFilter:
    """Which interactions count: `tenant=None` means every tenant (admin keys)."""

    tenant: str | None
    since: datetime
    until: datetime
    user_id: str | None = None
    limit: int = 100  # rows per grouping, the heaviest first


@dataclass(frozen=True)
class UsageRow:
    """The sums of one group (a key, a user, or everything)."""

    key_id: str | None
    tenant: str | None
    user_id: str | None
    requests: int
    rejected: int
    prompt_tokens: int
    completion_tokens: int


def _conditions(query: UsageFilter) -> list[ColumnElement[bool]]:
    conditions = [Interaction.created_at >= query.since, Interaction.created_at < query.until]
    if query.tenant is not None:
        conditions.append(Interaction.tenant == query.tenant)
    if query.user_id is not None:
        conditions.append(Interaction.user_id == query.user_id)
    return conditions


_REJECTED = case((Interaction.status == InteractionStatus.REJECTED, 1), else_=0)
_SUMS = (
    func.count().label("requests"),
    func.coalesce(func.sum(_REJECTED), 0).label("rejected"),
    func.coalesce(func.sum(Interaction.prompt_tokens), 0).label("prompt_tokens"),
    func.coalesce(func.sum(Interaction.completion_tokens), 0).label("completion_tokens"),
)


def _row(values: Any, **group: str | None) -> UsageRow:
    return UsageRow(
        key_id=group.get("key_id"),
        tenant=group.get("tenant"),
        user_id=group.get("user_id"),
        requests=int(values.requests),
        rejected=int(values.rejected),
        prompt_tokens=int(values.prompt_tokens),
        completion_tokens=int(values.completion_tokens),
    )


async def usage_total(session: AsyncSession, query: UsageFilter) -> UsageRow:
    """Every matching interaction, summed."""
    values = (await session.execute(select(*_SUMS).where(*_conditions(query)))).one()
    return _row(values)


async def usage_by_key(session: AsyncSession, query: UsageFilter) -> list[UsageRow]:
    """Sums per key, the most tokens first; `limit + 1` rows, to tell when there are more."""
    tokens = func.sum(Interaction.prompt_tokens + Interaction.completion_tokens)
    statement = (
        select(Interaction.key_id, *_SUMS)
        .where(*_conditions(query))
        .group_by(Interaction.key_id)
        .order_by(tokens.desc(), Interaction.key_id)
        .limit(query.limit + 1)
    )
    return [_row(r, key_id=r.key_id) for r in await session.execute(statement)]


async def usage_by_user(session: AsyncSession, query: UsageFilter) -> list[UsageRow]:
    """Sums per user of a tenant, the most tokens first; `limit + 1` rows."""
    tokens = func.sum(Interaction.prompt_tokens + Interaction.completion_tokens)
    statement = (
        select(Interaction.tenant, Interaction.user_id, *_SUMS)
        .where(*_conditions(query))
        .group_by(Interaction.tenant, Interaction.user_id)
        .order_by(tokens.desc(), Interaction.tenant, Interaction.user_id)
        .limit(query.limit + 1)
    )
    return [_row(r, tenant=r.tenant, user_id=r.user_id) for r in await session.execute(statement)]


async def key_names(session: AsyncSession, key_ids: list[str]) -> dict[str, str]:
    """The names of these API keys and OAuth clients (an OAuth token's calls carry its client's
    id), by id; ids of neither are absent."""
    if not key_ids:
        return {}
    names = {
        row.id: row.name
        for row in await session.execute(
            select(ApiKey.id, ApiKey.name).where(ApiKey.id.in_(key_ids))
        )
    }
    for row in await session.execute(
        select(OAuthClient.id, OAuthClient.name).where(OAuthClient.id.in_(key_ids))
    ):
        names.setdefault(row.id, f"oauth:{row.name}")
    return names
