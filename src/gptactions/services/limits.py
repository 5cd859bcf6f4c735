"""Limits per caller in fixed windows: requests (the rate limit) and tokens (the token limit).

Windows are counted in this process, or in Redis when GPTACTIONS_REDIS_URL is set, shared by
every replica. A caller is an API key, or the user of an OAuth access token: every GPT a user
signs in to shares that user's budget, and the users of one GPT do not share one.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

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

    async def add(self, name: str, rate: Rate, amount: int) -> tuple[int, int]:
        """Add `amount` (0 to read) to the current window: its count then, and its seconds left."""

    async def close(self) -> None:
        """Release connections."""


def _window(rate: Rate, now: float) -> tuple[int, int]:
    index = int(now // rate.period)
    reset_after = max(1, math.ceil((index + 1) * rate.period - now))
    return index, reset_after


class MemoryCounter:
    """Windows counted in this process; right for one process, too lax for several."""

    MAX_NAMES = 100_000

    def __init__(self) -> None:
        self._counts: dict[tuple[str, int], tuple[int, int]] = {}

    async def add(self, name: str, rate: Rate, amount: int) -> tuple[int, int]:
        """Count and say where the window stands."""
        now = time.time()
        index, reset_after = _window(rate, now)
        slot = (name, rate.period)
        window, count = self._counts.get(slot, (index, 0))
        count = (count if window == index else 0) + amount
        self._counts[slot] = (index, count)
        if len(self._counts) > self.MAX_NAMES:  # bound memory: drop the windows that are over
            self._counts = {
                (n, period): (i, c)
                for (n, period), (i, c) in self._counts.items()
                if i == int(now // period)
            }
        return count, reset_after

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

    async def add(self, name: str, rate: Rate, amount: int) -> tuple[int, int]:
        """Count in Redis, or in this process while Redis is unreachable."""
        if self._down:
            now = self._clock()
            if now < self._retry_at:
                return await self._fallback.add(name, rate, amount)
            self._retry_at = now + self.RETRY_EVERY  # this request tries; the others go on
        index, reset_after = _window(rate, time.time())
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
            return await self._fallback.add(name, rate, amount)
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


class TokenQuota:
    """Tokens (prompt + completion) per caller in fixed windows (GPTACTIONS_TOKEN_LIMIT).

    A reply's tokens are counted once it is recorded, so a call is refused only when the window
    is already used up: the last reply of a window may go past the limit by its own size. The
    command line's own caller (the operator at the terminal) is not limited.
    """

    def __init__(self, default: Rate | None, counter: WindowCounter) -> None:
        self.default = default
        self._counter = counter

    def rate_for(self, principal: Principal) -> Rate | None:
        """The caller's limit: its key's own, else the server's; None for no limit."""
        if principal is TERMINAL:
            return None
        return principal.token_limit or self.default

    async def check(self, principal: Principal) -> None:
        """Raise a 429 when the caller's window is used up, before anything is generated."""
        rate = self.rate_for(principal)
        if rate is None:
            return
        used, wait = await self._counter.add(f"tokens:{caller_name(principal)}", rate, 0)
        if used >= rate.limit:
            raise ServiceError(
                f"token limit {rate} reached for this {caller_kind(principal)}; retry in {wait} s",
                429,
                "token_limit_exceeded",
                headers={"Retry-After": str(wait)},
            )

    async def charge(self, principal: Principal, tokens: int) -> None:
        """Count a recorded reply's tokens against the caller's window."""
        rate = self.rate_for(principal)
        if rate is not None and tokens > 0:
            await self._counter.add(f"tokens:{caller_name(principal)}", rate, tokens)
