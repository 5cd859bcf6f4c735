"""Rate limits per key: in memory, and in the real Redis on 127.0.0.1:6379 shared by replicas."""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path

import pytest

from gptactions.config import Rate, Settings
from gptactions.llm.fake import FakeBackend
from gptactions.services.limits import MemoryCounter, RateLimiter, RedisCounter
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
