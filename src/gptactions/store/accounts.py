"""Queries over users and the OAuth tables; every function takes the caller's session."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import (
    ColumnElement,
    CursorResult,
    delete,
    func,
    literal,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from gptactions.store.models import (
    Conversation,
    Interaction,
    OAuthClient,
    OAuthCode,
    OAuthToken,
    OidcLogin,
    User,
    UserIdentity,
    utcnow,
)
from gptactions.store.queries import ConversationCursor, as_utc

# --- users ------------------------------------------------------------------------------------


async def add_user(session: AsyncSession, user: User) -> User:
    """Store a new user."""
    session.add(user)
    await session.flush()
    return user


async def user_by_name(session: AsyncSession, username: str) -> User | None:
    """The user with this username."""
    return await session.scalar(select(User).where(User.username == username))


async def user_by_id(session: AsyncSession, user_id: str) -> User | None:
    """The user with this id."""
    return await session.get(User, user_id)


async def list_users(session: AsyncSession) -> list[User]:
    """Every user, by username."""
    return list(await session.scalars(select(User).order_by(User.username)))


async def delete_user(session: AsyncSession, user: User) -> None:
    """Delete a user and every code and token issued to them."""
    await session.execute(delete(OAuthToken).where(OAuthToken.user_id == user.id))
    await session.execute(delete(OAuthCode).where(OAuthCode.user_id == user.id))
    await session.execute(delete(UserIdentity).where(UserIdentity.user_id == user.id))
    await session.delete(user)


async def revoke_user_tokens(
    session: AsyncSession, user_id: str, *, client_id: str | None = None
) -> int:
    """Revoke every live token of a user (of one client's only, when `client_id` is given);
    how many."""
    of_client = () if client_id is None else (OAuthToken.client_id == client_id,)
    return await revoke_tokens(session, utcnow(), OAuthToken.user_id == user_id, *of_client)


async def discard_user_codes(session: AsyncSession, user_id: str) -> None:
    """Forget a user's consent tickets and authorization codes not used yet (the used ones
    stay: a code presented again revokes what was issued from it)."""
    await session.execute(
        delete(OAuthCode).where(OAuthCode.user_id == user_id, OAuthCode.used_at.is_(None))
    )


# --- identities at an OpenID Connect provider ------------------------------------------------


async def user_by_identity(session: AsyncSession, issuer: str, subject: str) -> User | None:
    """The user linked to this subject of this provider."""
    return await session.scalar(
        select(User)
        .join(UserIdentity, UserIdentity.user_id == User.id)
        .where(UserIdentity.issuer == issuer, UserIdentity.subject == subject)
    )


async def add_identity(session: AsyncSession, identity: UserIdentity) -> None:
    """Link a provider's subject to a user."""
    session.add(identity)
    await session.flush()


async def add_oidc_login(session: AsyncSession, login: OidcLogin, now: datetime) -> None:
    """Store a sign-in sent to the provider, forgetting those that expired."""
    await session.execute(delete(OidcLogin).where(OidcLogin.expires_at < now))
    session.add(login)
    await session.flush()


