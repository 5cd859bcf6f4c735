"""End users who sign in through OAuth: local accounts with argon2-hashed passwords."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import re
import time
import uuid
from dataclasses import dataclass
from datetime import datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.exc import IntegrityError

from gptactions.config import Rate
from gptactions.services.keys import USERS_TENANT
from gptactions.services.limits import RateLimiter, Reservation
from gptactions.store import accounts, queries
from gptactions.store.db import Database
from gptactions.store.models import User, UserIdentity, utcnow

log = logging.getLogger(__name__)

MAX_USERNAME_LENGTH = 64
USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
MIN_PASSWORD_LENGTH = 8
_HASHER = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the username is unknown, so both cases take the same time. Made
    on first use: an argon2 hash costs ~0.1 s, which every process (each command) paid at import."""
    return _HASHER.hash("not a password of anyone")


def _verify(stored: str | None, password: str) -> bool:
    """Whether `password` matches `stored`, checked in a thread. A user without a password
    (unknown, or one of a provider's: NO_PASSWORD) is checked against the dummy hash and never
    matches: every refusal takes an argon2 verification's time, so the time of an answer does
    not tell which usernames exist."""
    usable = stored is not None and stored.startswith("$argon2")
    try:
        _HASHER.verify(stored if usable and stored else _dummy_hash(), password)
    except (VerificationError, InvalidHashError):
        return False
    return usable


Held = list[Reservation]
"""Failures counted ahead of a password's check, one reservation of 1 per counter."""


async def _release(held: Held) -> None:
    """Take back failures counted ahead (a right password, or an attempt refused), in the
    windows they were counted in while those last (`Reservation.release`)."""
    for failure in held:
        await failure.release()


# The password hash of a user who signs in only through an OpenID Connect provider: argon2
# refuses it as a hash, so no password ever matches it.
NO_PASSWORD = "!external"  # noqa: S105 (a marker that is no hash, not a secret)


@dataclass(frozen=True)
class UserInfo:
    """A user as listed: never the password hash."""

    id: str
    username: str
    created_at: datetime
    disabled_at: datetime | None


class InvalidUser(ValueError):
    """A username or password that cannot be used."""


class TooManyAttempts(Exception):
    """Sign-in attempts passed the rate limit; `retry_after` is in seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many sign-in attempts; try again in {retry_after} s")
        self.retry_after = retry_after


class UserDisabled(Exception):
    """The account exists but was disabled by an administrator."""


def external_usernames(wanted: str | None, issuer: str, subject: str) -> tuple[str, str]:
    """The username to give a new user from a provider, and the one to take when it is taken.

    The first is the claim itself when it is a valid username; the second adds a tag derived
    from the identity, so a provider's user never takes over a local account of the same name.
    """
    tag = hashlib.sha256(f"{issuer} {subject}".encode()).hexdigest()[:8]
    base = re.sub(r"[^A-Za-z0-9._@-]+", "-", wanted or "").lstrip("._@-")[:55]
    fallback = f"{base}-{tag}" if base else f"user-{tag}"
    return (base if base and USERNAME.match(base) else fallback), fallback


def _info(user: User) -> UserInfo:
    return UserInfo(
        id=user.id,
        username=user.username,
        created_at=queries.as_utc(user.created_at),
        disabled_at=queries.as_utc(user.disabled_at) if user.disabled_at else None,
    )


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidUser(f"a password must be at least {MIN_PASSWORD_LENGTH} characters long")


@dataclass(frozen=True)
class Enabled:
    """A user enabled; `was_disabled_at`: since when they had been disabled (None: not)."""

    info: UserInfo
    was_disabled_at: datetime | None


@dataclass(frozen=True)
class PasswordChange:
    """A user's new password set, and how many of their tokens that revoked."""

    info: UserInfo
    revoked_tokens: int


@dataclass(frozen=True)
class DeletedUser:
    """A deleted user, and how much of their data went with them."""

    info: UserInfo
    conversations: int
    interactions: int


