"""The tables: API keys, conversations, and interactions (the log and the history are one table)."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class InteractionKind(StrEnum):
    """What an interaction was."""

    CONVERSATION = "conversation"
    ACTION = "action"
    CHAT_COMPLETION = "chat.completion"
    """A call of the OpenAI-compatible API's chat completions."""
    REJECTED = "rejected"
    """A request refused before the model (400, 403, 404, 413, 415, 429): `message` holds the
    body it sent (bounded), `reply` the error it got, `http_status` the status, `endpoint` the
    method and path it called."""


class InteractionStatus(StrEnum):
    """How an interaction ended."""

    OK = "ok"
    """Complete: the reply, or the action's result, is in the promised form."""
    ERROR = "error"
    """A backend failed; `error` says how, `reply` holds what was generated before."""
    FAILED = "failed"
    """An action ran but its output could not be brought into the promised form."""
    CANCELLED = "cancelled"
    """The client went away first; `reply` holds what was generated until then."""
    REJECTED = "rejected"
    """Refused before the model: `http_status` says how, `error` why."""


class FinishReason(StrEnum):
    """How a model's reply ended."""

    STOP = "stop"
    """The model ended it (or a stop string did)."""
    LENGTH = "length"
    """It reached maxTokens or the model's context window."""
    DEADLINE = "deadline"
    """The request's deadline (GPTACTIONS_REQUEST_DEADLINE) came first: the reply so far."""
    CANCELLED = "cancelled"
    """The client went away (or the server stopped) first."""

    @classmethod
    def of(cls, reason: str | None) -> FinishReason:
        """A backend's finish reason in these terms (`tool_calls`, `content_filter`: stop)."""
        try:
            return cls(reason or "stop")
        except ValueError:
            return cls.STOP


class Base(DeclarativeBase):
    """Declarative base of every table."""


# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
BigIntId = BigInteger().with_variant(Integer(), "sqlite")


class ApiKey(Base):
    """An API key, stored only as a SHA-256 hash and a short visible prefix.

    `prefix` is the key's first characters for a generated key, a fragment of its hash for an
    imported one (a human-chosen key's first characters would give half of it away).
    `imported` marks the key GPTACTIONS_API_KEY brought in: the next one replaces it.
    `rate_limit` and `token_limit` are the key's own limits (`gptactions keys create`).
    `expires_at` is when a rotated key's grace period ends: from then on it counts as revoked.
    """

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    tenant: Mapped[str] = mapped_column(String(200), index=True)
    scopes: Mapped[str] = mapped_column(String(200))  # space-separated
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    imported: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # The key's own limits (`60/minute`, `100000/day`), in place of the server's; NULL: none.
    rate_limit: Mapped[str | None] = mapped_column(String(40), nullable=True)
    token_limit: Mapped[str | None] = mapped_column(String(40), nullable=True)
    # When the key stops working without a revocation (`keys rotate --grace`); NULL: never.
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class KeyVersion(Base):
    """One row whose version every key revocation bumps: key caches compare it to forget keys."""

    __tablename__ = "key_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    version: Mapped[int] = mapped_column(BigInteger)


class Conversation(Base):
    """A conversation of one user, within one tenant."""

    __tablename__ = "conversations"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(200))
    user_id: Mapped[str] = mapped_column(String(1024))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (
        Index("ix_conversations_tenant_user_updated", "tenant", "user_id", "updated_at"),
    )


class Interaction(Base):
    """One conversation turn or action call: a row of the log, and of a conversation's history."""

    __tablename__ = "interactions"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    tenant: Mapped[str] = mapped_column(String(200))
    key_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    user_id: Mapped[str] = mapped_column(String(1024))
    conversation_id: Mapped[str | None] = mapped_column(
        String(40), ForeignKey("conversations.id", ondelete="CASCADE"), nullable=True
    )
    kind: Mapped[str] = mapped_column(String(20))  # an InteractionKind
    action: Mapped[str | None] = mapped_column(String(100), nullable=True)
    message: Mapped[str] = mapped_column(Text)
    reply: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20))  # an InteractionStatus
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    backend: Mapped[str | None] = mapped_column(String(100), nullable=True)
    model: Mapped[str | None] = mapped_column(String(200), nullable=True)
    latency_ms: Mapped[int] = mapped_column(Integer, default=0)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cached_tokens: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    finish_reason: Mapped[str | None] = mapped_column(String(20), nullable=True)  # FinishReason
    http_status: Mapped[int | None] = mapped_column(Integer, nullable=True)  # of a rejection
    endpoint: Mapped[str | None] = mapped_column(String(300), nullable=True)  # of a rejection

    __table_args__ = (
        Index("ix_interactions_tenant_created", "tenant", "created_at", "id"),
        Index("ix_interactions_tenant_user_created", "tenant", "user_id", "created_at", "id"),
        Index("ix_interactions_conversation", "conversation_id", "id"),
        Index("ix_interactions_created", "created_at", "id"),
    )


class User(Base):
    """An end user who signs in through OAuth; the password is stored only as an argon2 hash."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class UserIdentity(Base):
    """A user's account at an OpenID Connect provider: the provider's issuer and subject."""

    __tablename__ = "user_identities"
    __table_args__ = (UniqueConstraint("issuer", "subject", name="uq_user_identities_subject"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    issuer: Mapped[str] = mapped_column(String(500))
    subject: Mapped[str] = mapped_column(String(255))
    user_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class OidcLogin(Base):
    """A sign-in sent to the OpenID Connect provider and not yet back: found by its state's hash.

    `request` holds the parameters of our own `/oauth/authorize` (JSON), checked again on return.
    """

    __tablename__ = "oidc_logins"

    state_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    nonce: Mapped[str] = mapped_column(String(64))
    code_verifier: Mapped[str] = mapped_column(String(128))
    request: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class OAuthClient(Base):
    """An OAuth client (a GPT): its secret stored only as a hash; none for a public client."""

    __tablename__ = "oauth_clients"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # the client_id
    name: Mapped[str] = mapped_column(String(200))
    secret_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    redirect_uris: Mapped[str] = mapped_column(Text)  # one per line, matched exactly
    scopes: Mapped[str] = mapped_column(String(200))  # space-separated
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class OAuthCode(Base):
    """A one-time secret of the authorization flow, stored as a hash.

    `stage` is `consent` for the ticket of a signed-in user's consent form, and `code` for an
    authorization code; each is used once and expires.
    """

    __tablename__ = "oauth_codes"

    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    stage: Mapped[str] = mapped_column(String(10))
    client_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("oauth_clients.id", ondelete="CASCADE")
    )
    user_id: Mapped[str] = mapped_column(String(32), ForeignKey("users.id", ondelete="CASCADE"))
    redirect_uri: Mapped[str] = mapped_column(Text)
    scopes: Mapped[str] = mapped_column(String(200))
    state: Mapped[str | None] = mapped_column(Text, nullable=True)
    code_challenge: Mapped[str | None] = mapped_column(String(128), nullable=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class OAuthToken(Base):
    """An access token and its refresh token, stored as hashes; refreshing replaces the row.

    `code_hash` is the hash of the authorization code the pair descends from, kept through
    refreshes, so that a code redeemed again revokes every pair issued from it (RFC 6749, 4.1.2).
    """

    __tablename__ = "oauth_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    access_hash: Mapped[str] = mapped_column(String(64), unique=True)
    refresh_hash: Mapped[str] = mapped_column(String(64), unique=True)
    client_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("oauth_clients.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    scopes: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    access_expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    refresh_expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    code_hash: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