async def use_oidc_login(session: AsyncSession, state_hash: str, now: datetime) -> OidcLogin | None:
    """Mark a sign-in returned and return it; None when unknown or returned before (one UPDATE)."""
    result = await session.execute(
        update(OidcLogin)
        .where(OidcLogin.state_hash == state_hash, OidcLogin.used_at.is_(None))
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    if not isinstance(result, CursorResult) or result.rowcount != 1:
        return None
    return await session.scalar(
        select(OidcLogin)
        .where(OidcLogin.state_hash == state_hash)
        .execution_options(populate_existing=True)
    )


# --- clients ----------------------------------------------------------------------------------


async def add_client(session: AsyncSession, client: OAuthClient) -> OAuthClient:
    """Store a new client."""
    session.add(client)
    await session.flush()
    return client


async def client_by_id(session: AsyncSession, client_id: str) -> OAuthClient | None:
    """The client with this id, revoked or not."""
    return await session.get(OAuthClient, client_id)


async def list_clients(session: AsyncSession) -> list[OAuthClient]:
    """Every client, oldest first."""
    return list(
        await session.scalars(select(OAuthClient).order_by(OAuthClient.created_at, OAuthClient.id))
    )


async def revoke_client(session: AsyncSession, client: OAuthClient) -> None:
    """Revoke a client and every token issued to it."""
    now = utcnow()
    if client.revoked_at is None:
        client.revoked_at = now
    await revoke_tokens(session, now, OAuthToken.client_id == client.id)


def _holds(scopes: InstrumentedAttribute[str], scope: str) -> ColumnElement[bool]:
    """Whether a column of space-separated scopes holds this one."""
    return (literal(" ") + scopes + literal(" ")).like(f"% {scope} %")


async def revoke_client_scopes(
    session: AsyncSession, client_id: str, scopes: tuple[str, ...], now: datetime
) -> int:
    """Revoke a client's live token pairs that hold any of `scopes`; how many."""
    if not scopes:
        return 0
    held = or_(*(_holds(OAuthToken.scopes, scope) for scope in scopes))
    return await revoke_tokens(session, now, OAuthToken.client_id == client_id, held)


async def discard_client_codes(
    session: AsyncSession, client_id: str, redirect_uris: tuple[str, ...], scopes: tuple[str, ...]
) -> None:
    """Forget a client's codes and consent tickets not used yet that name a redirect URI not in
    `redirect_uris`, or hold any of `scopes` (the used ones stay, to catch a code's replay)."""
    stale = [
        OAuthCode.redirect_uri.not_in(redirect_uris),
        *(_holds(OAuthCode.scopes, scope) for scope in scopes),
    ]
    await session.execute(
        delete(OAuthCode).where(
            OAuthCode.client_id == client_id, OAuthCode.used_at.is_(None), or_(*stale)
        )
    )


# --- codes ------------------------------------------------------------------------------------


async def add_code(session: AsyncSession, code: OAuthCode) -> None:
    """Store a consent ticket or an authorization code."""
    session.add(code)
    await session.flush()


@dataclass(frozen=True)
class CodeBinding:
    """What a redemption must match of the code it presents (RFC 6749, 4.1.3; RFC 7636, 4.6):
    the client it was issued to, its redirect URI, and its PKCE challenge (None: none sent)."""

    client_id: str
    redirect_uri: str
    code_challenge: str | None


async def use_code(
    session: AsyncSession,
    code_hash: str,
    stage: str,
    now: datetime,
    binding: CodeBinding | None = None,
) -> OAuthCode | None:
    """Mark the code used and return it; None when unknown, of another stage, used before, or
    (with `binding`) bound to another client, redirect URI or challenge: then it stays unused.

    One conditional UPDATE, so two requests racing with the same code cannot both succeed.
    """
    bound: tuple[ColumnElement[bool], ...] = ()
    if binding is not None:
        challenge = binding.code_challenge
        bound = (
            OAuthCode.client_id == binding.client_id,
            OAuthCode.redirect_uri == binding.redirect_uri,
            OAuthCode.code_challenge.is_(None)
            if challenge is None
            else OAuthCode.code_challenge == challenge,
        )
    result = await session.execute(
        update(OAuthCode)
        .where(
            OAuthCode.code_hash == code_hash,
            OAuthCode.stage == stage,
            OAuthCode.used_at.is_(None),
            *bound,
        )
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    if not isinstance(result, CursorResult) or result.rowcount != 1:
        return None
    return await code_by_hash(session, code_hash)


async def code_by_hash(session: AsyncSession, code_hash: str) -> OAuthCode | None:
    """The code with this hash, used or not, as the database has it now."""
    return await session.scalar(
        select(OAuthCode)
        .where(OAuthCode.code_hash == code_hash)
        .execution_options(populate_existing=True)
    )


async def delete_expired_codes(session: AsyncSession, now: datetime) -> None:
    """Forget codes that expired."""
    await session.execute(delete(OAuthCode).where(OAuthCode.expires_at < now))


# --- tokens -----------------------------------------------------------------------------------


async def add_token(session: AsyncSession, token: OAuthToken) -> None:
    """Store a new token pair."""
    session.add(token)
    await session.flush()


async def token_by_access_hash(session: AsyncSession, access_hash: str) -> OAuthToken | None:
    """The token pair of an access token."""
    return await session.scalar(select(OAuthToken).where(OAuthToken.access_hash == access_hash))


async def token_by_refresh_hash(session: AsyncSession, refresh_hash: str) -> OAuthToken | None:
    """The token pair of a refresh token."""
    return await session.scalar(select(OAuthToken).where(OAuthToken.refresh_hash == refresh_hash))


async def retire_token(session: AsyncSession, token_id: str, now: datetime) -> bool:
    """Revoke a live token pair; False when it was already revoked (a race lost)."""
    return await revoke_tokens(session, now, OAuthToken.id == token_id) == 1


async def revoke_code_tokens(
    session: AsyncSession, code_hash: str, now: datetime, *, client_id: str
) -> int:
    """Revoke every live token pair that `client_id` holds from an authorization code; how many.

    Only the code's own client's: another client presenting the code was refused before
    anything was issued to it, and may not end what was issued to the code's client."""
    return await revoke_tokens(
        session, now, OAuthToken.code_hash == code_hash, OAuthToken.client_id == client_id
    )


async def revoke_tokens(
    session: AsyncSession, now: datetime, *conditions: ColumnElement[bool]
) -> int:
    """Revoke the live token pairs that meet `conditions`; how many."""
    result = await session.execute(
        update(OAuthToken)
        .where(*conditions, OAuthToken.revoked_at.is_(None))
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount if isinstance(result, CursorResult) else 0


async def live_grants(
    session: AsyncSession, user_id: str, now: datetime
) -> list[tuple[OAuthToken, OAuthClient]]:
    """A user's token pairs that still work or can still be refreshed, with their clients (the
    revoked clients' left out), by client name."""
    rows = await session.execute(
        select(OAuthToken, OAuthClient)
        .join(OAuthClient, OAuthClient.id == OAuthToken.client_id)
        .where(
            OAuthToken.user_id == user_id,
            OAuthToken.revoked_at.is_(None),
            OAuthToken.refresh_expires_at > now,
            OAuthClient.revoked_at.is_(None),
        )
        .order_by(OAuthClient.name, OAuthClient.id, OAuthToken.created_at)
    )
    return [(token, client) for token, client in rows]


async def first_issued(session: AsyncSession, code_hashes: set[str]) -> dict[str, datetime]:
    """When the first pair descended from each authorization code was issued: the time of the
    grant, which refreshing (a new pair each time) does not move."""
    if not code_hashes:
        return {}
    rows = await session.execute(
        select(OAuthToken.code_hash, func.min(OAuthToken.created_at))
        .where(OAuthToken.code_hash.in_(code_hashes))
        .group_by(OAuthToken.code_hash)
    )
    return {code_hash: as_utc(first) for code_hash, first in rows if code_hash}


async def revoke_grant(session: AsyncSession, user_id: str, client_id: str, now: datetime) -> int:
    """End what a user allowed a client: its live token pairs of that user, and the codes it
    was given that it has not redeemed yet; how many pairs."""
    await session.execute(
        delete(OAuthCode).where(
            OAuthCode.user_id == user_id,
            OAuthCode.client_id == client_id,
            OAuthCode.stage == "code",
            OAuthCode.used_at.is_(None),
        )
    )
    return await revoke_tokens(
        session, now, OAuthToken.user_id == user_id, OAuthToken.client_id == client_id
    )


# --- a user's own data ------------------------------------------------------------------------


async def user_conversations(
    session: AsyncSession, tenant: str, user_id: str, after: ConversationCursor | None, limit: int
) -> list[Conversation]:
    """A user's conversations in a tenant, newest first, from after `after`; `limit + 1` of
    them, to see a next page."""
    conditions = [Conversation.tenant == tenant, Conversation.user_id == user_id]
    if after is not None:
        conditions.append(
            tuple_(Conversation.created_at, Conversation.id)
            < tuple_(
                literal(as_utc(after.created_at), Conversation.created_at.type),
                literal(after.id, Conversation.id.type),
            )
        )
    return list(
        await session.scalars(
            select(Conversation)
            .where(*conditions)
            .order_by(Conversation.created_at.desc(), Conversation.id.desc())
            .limit(limit + 1)
        )
    )


async def erase_user_data(session: AsyncSession, tenant: str, user_id: str) -> tuple[int, int]:
    """Delete a user's interactions and conversations in a tenant; how many of each."""
    interactions = await session.execute(
        delete(Interaction).where(Interaction.tenant == tenant, Interaction.user_id == user_id)
    )
    conversations = await session.execute(
        delete(Conversation).where(Conversation.tenant == tenant, Conversation.user_id == user_id)
    )
    counts = [
        r.rowcount if isinstance(r, CursorResult) else 0 for r in (conversations, interactions)
    ]
    return counts[0], counts[1]
