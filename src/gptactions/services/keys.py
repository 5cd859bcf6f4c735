"""API keys: creation, authentication, rotation, revocation. Shown once, stored as hashes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from gptactions.config import MIN_KEY_LENGTH, Rate
from gptactions.services.errors import Problem, ServiceError
from gptactions.services.keycache import KeyCache, KeyVersions
from gptactions.store import queries
from gptactions.store.db import Database
from gptactions.store.models import ApiKey, utcnow

log = logging.getLogger(__name__)

KEY_PREFIX = "gpta_"
VISIBLE_PREFIX_LENGTH = 12  # "gpta_" and 7 characters: enough to tell keys apart in a list
# An imported key is chosen by a human and may be short: its first characters would give part of
# it away, so it is listed by the first hex digits of its hash instead.
HASH_FRAGMENT_MARKER = "sha256:"
HASH_FRAGMENT_LENGTH = 8
SCOPES = ("chat", "actions", "logs", "admin")
DEFAULT_SCOPES = ("chat", "actions", "logs")
DEFAULT_TENANT = "default"
SERVER_LIMIT = "default"
"""Given as a key's limit by `update`: the key goes back to the server's limit."""
USERS_TENANT = "@users"
"""The tenant of the users who sign in (OAuth): no key's, so that a key naming a signed-in user's
`userId` reaches none of their conversations or log. Tenants starting with @ are reserved."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's id, tenant and scopes. `admin` implies every scope.

    `user_id` is set for an OAuth access token: the caller then acts as that user only.
    `rate_limit` and `token_limit` are the key's own limits, which replace the server's.
    `expires_at`: when the key stops working (a rotated key's grace period), as if revoked.
    """

    key_id: str
    name: str
    tenant: str
    scopes: frozenset[str]
    user_id: str | None = None
    rate_limit: Rate | None = None
    token_limit: Rate | None = None
    expires_at: datetime | None = None

    @property
    def is_admin(self) -> bool:
        """Whether the key holds the admin scope."""
        return "admin" in self.scopes

    @property
    def cache_scope(self) -> str:
        """Whose requests may reuse each other's memory in the model (its prompt cache): the
        tenant's, and an OAuth token's own user's only (the users of a public GPT share the
        tenant `@users` but not their prompts)."""
        if self.user_id is None:
            return f"tenant:{self.tenant}"
        return f"user:{len(self.tenant)}:{self.tenant}:{self.user_id}"

    def allows(self, scope: str) -> bool:
        """Whether the key may use operations of this scope."""
        return self.is_admin or scope in self.scopes

    def acting_as(self, user_id: str | None, *, field: str = "userId") -> str | None:
        """The userId a request acts as: a token's own user (another is a 403), else as given."""
        if self.user_id is None:
            return user_id
        if user_id is not None and user_id != self.user_id:
            raise ServiceError(
                f"{field} {user_id!r} does not match the signed-in user {self.user_id!r}; "
                f"an OAuth token acts only as its own user (omit {field} to use it)",
                403,
                "forbidden",
                [Problem(f"/{field}", f"must be {self.user_id!r} or absent")],
            )
        return self.user_id


TERMINAL = Principal("terminal", "terminal", DEFAULT_TENANT, frozenset(SCOPES))
"""Who the command line acts as: its conversations and action runs are logged under this name."""


@dataclass(frozen=True)
class KeyInfo:
    """A key as listed: never the key itself."""

    id: str
    name: str
    prefix: str  # the key's first characters, or `sha256:` and a hash fragment if imported
    tenant: str
    scopes: tuple[str, ...]
    created_at: datetime
    revoked_at: datetime | None  # when it stopped working: revoked, or its grace period over
    imported: bool = False
    rate_limit: str | None = None  # the key's own limits (`60/minute`); None: the server's
    token_limit: str | None = None
    expires_at: datetime | None = None  # when a rotated key's grace period ends (or ended)


@dataclass(frozen=True)
class NewKey:
    """A freshly created key: `secret` is shown to the user once and never stored."""

    secret: str
    info: KeyInfo