class UserService:
    """Creates, lists, disables, enables and deletes users, and sets and checks passwords."""

    def __init__(self, database: Database, limiter: RateLimiter | None = None) -> None:
        self._database = database
        self._limiter = limiter

    async def create(self, username: str, password: str) -> UserInfo:
        """Create a user; the password is stored only as an argon2 hash."""
        if not USERNAME.match(username):
            raise InvalidUser(
                "a username is 1 to 64 letters, digits and . _ @ -, starting with a letter or digit"
            )
        _check_password(password)
        password_hash = await asyncio.to_thread(_HASHER.hash, password)
        async with self._database.session() as session:
            if await accounts.user_by_name(session, username) is not None:
                raise InvalidUser(f"the user {username!r} already exists")
            user = await accounts.add_user(
                session, User(id=uuid.uuid4().hex, username=username, password_hash=password_hash)
            )
            return _info(user)

    async def list(self) -> list[UserInfo]:
        """Every user."""
        async with self._database.session() as session:
            return [_info(user) for user in await accounts.list_users(session)]

    async def disable(self, username: str) -> UserInfo | None:
        """Stop a user from signing in, and revoke their tokens."""
        async with self._database.session() as session:
            user = await accounts.user_by_name(session, username)
            if user is None:
                return None
            if user.disabled_at is None:
                user.disabled_at = utcnow()
            await accounts.revoke_user_tokens(session, user.id)
            return _info(user)

    async def get(self, username: str) -> UserInfo | None:
        """The user with this username, if there is one."""
        async with self._database.session() as session:
            user = await accounts.user_by_name(session, username)
            return _info(user) if user else None

    async def enable(self, username: str) -> Enabled | None:
        """Let a disabled user sign in again; their tokens stay revoked (they sign in anew)."""
        async with self._database.session() as session:
            user = await accounts.user_by_name(session, username)
            if user is None:
                return None
            was = queries.as_utc(user.disabled_at) if user.disabled_at else None
            user.disabled_at = None
            return Enabled(_info(user), was)

    async def set_password(self, username: str, password: str) -> PasswordChange | None:
        """Replace a user's password, and revoke their tokens and unused codes: whoever signed in
        with the old one is signed out. None when there is no such user."""
        _check_password(password)
        password_hash = await asyncio.to_thread(_HASHER.hash, password)
        async with self._database.session() as session:
            user = await accounts.user_by_name(session, username)
            if user is None:
                return None
            user.password_hash = password_hash
            revoked = await accounts.revoke_user_tokens(session, user.id)
            # A sign-in with the old password may be midway (consent given, code not redeemed).
            await accounts.discard_user_codes(session, user.id)
            info = _info(user)
        log.info("the password of user %r was changed: %d token(s) revoked", username, revoked)
        return PasswordChange(info, revoked)

    async def delete(self, username: str) -> DeletedUser | None:
        """Delete a user's account, tokens and data (conversations and interactions), in one
        transaction: a user created later under the same name starts with nothing of theirs
        (their data stayed under the name, and a new "alice" inherited the old one's)."""
        async with self._database.session() as session:
            user = await accounts.user_by_name(session, username)
            if user is None:
                return None
            info = _info(user)
            conversations, interactions = await accounts.erase_user_data(
                session, USERS_TENANT, user.username
            )
            await accounts.delete_user(session, user)
        log.warning(
            "deleted user %r with their data: %d conversations, %d interactions",
            username,
            conversations,
            interactions,
        )
        return DeletedUser(info, conversations, interactions)

    async def sign_in(self, username: str, password: str, *, address: str) -> UserInfo | None:
        """The user when the password is right and the account enabled; None otherwise.

        Every attempt counts against the client address (at GPTACTIONS_LOGIN_RATE_LIMIT). A
        username that cannot be one is refused as a wrong password, before anything is counted
        under it. Failures (not successes) count per username and client address at the limit,
        and per username alone at `USER_FAILURES_FACTOR` times it: one address guessing is
        stopped soon, and guessers at many addresses are slowed without one address's failures
        locking the user out elsewhere. Past a limit this raises TooManyAttempts without
        checking the password.
        """
        await self.throttle(f"address:{address}")
        if len(username) > MAX_USERNAME_LENGTH or not USERNAME.fullmatch(username):
            await asyncio.to_thread(_verify, None, password)  # the time of a wrong password
            return None
        held = await self._hold_failure(username.lower(), address)
        async with self._database.session() as session:
            user = await accounts.user_by_name(session, username)
        matches = await asyncio.to_thread(
            _verify, user.password_hash if user is not None else None, password
        )
        if not matches or user is None or user.disabled_at is not None:
            return None  # the failure stays counted
        await _release(held)
        return _info(user)

    USER_FAILURES_FACTOR = 10
    """How many times the sign-in limit a username's failures from all addresses may reach."""

    def _failure_rates(self, name: str, address: str) -> tuple[tuple[str, Rate], ...]:
        """The failure counters of an attempt: (username, address) strict, username looser."""
        rate = self._limiter.default if self._limiter is not None else None
        if rate is None:
            return ()
        looser = Rate(rate.limit * self.USER_FAILURES_FACTOR, rate.period)
        return ((f"failed:{name}:{address}", rate), (f"failed:{name}", looser))

    async def _hold_failure(self, name: str, address: str) -> Held:
        """Count the attempt as a failure under each of its counters, as it will be unless the
        password is right (counted first, so attempts at once cannot pass the limit together),
        each held as a reservation of 1 that a right password gives back (`_release`);
        TooManyAttempts, with nothing left counted, when one was at its limit already."""
        counter = self._limiter.counter if self._limiter is not None else None
        held: Held = []
        if counter is None:
            return held
        for key, rate in self._failure_rates(name, address):
            at = time.time()
            count, reset_after = await counter.add(key, rate, 1, at=at)
            held.append(Reservation(counter, key, rate, at, 1))
            if count > rate.limit:
                await _release(held)
                raise TooManyAttempts(reset_after)
        return held

    async def throttle(self, *keys: str) -> None:
        """Count a sign-in attempt under each key; TooManyAttempts past the limit of one."""
        if self._limiter is None:
            return
        for key in keys:
            decision = await self._limiter.hit(key)
            if decision is not None and not decision.allowed:
                raise TooManyAttempts(decision.reset_after)

    async def sign_in_external(
        self, issuer: str, subject: str, wanted_username: str | None
    ) -> UserInfo:
        """The user linked to a provider's subject, created (and linked) on first sign-in.

        Raises UserDisabled for a disabled account. The link is by issuer and subject, never by
        name or email: those can change at the provider, or name someone else here.
        """
        for _attempt in range(2):
            try:
                return await self._external(issuer, subject, wanted_username)
            except IntegrityError:
                continue  # a concurrent first sign-in of the same identity (or name) won
        raise InvalidUser("could not create a user for this identity; try again")

    async def _external(self, issuer: str, subject: str, wanted: str | None) -> UserInfo:
        async with self._database.session() as session:
            user = await accounts.user_by_identity(session, issuer, subject)
            if user is None:
                first, fallback = external_usernames(wanted, issuer, subject)
                username = first
                if await accounts.user_by_name(session, first) is not None:
                    username = fallback
                user = await accounts.add_user(
                    session, User(id=uuid.uuid4().hex, username=username, password_hash=NO_PASSWORD)
                )
                await accounts.add_identity(
                    session,
                    UserIdentity(
                        id=uuid.uuid4().hex, issuer=issuer, subject=subject, user_id=user.id
                    ),
                )
            if user.disabled_at is not None:
                raise UserDisabled(f"the account {user.username!r} is disabled")
            return _info(user)

    async def close(self) -> None:
        """Release the attempt counter's connections."""
        if self._limiter is not None:
            await self._limiter.close()

    async def by_id(self, user_id: str) -> UserInfo | None:
        """The user with this id, if it exists."""
        async with self._database.session() as session:
            user = await accounts.user_by_id(session, user_id)
            return _info(user) if user else None
