"""API keys: creation, authentication, revocation. Keys are shown once and stored as hashes."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime

from gptactions.store import queries
from gptactions.store.db import Database
from gptactions.store.models import ApiKey

KEY_PREFIX = "gpta_"
VISIBLE_PREFIX_LENGTH = 12  # "gpta_" and 7 characters: enough to tell keys apart in a list
SCOPES = ("chat", "actions", "logs", "admin")
DEFAULT_SCOPES = ("chat", "actions", "logs")
DEFAULT_TENANT = "default"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's id, tenant and scopes. `admin` implies every scope."""

    key_id: str
    name: str
    tenant: str
    scopes: frozenset[str]

    @property
    def is_admin(self) -> bool:
        """Whether the key holds the admin scope."""
        return "admin" in self.scopes

    def allows(self, scope: str) -> bool:
        """Whether the key may use operations of this scope."""
        return self.is_admin or scope in self.scopes


TERMINAL = Principal("terminal", "terminal", DEFAULT_TENANT, frozenset(SCOPES))
"""Who the command line acts as: its conversations and action runs are logged under this name."""


@dataclass(frozen=True)
class KeyInfo:
    """A key as listed: never the key itself."""

    id: str
    name: str
    prefix: str
    tenant: str
    scopes: tuple[str, ...]
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class NewKey:
    """A freshly created key: `secret` is shown to the user once and never stored."""

    secret: str
    info: KeyInfo


class NoKeys(RuntimeError):
    """There is no key at all, and none may be generated."""


class InvalidScope(ValueError):
    """A scope that does not exist."""


def hash_key(secret: str) -> str:
    """The stored form of a key. Keys carry 256 random bits, so a plain SHA-256 is enough."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def generate_secret() -> str:
    """A new random key: the `gpta_` marker and 32 random bytes, URL-safe."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def parse_authorization(header: str | None) -> str | None:
    """The key from an Authorization header: `Bearer <key>`, or the bare key."""
    if not header:
        return None
    value = header.strip()
    scheme, _, rest = value.partition(" ")
    if rest and scheme.lower() == "bearer":
        value = rest.strip()
    return value or None


def _info(key: ApiKey) -> KeyInfo:
    return KeyInfo(
        id=key.id,
        name=key.name,
        prefix=key.prefix,
        tenant=key.tenant,
        scopes=tuple(key.scopes.split()),
        created_at=queries.as_utc(key.created_at),
        revoked_at=queries.as_utc(key.revoked_at) if key.revoked_at else None,
    )


class KeyService:
    """Creates, checks and revokes keys."""

    def __init__(self, database: Database) -> None:
        self._database = database

    async def create(
        self,
        name: str,
        *,
        scopes: tuple[str, ...] = DEFAULT_SCOPES,
        tenant: str = DEFAULT_TENANT,
        secret: str | None = None,
    ) -> NewKey:
        """Create a key; `secret` imports a key chosen elsewhere (GPTACTIONS_API_KEY)."""
        unknown = sorted(set(scopes) - set(SCOPES))
        if unknown:
            raise InvalidScope(f"unknown scope(s) {', '.join(unknown)}; use {', '.join(SCOPES)}")
        if not name.strip():
            raise ValueError("a key needs a name")
        if not tenant.strip():
            raise ValueError("a key needs a tenant")
        secret = secret or generate_secret()
        if len(secret) < 20:
            raise ValueError("a key must be at least 20 characters long")
        record = ApiKey(
            id=uuid.uuid4().hex,
            name=name.strip(),
            prefix=secret[:VISIBLE_PREFIX_LENGTH],
            key_hash=hash_key(secret),
            tenant=tenant.strip(),
            scopes=" ".join(sorted(set(scopes), key=SCOPES.index)),
        )
        async with self._database.session() as session:
            await queries.add_key(session, record)
        return NewKey(secret=secret, info=_info(record))

    async def authenticate(self, secret: str) -> Principal | None:
        """The principal for a key, or None when it is unknown or revoked."""
        digest = hash_key(secret)
        async with self._database.session() as session:
            key = await queries.key_by_hash(session, digest)
        # The lookup is by an index on the hash; the comparison below is constant-time anyway.
        if key is None or not hmac.compare_digest(key.key_hash, digest) or key.revoked_at:
            return None
        return Principal(key.id, key.name, key.tenant, frozenset(key.scopes.split()))

    async def list(self) -> list[KeyInfo]:
        """Every key, without its secret."""
        async with self._database.session() as session:
            return [_info(key) for key in await queries.list_keys(session)]

    async def revoke(self, id_or_prefix: str) -> KeyInfo | None:
        """Revoke a key by id or visible prefix."""
        async with self._database.session() as session:
            key = await queries.revoke_key(session, id_or_prefix)
            return _info(key) if key else None

    async def ensure_bootstrap_key(
        self, configured: str | None, *, may_generate: bool = True
    ) -> NewKey | None:
        """On first start, create the admin key (GPTACTIONS_API_KEY's, or a random one).

        Returns the new key when one was created, so the caller can show it once. With
        `may_generate=False` (production), a missing key is an error instead of a printed secret.
        """
        if configured:
            async with self._database.session() as session:
                if await queries.key_by_hash(session, hash_key(configured)) is not None:
                    return None
            return await self.create("admin", scopes=SCOPES, secret=configured)
        async with self._database.session() as session:
            if await queries.count_keys(session):
                return None
        if not may_generate:
            raise NoKeys(
                "no API key exists and GPTACTIONS_ENVIRONMENT=production never prints one: "
                "set GPTACTIONS_API_KEY, or run `gptactions keys create --name admin --admin`"
            )
        return await self.create("admin", scopes=SCOPES)