@dataclass(frozen=True)
class Revocation:
    """The key a revocation found; `already` when it had been revoked before."""

    key: KeyInfo
    already: bool


@dataclass(frozen=True)
class Rotation:
    """A rotated key: the old one (revoked, or expiring at `old.expires_at`) and its successor."""

    old: KeyInfo
    new: NewKey


class NoKeys(RuntimeError):
    """There is no key at all, and none may be generated."""


class AmbiguousKey(LookupError):
    """A visible prefix that several keys share: revoking one of them needs its id."""

    def __init__(self, id_or_prefix: str, matches: list[KeyInfo]) -> None:
        self.matches = matches
        listed = ", ".join(
            f"{key.id} ({key.name}{', revoked' if key.revoked_at else ''})" for key in matches
        )
        super().__init__(
            f"{len(matches)} keys have the prefix {id_or_prefix!r}: {listed}; use an id"
        )


class InvalidScope(ValueError):
    """A scope that does not exist."""


class KeyUnchangeable(Exception):
    """A key that cannot be rotated or updated (revoked, imported, already rotated): says why."""


class AdminOfOneTenant(ValueError):
    """The admin scope on a key of a tenant other than DEFAULT_TENANT: an admin key reads every
    tenant's logs and usage whatever its tenant, so such a key is not the "tenant admin" it
    looks like in `keys list`."""


def hash_key(secret: str) -> str:
    """The stored form of a key. Keys carry 256 random bits, so a plain SHA-256 is enough."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def generate_secret() -> str:
    """A new random key: the `gpta_` marker and 32 random bytes, URL-safe."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_fragment(key_hash: str) -> str:
    """How an imported key is listed: `sha256:` and the first hex digits of its hash."""
    return HASH_FRAGMENT_MARKER + key_hash[:HASH_FRAGMENT_LENGTH]


def parse_authorization(header: str | None) -> str | None:
    """The key from an Authorization header: `Bearer <key>`, the bare key, or `Basic`.

    `Basic` is what a GPT sends when its editor's API key is set to the "Basic" auth type:
    `Basic <the value entered>`, which is meant to be `user:password` in base64 (the key is the
    password, or the user when there is no password, as Stripe's keys are sent), and is often
    the key pasted as it is. Both are read.
    """
    if not header:
        return None
    value = header.strip()
    scheme, _, rest = value.partition(" ")
    if scheme.lower() == "bearer":
        # "Bearer" alone is an unset $KEY in `-H "Authorization: Bearer $KEY"`: no key at all.
        value = rest.strip()
    elif scheme.lower() == "basic" and rest.strip():
        value = _basic_credential(rest.strip())
    return value or None


def _basic_credential(credentials: str) -> str:
    """The key in Basic's credentials: `user:password` in base64 (the password, else the
    user), or, when they are not that, the credentials themselves (a key pasted as it is)."""
    try:
        decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
    except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
        return credentials
    user, colon, password = decoded.partition(":")
    if not colon:
        return credentials
    return password or user


_OTHER_SCHEMES = {
    name.lower(): name
    for name in (
        # IANA's HTTP authentication schemes, and those APIs commonly ask for.
        *("Digest", "DPoP", "GNAP", "HOBA", "Mutual", "Negotiate", "NTLM", "OAuth"),
        *("PrivateToken", "SCRAM-SHA-1", "SCRAM-SHA-256", "vapid", "Concealed"),
        *("Token", "ApiKey", "Api-Key", "Key", "JWT", "AWS4-HMAC-SHA256"),
    )
}


def unread_scheme(header: str | None) -> str | None:
    """The scheme of an Authorization header this server does not read (`Token`, `ApiKey`):
    for a 401 to name it, since the whole header was then taken for the key. Only a known
    scheme's name: the first word of a human-chosen key with spaces is part of a secret."""
    scheme, space, _ = (header or "").strip().partition(" ")
    return _OTHER_SCHEMES.get(scheme.lower()) if space else None


