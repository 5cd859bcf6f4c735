"""Limits per caller in fixed windows: requests (the rate limit) and tokens (the token limit).

Windows are counted in this process, or in Redis when GPTACTIONS_REDIS_URL is set, shared by
every replica. A caller is an API key, or the user of an OAuth access token: every GPT a user
signs in to shares that user's budget, and the users of one GPT do not share one. A request that
generates reserves its worst case in the caller's token window while it runs (`Reservation`).
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import anyio

from gptactions.config import Rate
from gptactions.llm.redact import safe_url
from gptactions.services.errors import ServiceError
from gptactions.services.keys import TERMINAL, Principal

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decision:
    """Whether a request may go on, and what is left of the window."""

    allowed: bool
    limit: int
    remaining: int
    reset_after: int  # seconds until the window starts over


class WindowCounter(Protocol):
    """Counts per name in the fixed windows of a rate."""

    async def add(
        self, name: str, rate: Rate, amount: int, *, at: float | None = None
    ) -> tuple[int, int]:
        """Add `amount` (0 to read, below 0 to take back) to the current window, or to the one
        holding the time `at` (a reservation's own): its count then, and its seconds left.

        Atomic: the count returned is the one this addition made."""

    async def close(self) -> None:
        """Release connections."""


def _window(rate: Rate, now: float, at: float | None = None) -> tuple[int, int]:
    """The window counted in (the current one, or the one holding the time `at`), and the
    seconds until the current one ends."""
    index = _index(rate, now)
    reset_after = max(1, math.ceil((index + 1) * rate.period - now))
    return (index if at is None else _index(rate, at)), reset_after


def _index(rate: Rate, at: float) -> int:
    """The window of `rate` that holds the time `at`."""
    return int(at // rate.period)


class MemoryCounter:
    """Windows counted in this process; right for one process, too lax for several.

    Bounded: a name keeps one window per period (the current one replaces a finished one), the
    names whose windows are over are dropped as time passes (the least recently counted first,
    a few on each count), a name longer than `MAX_NAME` is kept as its digest, and past
    `MAX_NAMES` the least recently counted name goes (its window forgotten, which errs on the
    side of allowing, but memory stays bounded whatever names callers make up).
    """

    MAX_NAMES = 100_000
    MAX_NAME = 256
    SWEEP = 64  # finished windows dropped at most on each count

    def __init__(self) -> None:
        # (name, period) -> (window index, count), the least recently counted first.
        self._counts: OrderedDict[tuple[str, int], tuple[int, int]] = OrderedDict()

    def __len__(self) -> int:
        """The windows held."""
        return len(self._counts)

    async def add(
        self, name: str, rate: Rate, amount: int, *, at: float | None = None
    ) -> tuple[int, int]:
        """Count and say where the window stands; a window that a later one has replaced is
        over and is left as it is, and a count never goes below 0."""
        now = time.time()
        index, reset_after = _window(rate, now, at)
        if len(name) > self.MAX_NAME:
            name = "sha256:" + hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()
        slot = (name, rate.period)
        window, count = self._counts.get(slot, (index, 0))
        if window > index:
            return count, reset_after
        count = max(0, (count if window == index else 0) + amount)
        self._counts[slot] = (index, count)
        self._counts.move_to_end(slot)
        self._sweep(now)
        return count, reset_after

    def _sweep(self, now: float) -> None:
        """Drop the least recently counted windows that are over, and any beyond MAX_NAMES."""
        counts = self._counts
        while len(counts) > self.MAX_NAMES:
            counts.popitem(last=False)
        for _ in range(self.SWEEP):
            if not counts:
                return
            (_name, period), (window, _count) = next(iter(counts.items()))
            if window >= int(now // period):
                return
            counts.popitem(last=False)

    async def close(self) -> None:
        """Nothing to release."""


class RedisCounter:
    """Windows counted in Redis, shared by every replica.

    When Redis cannot be reached, counting goes on in this process (each replica then allows
    its own budget): a limiter outage should not become an API outage, nor switch limits off.
    One warning says so when the outage begins, one line when Redis is back. While it is down,
    one request every `RETRY_EVERY` seconds tries it again, and the others do not wait: a Redis
    that accepts connections but never answers would otherwise add its timeout to every request.
    """

    RETRY_EVERY = 5.0
    TIMEOUT = 1.0

    def __init__(
        self, url: str, *, prefix: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        import redis.asyncio as redis

        self._redis: Any = redis.from_url(
            url, socket_timeout=self.TIMEOUT, socket_connect_timeout=self.TIMEOUT
        )
        self._location = safe_url(url)
        self._prefix = prefix
        self._fallback = MemoryCounter()
        self._clock = clock
        self._down = False
        self._retry_at = 0.0

    async def add(
        self, name: str, rate: Rate, amount: int, *, at: float | None = None
    ) -> tuple[int, int]:
        """Count in Redis, or in this process while Redis is unreachable."""
        if self._down:
            now = self._clock()
            if now < self._retry_at:
                return await self._fallback.add(name, rate, amount, at=at)
            self._retry_at = now + self.RETRY_EVERY  # this request tries; the others go on
        index, reset_after = _window(rate, time.time(), at)
        key = f"{self._prefix}{name}:{rate.period}:{index}"
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.incrby(key, amount)
                pipe.expire(key, rate.period + 1)
                count, _ = await pipe.execute()
        except Exception as error:
            if not self._down:
                self._down = True
                self._retry_at = self._clock() + self.RETRY_EVERY
                log.warning(
                    "limits: Redis at %s unavailable (%s); counting in this process until it "
                    "is back (tried again every %s s)",
                    self._location,
                    str(error) or type(error).__name__,
                    self.RETRY_EVERY,
                )
            return await self._fallback.add(name, rate, amount, at=at)
        if self._down:
            self._down = False
            log.warning("limits: Redis is back; counts are shared by the replicas again")
        return int(count), reset_after

    async def close(self) -> None:
        """Close the connection pool."""
        await self._redis.aclose()


def build_counter(redis_url: str | None, *, prefix: str = "gptactions:limits:") -> WindowCounter:
    """Redis's counter when configured, else this process's."""
    return RedisCounter(redis_url, prefix=prefix) if redis_url else MemoryCounter()


class RateLimiter:
    """Requests per name in fixed windows: the rate given for a call, else the default one."""

    def __init__(self, default: Rate | None, counter: WindowCounter) -> None:
        self.default = default
        self._counter = counter

    @property
    def counter(self) -> WindowCounter:
        """Its windows: counted directly by who takes a count back (a sign-in that succeeds)."""
        return self._counter

    async def hit(self, name: str, rate: Rate | None = None) -> Decision | None:
        """Count one request and decide; None when no rate applies."""
        rate = rate or self.default
        if rate is None:
            return None
        count, reset_after = await self._counter.add(f"rate:{name}", rate, 1)
        return Decision(count <= rate.limit, rate.limit, max(0, rate.limit - count), reset_after)

    async def close(self) -> None:
        """Release the counter's connections."""
        await self._counter.close()


def build_limiter(
    rate: str | None, redis_url: str | None, *, prefix: str = "gptactions:limits:"
) -> RateLimiter | None:
    """A limiter at one rate (sign-in attempts, say), or None for no limit."""
    if not rate:
        return None
    return RateLimiter(Rate.parse(rate), build_counter(redis_url, prefix=prefix))


def caller_name(principal: Principal) -> str:
    """Whose budget a call counts against: the OAuth token's user, else the API key."""
    if principal.user_id is not None:
        return f"user:{principal.user_id}"
    return f"key:{principal.key_id}"


def caller_kind(principal: Principal) -> str:
    """`user` or `key`, for messages."""
    return "user" if principal.user_id is not None else "key"


async def check_rate(limiter: RateLimiter, principal: Principal) -> Decision | None:
    """Count one request of the caller; raise a 429 past the key's rate, else the default."""
    decision = await limiter.hit(caller_name(principal), principal.rate_limit)
    if decision is None or decision.allowed:
        return decision
    rate = principal.rate_limit or limiter.default
    wait = decision.reset_after
    raise ServiceError(
        f"rate limit {rate} reached for this {caller_kind(principal)}; retry in {wait} s",
        429,
        "rate_limited",
        headers={
            "Retry-After": str(wait),
            "RateLimit-Limit": str(decision.limit),
            "RateLimit-Remaining": "0",
            "RateLimit-Reset": str(wait),
        },
    )


def estimate_tokens(*texts: str) -> int:
    """The tokens of texts the model's tokenizer has not counted (yet): one for every four
    characters, rounded up, as OpenAI's rate limiter estimates a prompt's."""
    return -(-sum(len(text) for text in texts) // 4)


class Reservation:
    """The tokens a request in flight holds in its caller's window: its worst case (its prompt
    and the most it may generate), counted when it was admitted, so that the requests admitted
    beside it count them.

    `settle` puts the tokens the request used in their place, once its interaction is recorded;
    `release` takes them back when it ends with nothing recorded (refused after admission, a
    failure before the model ran, a cancel before any record). Whichever comes first does it,
    and a second call does nothing. Either changes the window that admitted the request only
    while it is the current one: once a new window has begun, the reservation stays in the
    window that admitted it (which is over) and nothing more is added, so a request that spans
    two windows counts in the first only, at its worst case. One never settled nor released (a
    streamed response that never ran) stays in its window until that ends: the limit errs on
    the side of refusing.
    """

    __slots__ = ("_at", "_counter", "_name", "_open", "_rate", "amount")

    def __init__(
        self, counter: WindowCounter, name: str, rate: Rate, at: float, amount: int
    ) -> None:
        self._counter = counter
        self._name = name
        self._rate = rate
        self._at = at  # when it was admitted: the window it is counted in
        self._open = True
        self.amount = amount
        """The tokens held."""

    @property
    def open(self) -> bool:
        """Whether the tokens are still held (neither settled nor released)."""
        return self._open

    async def resize(self, tokens: int) -> None:
        """Hold `tokens` instead, the worst case once the prompt is counted; the request is
        admitted already, so this is not checked against the limit again."""
        if not self._open or tokens == self.amount:
            return
        delta, self.amount = tokens - self.amount, tokens
        await self._add(delta)

    async def settle(self, tokens: int) -> None:
        """Count the `tokens` the request used in place of the reservation (once)."""
        if not self._open:
            return
        self._open = False
        await self._add(tokens - self.amount)

    async def release(self) -> None:
        """Take the reservation back: the request ended with nothing recorded (once)."""
        await self.settle(0)

    async def _add(self, delta: int) -> None:
        if delta == 0 or _index(self._rate, time.time()) != _index(self._rate, self._at):
            return
        # Shielded: a request being cancelled still gives its tokens back.
        with anyio.CancelScope(shield=True):
            await self._counter.add(self._name, self._rate, delta, at=self._at)


async def give_back(reservation: Reservation | None) -> None:
    """Give back what `reservation` still holds, if any: a call ending, however it ends (once
    recorded, the reservation is settled and this does nothing)."""
    if reservation is not None:
        await reservation.release()


class TokenQuota:
    """Tokens (prompt + completion) per caller in fixed windows (GPTACTIONS_TOKEN_LIMIT).

    As OpenAI's rate limiter counts a request's `max_tokens` and estimated prompt when it admits
    it: a request is admitted while the caller's window, with the tokens reserved by its
    requests in flight, is below the limit, and it then reserves its own worst case there in the
    same atomic addition (`reserve`); once the request is recorded, the tokens it used take the
    reservation's place (`Reservation`). However many requests run at once, a window so ends at
    most one request's worst case above the limit, as long as none uses more than it reserved
    when admitted: a prompt not yet counted is estimated (a character in four), and what the
    estimate leaves out (a conversation's history, an action's own instructions or its second
    attempt) is held only once counted, or not at all. The command line's own caller (the
    operator at the terminal) is not limited.
    """

    def __init__(self, default: Rate | None, counter: WindowCounter) -> None:
        self.default = default
        self._counter = counter

    def rate_for(self, principal: Principal) -> Rate | None:
        """The caller's limit: its key's own, else the server's; None for no limit."""
        if principal is TERMINAL:
            return None
        return principal.token_limit or self.default

    async def reserve(self, principal: Principal, tokens: int) -> Reservation | None:
        """Admit a request of the caller, holding its worst case (`tokens`) in the window; None
        when the caller has no limit. A 429, with nothing held, when the window was used up
        (the reservations of the requests in flight included) before this one's."""
        rate = self.rate_for(principal)
        if rate is None:
            return None
        name = f"tokens:{caller_name(principal)}"
        amount, at = max(0, tokens), time.time()
        used, wait = await self._counter.add(name, rate, amount, at=at)
        if used - amount >= rate.limit:
            if amount:
                with anyio.CancelScope(shield=True):
                    await self._counter.add(name, rate, -amount, at=at)
            raise _token_limit_reached(principal, rate, wait)
        return Reservation(self._counter, name, rate, at, amount)

    async def used(self, principal: Principal) -> int:
        """The tokens the caller's window holds: those used, and those its requests in flight
        reserve; 0 when it has no limit."""
        rate = self.rate_for(principal)
        if rate is None:
            return 0
        used, _ = await self._counter.add(f"tokens:{caller_name(principal)}", rate, 0)
        return used

    async def charge(self, principal: Principal, tokens: int) -> None:
        """Count tokens that no reservation holds (a reply recorded without one)."""
        rate = self.rate_for(principal)
        if rate is not None and tokens > 0:
            await self._counter.add(f"tokens:{caller_name(principal)}", rate, tokens)


def _token_limit_reached(principal: Principal, rate: Rate, wait: int) -> ServiceError:
    return ServiceError(
        f"token limit {rate} reached for this {caller_kind(principal)}; retry in {wait} s",
        429,
        "token_limit_exceeded",
        headers={"Retry-After": str(wait)},
    )
