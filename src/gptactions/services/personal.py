"""A user's own data: who they are, everything stored about them, and erasing it."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from gptactions.services.errors import Problem, ServiceError, check_text, invalid, invalid_input
from gptactions.services.interactions import LogEntry, cursor_after, log_entry
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


EXPORT_ROWS = 500
"""Rows an export page reads of each kind; the API keeps those that fit its size limit."""


@dataclass(frozen=True)
class Export:
    """A page of what is stored about one user: their conversations, then their interactions,
    each newest first. `more_*` says whether rows are left after those read."""

    user_id: str
    conversations: list[StoredConversation]
    more_conversations: bool
    interactions: list[LogEntry]
    more_interactions: bool


def conversations_after(conversation: StoredConversation) -> str:
    """The export cursor of the page that starts after `conversation`."""
    return "c" + queries.ConversationCursor(conversation.created_at, conversation.id).encode()


def interactions_after(entry: LogEntry | None) -> str:
    """The export cursor of the page that starts after `entry` (with the first interaction
    when None)."""
    return "i" + (cursor_after(entry) if entry is not None else "")


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

    async def export(
        self, principal: Principal, user_id: str | None, cursor: str | None, rows: int = EXPORT_ROWS
    ) -> Export:
        """A page of the user's conversations and interactions, from `cursor` (a 400 when it is
        not one that `conversations_after` or `interactions_after` made)."""
        user = whose(principal, user_id)
        check_text(("/cursor", cursor))
        conversations: list[StoredConversation] = []
        more_conversations = False
        phase, token = (cursor[:1], cursor[1:]) if cursor else ("c", "")
        try:
            if phase not in ("c", "i"):
                raise ValueError("not a cursor returned by this server")
            after_conversation = (
                queries.ConversationCursor.decode(token) if phase == "c" and token else None
            )
            after_interaction = queries.LogCursor.decode(token) if phase == "i" and token else None
        except ValueError as error:
            raise invalid_input(Problem("/cursor", f"query parameter cursor: {error}")) from None
        async with self._database.session() as session:
            if phase == "c":
                found = await accounts.user_conversations(
                    session, principal.tenant, user, after_conversation, rows
                )
                more_conversations = len(found) > rows
                conversations = [
                    StoredConversation(
                        c.id, queries.as_utc(c.created_at), queries.as_utc(c.updated_at)
                    )
                    for c in found[:rows]
                ]
            interactions: list[queries.LogRow] = []
            if not more_conversations:
                interactions = await queries.list_interactions(
                    session,
                    queries.LogFilter(
                        tenant=principal.tenant, user_id=user, cursor=after_interaction, limit=rows
                    ),
                )
        return Export(
            user_id=user,
            conversations=conversations,
            more_conversations=more_conversations,
            interactions=[log_entry(row) for row in interactions[:rows]],
            more_interactions=len(interactions) > rows,
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