def _stopped_at(key: ApiKey, now: datetime) -> datetime | None:
    """When the key stopped working: revoked, or its grace period over; None while it works."""
    revoked = queries.as_utc(key.revoked_at) if key.revoked_at else None
    expires = queries.as_utc(key.expires_at) if key.expires_at else None
    if expires is not None and expires <= now and (revoked is None or expires < revoked):
        return expires
    return revoked


def _info(key: ApiKey, now: datetime | None = None) -> KeyInfo:
    return KeyInfo(
        id=key.id,
        name=key.name,
        prefix=key.prefix,
        tenant=key.tenant,
        scopes=tuple(key.scopes.split()),
        created_at=queries.as_utc(key.created_at),
        revoked_at=_stopped_at(key, now or utcnow()),
        imported=key.imported,
        rate_limit=key.rate_limit,
        token_limit=key.token_limit,
        expires_at=queries.as_utc(key.expires_at) if key.expires_at else None,
    )


def _check_scopes(scopes: tuple[str, ...]) -> str:
    """The scopes as stored (in SCOPES' order); InvalidScope for an unknown one."""
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise InvalidScope(f"unknown scope(s) {', '.join(unknown)}; use {', '.join(SCOPES)}")
    return " ".join(sorted(set(scopes), key=SCOPES.index))


def _admin_of_one_tenant(tenant: str, fix: str) -> str:
    return (
        f"an admin key sees every tenant's logs and usage, whatever its tenant: the admin scope "
        f"is refused on a key of tenant {tenant!r} (an admin key is of tenant "
        f"{DEFAULT_TENANT!r}). For a key that reads only {tenant}'s logs, give it the logs "
        f"scope instead: {fix}"
    )


def check_admin_tenant(scopes: Iterable[str], tenant: str) -> None:
    """AdminOfOneTenant for the admin scope on a key of a tenant other than DEFAULT_TENANT."""
    tenant = tenant.strip()
    if "admin" in scopes and tenant != DEFAULT_TENANT:
        raise AdminOfOneTenant(
            _admin_of_one_tenant(tenant, f"`keys create --scope logs --tenant {tenant}`")
        )


def admins_of_one_tenant(keys: Iterable[KeyInfo]) -> list[str]:
    """A warning for each working key that has the admin scope and a tenant other than
    DEFAULT_TENANT (refused since, but a database may hold some made before)."""
    return [
        f"key {key.prefix}… ({key.name}, id {key.id}) has the admin scope and tenant "
        f"{key.tenant!r}: an admin key reads every tenant's logs and usage, whatever its tenant. "
        f"`gptactions keys update {key.id} --scope logs` (with the other scopes it needs, not "
        f"admin) limits it to {key.tenant}'s"
        for key in keys
        if key.revoked_at is None and "admin" in key.scopes and key.tenant != DEFAULT_TENANT
    ]


def _rate(text: str | None, what: str) -> Rate | None:
    """A key's own limit, parsed; a ValueError that names the option when it is not a rate."""
    if text is None:
        return None
    try:
        return Rate.parse(text)
    except ValueError:
        raise ValueError(
            f"{what} {text!r} is not a rate: write a count per second, minute, hour or day, "
            "e.g. 60/minute or 100000/day"
        ) from None


