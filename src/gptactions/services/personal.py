"""A user's own data: who they are, everything stored about them, and erasing it."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from gptactions.services.errors import Problem, ServiceError, invalid
from gptactions.services.interactions import LogEntry, log_entry
from gptactions.services.keys import Principal
from gptactions.store import accounts, queries
from gptactions.store.db import Database

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredConversation:
    """A conversation as exported."""

    id: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Export:
    """Everything stored about one user."""

    user_id: str
    conversations: list[StoredConversation]
    interactions: list[LogEntry]


@dataclass(frozen=True)
class Erasure:
    """What an erasure deleted."""

    user_id: str
    conversations: int
    interactions: int


def whose(principal: Principal, user_id: str | None) -> str:
    """The user whose data a caller asks for: a token's own, or `userId` for a key with `logs`."""
    if principal.user_id is None and not principal.allows("logs"):
        raise ServiceError(
            "an API key needs the 'logs' scope to read or erase a user's data", 403, "forbidden"
        )
    chosen = principal.acting_as(user_id)
    if chosen is None:
        raise invalid(
            "Invalid input: userId: is required with an API key",
            Problem("/userId", "is required with an API key (an OAuth token is its own user)"),
        )
    return chosen


class PersonalData:
    """Exports and erases a user's conversations and interactions, within the caller's tenant."""

    def __init__(self, database: Database) -> None:
        self._database = database

    async def export(self, principal: Principal, user_id: str | None) -> Export:
        """Every conversation and interaction of the user."""
        user = whose(principal, user_id)
        async with self._database.session() as session:
            conversations = await accounts.user_conversations(session, principal.tenant, user)
            rows = await accounts.user_interactions(session, principal.tenant, user)
        return Export(
            user_id=user,
            conversations=[
                StoredConversation(c.id, queries.as_utc(c.created_at), queries.as_utc(c.updated_at))
                for c in conversations
            ],
            interactions=[log_entry(row) for row in rows],
        )

    async def erase(self, principal: Principal, user_id: str | None) -> Erasure:
        """Delete the user's conversations and interactions; logged without their content."""
        user = whose(principal, user_id)
        async with self._database.session() as session:
            conversations, interactions = await accounts.erase_user_data(
                session, principal.tenant, user
            )
        log.warning(
            "erased the data of user %r in tenant %r at the request of %s: "
            "%d conversations, %d interactions",
            user,
            principal.tenant,
            principal.name,
            conversations,
            interactions,
        )
        return Erasure(user, conversations, interactions)
