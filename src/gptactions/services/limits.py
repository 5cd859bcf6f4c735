"""Request rate limits per API key: in memory for one process, in Redis across replicas."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Protocol

from gptactions.config import Rate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decision:
    """Whether a request may go on, and what is left of the window."""

    allowed: bool
    limit: int
    remaining: int
    reset_after: int  # seconds until the window starts over


class RateLimiter(Protocol):
    """Counts requests per key in fixed windows."""

    rate: Rate

    async def hit(self, key: str) -> Decision:
        """Count one request for `key` and say whether it is allowed."""

    async def close(self) -> None:
        """Release connections."""


def _window(rate: Rate, now: float) -> tuple[int, int]:
    index = int(now // rate.period)
    reset_after = max(1, math.ceil((index + 1) * rate.period - now))
    return index, reset_after


class MemoryRateLimiter:
    """Fixed windows counted in this process; right for one process, too lax for several."""

    def __init__(self, rate: Rate) -> None:
        self.rate = rate
        self._counts: dict[str, tuple[int, int]] = {}

    async def hit(self, key: str) -> Decision:
        """Count and decide."""
        index, reset_after = _window(self.rate, time.time())
        window, count = self._counts.get(key, (index, 0))
        count = count + 1 if window == index else 1
        self._counts[key] = (index, count)
        if len(self._counts) > 100_000:  # bound memory: drop keys of past windows
            self._counts = {k: v for k, v in self._counts.items() if v[0] == index}
        return Decision(
            count <= self.rate.limit, self.rate.limit, max(0, self.rate.limit - count), reset_after
        )

    async def close(self) -> None:
        """Nothing to release."""


class RedisRateLimiter:
    """Fixed windows counted in Redis, shared by every replica.

    When Redis cannot be reached the request is let through and a warning logged: a limiter
    outage should not become an API outage.
    """

    def __init__(self, rate: Rate, url: str, *, prefix: str = "gptactions:rate:") -> None:
        import redis.asyncio as redis

        self.rate = rate
        self._redis: Any = redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        self._prefix = prefix

    async def hit(self, key: str) -> Decision:
        """Count and decide."""
        index, reset_after = _window(self.rate, time.time())
        name = f"{self._prefix}{key}:{index}"
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.incr(name)
                pipe.expire(name, self.rate.period + 1)
                count, _ = await pipe.execute()
        except Exception as error:  # fail open, loudly
            log.warning(
                "rate limiter: Redis unavailable (%s); request allowed", type(error).__name__
            )
            return Decision(True, self.rate.limit, self.rate.limit, reset_after)
        count = int(count)
        return Decision(
            count <= self.rate.limit, self.rate.limit, max(0, self.rate.limit - count), reset_after
        )

    async def close(self) -> None:
        """Close the connection pool."""
        await self._redis.aclose()


def build_limiter(
    rate: str | None, redis_url: str | None, *, prefix: str = "gptactions:rate:"
) -> RateLimiter | None:
    """The limiter the settings ask for, or None for no limit."""
    if not rate:
        return None
    parsed = Rate.parse(rate)
    if redis_url:
        return RedisRateLimiter(parsed, redis_url, prefix=prefix)
    return MemoryRateLimiter(parsed)