class KeyService:
    """Creates, checks, rotates, updates and revokes keys.

    `clock` (monotonic) paces the cache's checks; `now` (UTC) is the time keys expire by.
    """

    def __init__(
        self,
        database: Database,
        *,
        redis_url: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        self._database = database
        self._now = now
        self._versions = KeyVersions(database, redis_url)
        self.cache: KeyCache[Principal] = KeyCache(self._versions, clock=clock)

    async def close(self) -> None:
        """Close the connection to Redis, if any."""
        await self._versions.close()

    async def create(
        self,
        name: str,
        *,
        scopes: tuple[str, ...] = DEFAULT_SCOPES,
        tenant: str = DEFAULT_TENANT,
        secret: str | None = None,
        rate_limit: str | None = None,
        token_limit: str | None = None,
    ) -> NewKey:
        """Create a key; `secret` imports a key chosen elsewhere, listed by a hash fragment.

        `rate_limit` and `token_limit` (`60/minute`, `100000/day`) replace the server's limits
        for this key.
        """
        stored_scopes = _check_scopes(scopes)
        if not name.strip():
            raise ValueError("a key needs a name")
        if not tenant.strip():
            raise ValueError("a key needs a tenant")
        if tenant.strip().startswith("@"):
            raise ValueError(
                f"tenants starting with @ are reserved ({USERS_TENANT} holds the data of the "
                "users who sign in with OAuth)"
            )
        check_admin_tenant(stored_scopes.split(), tenant)
        rate, tokens = _rate(rate_limit, "rate limit"), _rate(token_limit, "token limit")
        imported = secret is not None
        secret = secret or generate_secret()
        if len(secret) < MIN_KEY_LENGTH:
            raise ValueError(f"a key must be at least {MIN_KEY_LENGTH} characters long")
        digest = hash_key(secret)
        record = ApiKey(
            id=uuid.uuid4().hex,
            name=name.strip(),
            prefix=hash_fragment(digest) if imported else secret[:VISIBLE_PREFIX_LENGTH],
            key_hash=digest,
            tenant=tenant.strip(),
            scopes=stored_scopes,
            imported=imported,
            rate_limit=str(rate) if rate else None,
            token_limit=str(tokens) if tokens else None,
        )
        async with self._database.session() as session:
            await queries.add_key(session, record)
        return NewKey(secret=secret, info=_info(record))

    async def authenticate(self, secret: str) -> Principal | None:
        """The principal for a key, or None when it is unknown or revoked."""
        digest = hash_key(secret)
        cached = await self.cache.get(digest)
        if cached is not None:
            # An expiry needs no revocation to reach the caches: each cached key carries its own.
            if cached.expires_at is not None and cached.expires_at <= self._now():
                return None
            return cached
        generation = self.cache.generation
        async with self._database.session() as session:
            key = await queries.key_by_hash(session, digest)
        # The lookup is by an index on the hash; the comparison below is constant-time anyway.
        if key is None or not hmac.compare_digest(key.key_hash, digest):
            return None
        if _stopped_at(key, self._now()) is not None:
            return None
        principal = Principal(
            key.id,
            key.name,
            key.tenant,
            frozenset(key.scopes.split()),
            rate_limit=_rate(key.rate_limit, "rate limit"),
            token_limit=_rate(key.token_limit, "token limit"),
            expires_at=queries.as_utc(key.expires_at) if key.expires_at else None,
        )
        self.cache.put(digest, principal, generation)
        return principal

    async def list(self) -> list[KeyInfo]:
        """Every key, without its secret."""
        async with self._database.session() as session:
            return [_info(key) for key in await queries.list_keys(session)]

    async def revoke(self, id_or_prefix: str) -> Revocation | None:
        """Revoke a key by id or visible prefix; None when no key has it.

        Raises AmbiguousKey, revoking nothing, when several keys share the prefix. A key whose
        grace period is over was revoked then.
        """
        now = self._now()
        async with self._database.session() as session:
            key = await _find(session, id_or_prefix)
            if key is None:
                return None
            already = _stopped_at(key, now) is not None
            if not already:
                key.revoked_at = now
                await queries.bump_key_version(session)
            revocation = Revocation(_info(key, now), already)
        if not already:
            await self._revoked()
        return revocation

    async def rotate(self, id_or_prefix: str, *, grace: timedelta | None = None) -> Rotation | None:
        """A new key with the old one's name, tenant, scopes and limits; None when no key has
        the id or prefix. The old key is revoked at once, or stops working after `grace`.

        Raises AmbiguousKey, and KeyUnchangeable for a key revoked, rotated already (in its
        grace period), imported (GPTACTIONS_API_KEY: the variable is what replaces it), or
        with the admin scope and a tenant other than DEFAULT_TENANT (its successor would be too).
        """
        now = self._now()
        secret = generate_secret()
        async with self._database.session() as session:
            old = await _find(session, id_or_prefix)
            if old is None:
                return None
            _check_changeable(old, now, "rotated")
            if old.imported:
                raise KeyUnchangeable(
                    f"{old.prefix} ({old.name}, id {old.id}) is GPTACTIONS_API_KEY's: set a new "
                    "value there, and the next start replaces it (or create a key and revoke it)"
                )
            if old.expires_at is not None:
                raise KeyUnchangeable(
                    f"{old.prefix}… ({old.name}, id {old.id}) was rotated already and stops "
                    f"working at {queries.as_utc(old.expires_at):%Y-%m-%d %H:%M:%S} UTC: rotate "
                    "its successor, or revoke it now"
                )
            if "admin" in old.scopes.split() and old.tenant != DEFAULT_TENANT:
                raise KeyUnchangeable(
                    _admin_of_one_tenant(old.tenant, f"`keys update {old.id} --scope logs`")
                    + ", then rotate it"
                )
            new = ApiKey(
                id=uuid.uuid4().hex,
                name=old.name,
                prefix=secret[:VISIBLE_PREFIX_LENGTH],
                key_hash=hash_key(secret),
                tenant=old.tenant,
                scopes=old.scopes,
                rate_limit=old.rate_limit,
                token_limit=old.token_limit,
                created_at=now,
            )
            await queries.add_key(session, new)
            if grace:
                old.expires_at = now + grace
            else:
                old.revoked_at = now
            # With a grace period too: the caches re-read the old key, and learn its expiry.
            await queries.bump_key_version(session)
            rotation = Rotation(_info(old, now), NewKey(secret, _info(new, now)))
        await self._revoked()
        return rotation

    async def update(
        self,
        id_or_prefix: str,
        *,
        name: str | None = None,
        scopes: tuple[str, ...] | None = None,
        rate_limit: str | None = None,
        token_limit: str | None = None,
    ) -> KeyInfo | None:
        """Change what is given of a key's name, scopes and limits; None when no key has the id
        or prefix. A limit of SERVER_LIMIT (`default`) returns the key to the server's limit.

        Raises AmbiguousKey, InvalidScope or ValueError (nothing changed), AdminOfOneTenant when
        the key would have the admin scope and a tenant other than DEFAULT_TENANT, and
        KeyUnchangeable for a revoked key. Every server's cache forgets the key, as on a revocation.
        """
        if scopes is not None and not scopes:
            raise InvalidScope("a key needs at least one scope")
        stored_scopes = _check_scopes(scopes) if scopes is not None else None
        if name is not None and not name.strip():
            raise ValueError("a key needs a name")
        limits = {
            column: None if text == SERVER_LIMIT else str(_rate(text, what))
            for column, text, what in (
                ("rate_limit", rate_limit, "rate limit"),
                ("token_limit", token_limit, "token limit"),
            )
            if text is not None
        }
        now = self._now()
        async with self._database.session() as session:
            key = await _find(session, id_or_prefix)
            if key is None:
                return None
            _check_changeable(key, now, "updated")
            if "admin" in (stored_scopes or key.scopes).split() and key.tenant != DEFAULT_TENANT:
                raise AdminOfOneTenant(
                    _admin_of_one_tenant(key.tenant, f"`keys update {key.id} --scope logs`")
                )
            before = (key.name, key.scopes, key.rate_limit, key.token_limit)
            if name is not None:
                key.name = name.strip()
            if stored_scopes is not None:
                key.scopes = stored_scopes
            for column, value in limits.items():
                setattr(key, column, value)
            changed = before != (key.name, key.scopes, key.rate_limit, key.token_limit)
            if changed:
                await queries.bump_key_version(session)
            info = _info(key, now)
        if changed:
            await self._revoked()  # the cached principals hold the old scopes and limits
        return info

    async def _revoked(self) -> None:
        """After a revocation committed: forget cached keys here, and tell Redis's readers."""
        self.cache.forget()
        await self._versions.bumped()

    async def ensure_bootstrap_key(
        self, configured: str | None, *, may_generate: bool = True, report_found: bool = True
    ) -> NewKey | None:
        """On start-up, import GPTACTIONS_API_KEY, or create the first admin key if there is none.

        An imported key replaces the one imported before, which is revoked (and logged), so the
        previous value of the variable stops working (`report_found`: that the key was found
        as it was is logged at INFO, else at DEBUG). Returns the new key when one was created,
        so the caller can show it once. With `may_generate=False` (production), a missing key is
        an error instead of a printed secret.
        """
        if configured:
            return await self._import(configured, report_found)
        async with self._database.session() as session:
            if await queries.count_keys(session):
                return None
        if not may_generate:
            raise NoKeys(
                "no API key exists and GPTACTIONS_ENVIRONMENT=production never prints one: "
                "set GPTACTIONS_API_KEY, or run `gptactions keys create --name admin --admin`"
            )
        return await self.create("admin", scopes=SCOPES)

    async def _import(self, configured: str, report_found: bool) -> NewKey | None:
        digest = hash_key(configured)
        async with self._database.session() as session:
            known = await queries.key_by_hash(session, digest)
            if known is not None:
                _adopt(known, report_found)
                # Set back to an older value (one it replaced, revoked since): the value it
                # replaced in turn stops working all the same.
                revoked = await _revoke_other_imports(session, known.id)
        if known is not None:
            if revoked:
                await self._revoked()
            return None
        try:
            created = await self.create("admin", scopes=SCOPES, secret=configured)
        except IntegrityError:
            return None  # another process starting together imported it first
        async with self._database.session() as session:
            revoked = await _revoke_other_imports(session, created.info.id)
        if revoked:
            await self._revoked()
        return created


async def _revoke_other_imports(session: AsyncSession, keep: str) -> bool:
    """Revoke (and log) every working imported key but `keep`, GPTACTIONS_API_KEY's own: the
    values the variable held before. Whether any was revoked (the key version bumped)."""
    revoked = False
    for old in await queries.active_imported_keys(session):
        if old.id != keep:
            old.revoked_at = utcnow()
            revoked = True
            log.warning(
                "GPTACTIONS_API_KEY changed: the key it imported before (%s, id %s) is revoked",
                old.prefix,
                old.id,
            )
    if revoked:
        await queries.bump_key_version(session)
    return revoked


async def _find(session: AsyncSession, id_or_prefix: str) -> ApiKey | None:
    """The one key with this id or visible prefix; None for none, AmbiguousKey for several."""
    found = await queries.keys_by_id_or_prefix(session, id_or_prefix)
    exact = [key for key in found if key.id == id_or_prefix]
    if exact:
        found = exact
    if not found:
        return None
    if len(found) > 1:
        raise AmbiguousKey(id_or_prefix, [_info(key) for key in found])
    return found[0]


def _check_changeable(key: ApiKey, now: datetime, done: str) -> None:
    """KeyUnchangeable when the key no longer works (revoked, or its grace period over)."""
    stopped = _stopped_at(key, now)
    if stopped is not None:
        raise KeyUnchangeable(
            f"{key.prefix}… ({key.name}, id {key.id}) was revoked on "
            f"{stopped:%Y-%m-%d %H:%M} UTC and cannot be {done}: create a new key"
        )


def _adopt(key: ApiKey, report: bool = True) -> None:
    """The row GPTACTIONS_API_KEY names is the imported key, whatever an older version recorded.

    Databases from before keys were marked may hold an imported key that starts with `gpta_`;
    once the server starts with it, it is marked, so the next value of the variable replaces it.
    What was found is said (`report`) once a start, by `serve`'s first step, not by each server.
    """
    if key.revoked_at is not None:
        log.log(
            logging.WARNING if report else logging.DEBUG,
            "GPTACTIONS_API_KEY is a revoked key (%s, id %s): it stays revoked; set a new one",
            key.prefix,
            key.id,
        )
        return
    if not key.imported and "admin" in key.scopes.split():
        key.imported = True
        key.prefix = hash_fragment(key.key_hash)
    log.log(
        logging.INFO if report else logging.DEBUG,
        "found GPTACTIONS_API_KEY's key %s, imported before",
        hash_fragment(key.key_hash),
    )
