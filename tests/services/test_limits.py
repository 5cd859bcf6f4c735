"""Rate limits per key: in memory, and in the real Redis on 127.0.0.1:6379 shared by replicas."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from pathlib import Path
from typing import cast

import pytest

from gptactions.config import Rate, Settings
from gptactions.llm.fake import FakeBackend
from gptactions.services import limits
from gptactions.services.errors import ServiceError
from gptactions.services.interactions import InteractionLog
from gptactions.services.keys import SCOPES, TERMINAL, Principal
from gptactions.services.limits import (
    MemoryCounter,
    RateLimiter,
    RedisCounter,
    Reservation,
    TokenQuota,
)
from gptactions.store.db import Database
from tests.conftest import ADMIN_KEY, REDIS_URL, redis_reachable, running_app

needs_redis = pytest.mark.skipif(
    not redis_reachable(), reason="Redis is not reachable on 127.0.0.1:6379"
)


@pytest.mark.parametrize(
    ("text", "rate"),
    [("60/minute", Rate(60, 60)), ("5 / seconds", Rate(5, 1)), ("1/day", Rate(1, 86400))],
)
def test_rates_parse(text: str, rate: Rate) -> None:
    assert Rate.parse(text) == rate


@pytest.mark.parametrize("text", ["", "60", "0/minute", "ten/minute", "5/fortnight"])
def test_bad_rates_are_refused_by_the_settings(text: str) -> None:
    with pytest.raises(ValueError):
        Rate.parse(text)
    if text:
        with pytest.raises(ValueError, match="rate"):
            Settings(rate_limit=text)


def test_rates_print_as_they_are_written() -> None:
    assert [str(Rate.parse(text)) for text in ("20000/minute", "5/seconds", "1/day")] == [
        "20000/minute",
        "5/second",
        "1/day",
    ]


async def allowed(limiter: RateLimiter, name: str, rate: Rate | None = None) -> bool:
    decision = await limiter.hit(name, rate)
    assert decision is not None
    return decision.allowed


async def test_memory_limiter_counts_per_key() -> None:
    limiter = RateLimiter(Rate(2, 3600), MemoryCounter())
    assert [await allowed(limiter, "a") for _ in range(3)] == [True, True, False]
    assert await allowed(limiter, "b")


async def test_the_memory_counter_stays_bounded_whatever_the_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(MemoryCounter, "MAX_NAMES", 100)
    counter = MemoryCounter()
    rate = Rate(5, 60)
    for n in range(1000):
        await counter.add(f"{n}" + "x" * 10_000, rate, 1)
    assert len(counter) == 100
    # Long names are kept as their digest, and the most recently counted ones stay.
    assert all(len(name) < 100 for name, _ in counter._counts)
    assert await counter.add("999" + "x" * 10_000, rate, 0) == (1, counter_reset(rate))


def counter_reset(rate: Rate) -> int:
    return limits._window(rate, time.time())[1]


async def test_the_memory_counter_drops_windows_that_are_over(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1_000_000.0]
    monkeypatch.setattr(limits.time, "time", lambda: now[0])
    counter = MemoryCounter()
    minute, day = Rate(5, 60), Rate(5, 86400)
    await counter.add("day", day, 1)
    for n in range(10):
        await counter.add(f"old{n}", minute, 1)
    now[0] += 120
    await counter.add("day", day, 1)  # counted again: the ended windows are now the oldest
    await counter.add("new", minute, 1)
    assert sorted(name for name, _ in counter._counts) == ["day", "new"]
    assert await counter.add("day", day, 0) == (2, counter_reset(day))


async def test_a_rate_given_for_a_call_replaces_the_default() -> None:
    limiter = RateLimiter(Rate(1, 3600), MemoryCounter())
    own = Rate(3, 3600)
    assert [await allowed(limiter, "a", own) for _ in range(4)] == [True, True, True, False]
    assert [await allowed(limiter, "b") for _ in range(2)] == [True, False]
    assert await RateLimiter(None, MemoryCounter()).hit("a") is None


async def test_the_api_answers_429_with_retry_after(tmp_path: Path) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'x.db'}", api_key=ADMIN_KEY, rate_limit="3/hour"
    )
    async with running_app(settings, FakeBackend()) as api:
        codes = [(await api.get("/api/v1/gpt/status")).status_code for _ in range(3)]
        limited = await api.get("/api/v1/gpt/status")
        other_key = await api.key()
        assert (await api.get("/api/v1/gpt/status", key=other_key)).status_code == 200
    assert codes == [200, 200, 200]
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(limited.headers["retry-after"]) <= 3600


@needs_redis
async def test_redis_limits_are_shared_by_replicas(tmp_path: Path) -> None:
    prefix = f"gptactions:test:{uuid.uuid4().hex}:"
    first, second = (
        RateLimiter(Rate(3, 3600), RedisCounter(REDIS_URL, prefix=prefix)),
        RateLimiter(Rate(3, 3600), RedisCounter(REDIS_URL, prefix=prefix)),
    )
    try:
        results = [await allowed(limiter, "key") for limiter in (first, second, first, second)]
    finally:
        await first.close()
        await second.close()
    assert results == [True, True, True, False]


@needs_redis
async def test_two_apps_on_one_redis_share_a_key_budget(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'shared.db'}"
    settings = Settings(
        database_url=database, api_key=ADMIN_KEY, rate_limit="4/hour", redis_url=REDIS_URL
    )
    # A fresh key id per run, so earlier runs' counts in Redis cannot interfere.
    async with (
        running_app(settings, FakeBackend()) as one,
        running_app(settings, FakeBackend()) as two,
    ):
        key = await one.key(name=uuid.uuid4().hex)
        codes = [
            (await app.get("/api/v1/gpt/status", key=key)).status_code
            for app in (one, two, one, two, one)
        ]
    assert codes == [200, 200, 200, 200, 429]


async def test_an_unreachable_redis_counts_in_the_process_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = "redis://:redis-password@127.0.0.1:1/0"
    limiter = RateLimiter(Rate(2, 60), RedisCounter(url, prefix="x:"))
    with caplog.at_level(logging.WARNING, logger="gptactions.services.limits"):
        try:
            results = [await allowed(limiter, "k") for _ in range(4)]
        finally:
            await limiter.close()
    assert results == [True, True, False, False]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "counting in this process" in warnings[0]
    # Where, and why, without the password.
    assert "redis://127.0.0.1:1/0 unavailable (" in warnings[0], warnings[0]
    assert "Connect call failed" in warnings[0] or "refused" in warnings[0].lower(), warnings[0]
    assert "redis-password" not in caplog.text


async def test_the_start_says_whether_redis_answers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """At start-up, not at the first request: an operator reading the log learns that limits
    are per process until Redis answers, and which Redis (no password)."""
    database = f"sqlite:///{tmp_path / 'start.db'}"
    unreachable = "redis://:redis-password@127.0.0.1:1/3"
    settings = Settings(database_url=database, api_key=ADMIN_KEY, redis_url=unreachable)
    with caplog.at_level(logging.INFO, logger="gptactions.runtime"):
        async with running_app(settings, FakeBackend()):
            pass
    said = [r.getMessage() for r in caplog.records if r.name == "gptactions.runtime"]
    [down] = [line for line in said if line.startswith("Redis at")]
    assert down.startswith("Redis at redis://127.0.0.1:1/3 is unreachable (")
    assert "limits are counted in each process" in down
    assert "redis-password" not in caplog.text
    if redis_reachable():
        caplog.clear()
        answered = settings.model_copy(update={"redis_url": REDIS_URL})
        with caplog.at_level(logging.INFO, logger="gptactions.runtime"):
            async with running_app(answered, FakeBackend()):
                pass
        assert "answers: limits are shared by every process using it" in caplog.text


async def test_a_redis_that_never_answers_costs_one_request_its_timeout_not_every_one() -> None:
    """A Redis that accepts connections and says nothing: one request waits out the timeout,
    then the others count in the process without asking it, until the next retry is due."""
    received: list[bytes] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            received.append(data)
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    now = [1000.0]
    counter = RedisCounter(f"redis://127.0.0.1:{port}/0", prefix="x:", clock=lambda: now[0])
    limiter = RateLimiter(Rate(3, 60), counter)
    try:
        assert await allowed(limiter, "k")  # waits out the timeout, then counts here
        asked = len(received)
        assert asked > 0
        results = await asyncio.gather(*(allowed(limiter, "k") for _ in range(4)))
        assert results == [True, True, False, False]  # the process's own count goes on
        assert len(received) == asked  # nobody asked the silent Redis meanwhile
        now[0] += RedisCounter.RETRY_EVERY
        await allowed(limiter, "k")
        assert len(received) > asked  # the retry is due: one request asks again
    finally:
        await limiter.close()
        server.close()
        await server.wait_closed()


class Unreachable:
    """A counter that must not be asked: the path without a token limit makes no traffic."""

    async def add(
        self, name: str, rate: Rate, amount: int, *, at: float | None = None
    ) -> tuple[int, int]:
        raise AssertionError(f"counted {amount} for {name} with no limit")

    async def close(self) -> None:
        """Nothing to close."""


KEYED = Principal("k", "k", "default", frozenset(SCOPES))


async def test_a_request_reserves_its_worst_case_and_settles_to_what_it_used() -> None:
    quota = TokenQuota(Rate(100, 3600), MemoryCounter())
    first = await quota.reserve(KEYED, 60)
    second = await quota.reserve(KEYED, 60)  # 60 before it: below the limit
    assert first is not None and second is not None
    assert await quota.used(KEYED) == 120
    with pytest.raises(ServiceError) as raised:  # 120 reserved: the window is used up
        await quota.reserve(KEYED, 1)
    assert raised.value.status == 429 and raised.value.code == "token_limit_exceeded"
    assert raised.value.message.startswith("token limit 100/hour reached for this key; retry in ")
    assert 1 <= int(raised.value.headers["Retry-After"]) <= 3600
    assert await quota.used(KEYED) == 120  # the refused one holds nothing

    await first.settle(25)
    await first.settle(25)  # once only
    await first.release()
    assert await quota.used(KEYED) == 85
    await second.resize(30)  # its prompt counted: a smaller worst case
    assert await quota.used(KEYED) == 55
    await second.release()
    await second.settle(30)  # released first: nothing more
    assert await quota.used(KEYED) == 25
    assert not first.open and not second.open


async def test_requests_at_once_are_admitted_while_the_reservations_leave_room() -> None:
    quota = TokenQuota(Rate(100, 3600), MemoryCounter())

    async def attempt() -> Reservation | None:
        try:
            return await quota.reserve(KEYED, 30)
        except ServiceError:
            return None

    admitted = [r for r in await asyncio.gather(*(attempt() for _ in range(10))) if r]
    assert len(admitted) == 4  # at 0, 30, 60 and 90 tokens
    await asyncio.gather(*(r.settle(30) for r in admitted))
    assert await quota.used(KEYED) == 120  # the limit, and one request's worst case at most


async def test_a_reservation_from_an_ended_window_adds_nothing_to_the_next(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [7200.0 + 3590]  # ten seconds before a window of the hour ends

    class Clock:
        @staticmethod
        def time() -> float:
            return now[0]

    monkeypatch.setattr(limits, "time", Clock)
    quota = TokenQuota(Rate(100, 3600), MemoryCounter())
    spanning = await quota.reserve(KEYED, 90)
    assert spanning is not None
    now[0] += 20  # the next window
    after = await quota.reserve(KEYED, 10)
    assert after is not None
    await spanning.settle(5)  # counted in the window that admitted it (over), not in this one
    assert await quota.used(KEYED) == 10
    counter = MemoryCounter()  # nor does a counter change a window once a later one counts
    await counter.add("n", Rate(100, 3600), 10)
    await counter.add("n", Rate(100, 3600), -85, at=now[0] - 3600)
    assert await counter.add("n", Rate(100, 3600), 0) == (10, 3590)
    await after.settle(4)
    assert await quota.used(KEYED) == 4


async def test_cancelled_requests_still_give_their_reservations_back() -> None:
    quota = TokenQuota(Rate(100, 3600), MemoryCounter())
    reservation = await quota.reserve(KEYED, 50)
    assert reservation is not None

    async def cancelled() -> None:
        try:
            await asyncio.sleep(10)
        finally:
            await reservation.release()

    task = asyncio.ensure_future(cancelled())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await quota.used(KEYED) == 0


async def test_no_token_limit_means_no_reservation_and_no_counting() -> None:
    unused = cast(Database, None)  # admitting reads no database
    log = InteractionLog(unused, quota=TokenQuota(None, Unreachable()))

    def worst_case() -> int:
        raise AssertionError("estimated with no limit")

    assert await log.admit(KEYED, worst_case) is None
    limited = TokenQuota(Rate(1, 3600), Unreachable())
    assert await InteractionLog(unused, quota=limited).admit(TERMINAL, worst_case) is None
    assert await limited.reserve(TERMINAL, 1_000) is None


@needs_redis
async def test_redis_reservations_are_shared_by_replicas() -> None:
    prefix = f"gptactions:test:{uuid.uuid4().hex}:"
    one, two = RedisCounter(REDIS_URL, prefix=prefix), RedisCounter(REDIS_URL, prefix=prefix)
    first, second = TokenQuota(Rate(100, 3600), one), TokenQuota(Rate(100, 3600), two)
    try:
        held = await first.reserve(KEYED, 70)
        other = await second.reserve(KEYED, 70)  # 70 before it, on the other replica
        assert held is not None and other is not None
        with pytest.raises(ServiceError):
            await first.reserve(KEYED, 1)
        assert await second.used(KEYED) == 140
        await held.release()
        await other.settle(12)
        await other.release()
        assert await first.used(KEYED) == 12
    finally:
        await one.close()
        await two.close()
