"""What a user has allowed: the clients holding live tokens of theirs, and taking it back.

The consent page promises that access can be revoked at any time; the authorizations page
(`/oauth/authorizations`) keeps the promise. Each of its Revoke buttons carries a one-time
ticket bound to the signed-in user and to that client (an `oauth_codes` row of stage `revoke`),
as the consent form carries one: the ticket proves the user signed in a moment ago, and a page
of another site cannot know it, so it cannot make the user's browser revoke anything (CSRF).
No cookie is set. Revoking ends the client's token pairs of that user and the codes it was
given but has not redeemed; the client must ask the user again.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime

from gptactions.services.keys import hash_key
from gptactions.services.oauth import CONSENT_LIFETIME, OAUTH_SCOPES
from gptactions.store import accounts, queries
from gptactions.store.db import Database
from gptactions.store.models import OAuthCode, utcnow

REVOKE_STAGE = "revoke"
TICKET_LIFETIME = CONSENT_LIFETIME


@dataclass(frozen=True)
class Grant:
    """A client that may act as the user: the scopes of its live tokens, since when, and the
    ticket of the button that revokes it."""

    client_id: str
    client_name: str
    scopes: tuple[str, ...]
    granted_at: datetime
    ticket: str


@dataclass(frozen=True)
class Authorizations:
    """The page's content: whose, their grants, and the client just revoked (if one was)."""

    user_id: str
    username: str
    grants: tuple[Grant, ...]
    revoked: str | None = None


async def list_grants(
    database: Database, user_id: str, *, revoked: str | None = None
) -> Authorizations | None:
    """The clients the user has allowed, each with a fresh revoke ticket; None when the user
    no longer exists."""
    now = utcnow()
    async with database.session() as session:
        user = await accounts.user_by_id(session, user_id)
        if user is None:
            return None
        rows = await accounts.live_grants(session, user_id, now)
        codes = {token.code_hash for token, _ in rows if token.code_hash}
        first = await accounts.first_issued(session, codes)
        merged: dict[str, tuple[str, set[str], datetime]] = {}
        for token, client in rows:
            since = first.get(token.code_hash or "", queries.as_utc(token.created_at))
            name, scopes, earliest = merged.get(client.id, (client.name, set(), since))
            merged[client.id] = (name, scopes | set(token.scopes.split()), min(earliest, since))
        await accounts.delete_expired_codes(session, now)
        grants = []
        for client_id, (name, scopes, since) in merged.items():
            ticket = secrets.token_urlsafe(32)
            await accounts.add_code(session, _ticket(ticket, client_id, user_id, now))
            ordered = tuple(scope for scope in OAUTH_SCOPES if scope in scopes)
            grants.append(Grant(client_id, name, ordered, since, ticket))
        return Authorizations(user.id, user.username, tuple(grants), revoked)


async def revoke_grant(database: Database, ticket: str) -> Authorizations | None:
    """Revoke the grant a Revoke button's ticket names; the page's new content, or None when the
    ticket is unknown, expired or was used."""
    now = utcnow()
    async with database.session() as session:
        record = await accounts.use_code(session, hash_key(ticket), REVOKE_STAGE, now)
        if record is None or queries.as_utc(record.expires_at) < now:
            return None
        await accounts.revoke_grant(session, record.user_id, record.client_id, now)
        client = await accounts.client_by_id(session, record.client_id)
        user_id = record.user_id
    return await list_grants(database, user_id, revoked=client.name if client else None)


def _ticket(ticket: str, client_id: str, user_id: str, now: datetime) -> OAuthCode:
    return OAuthCode(
        code_hash=hash_key(ticket),
        stage=REVOKE_STAGE,
        client_id=client_id,
        user_id=user_id,
        redirect_uri="",
        scopes="",
        expires_at=now + TICKET_LIFETIME,
    )
