"""UserService.sign_in: usernames that cannot be one, provider users, and failures counted."""

from __future__ import annotations

import time
from typing import Any

import pytest

from gptactions.config import Rate, Settings
from gptactions.llm.fake import FakeBackend
from gptactions.services import users as users_module
from gptactions.services.limits import MemoryCounter, RateLimiter
from gptactions.services.users import TooManyAttempts, UserService
from tests.conftest import running_app

PASSWORD = "correct horse battery"


def _service(api: Any, limit: int = 10) -> tuple[UserService, MemoryCounter]:
    counter = MemoryCounter()
    return UserService(api.runtime.database, RateLimiter(Rate(limit, 60), counter)), counter


async def test_usernames_that_cannot_be_one_count_nothing_under_their_name(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    verified: list[str | None] = []
    real = users_module._verify

    def spy(stored: str | None, password: str) -> bool:
        verified.append(stored)
        return real(stored, password)

    monkeypatch.setattr(users_module, "_verify", spy)
    async with running_app(settings, FakeBackend()) as api:
        users, counter = _service(api, limit=1000)
        for n in range(10):
            name = f"{n}" + "x" * 100_000
            assert await users.sign_in(name, "wrong password", address="a") is None
        assert await users.sign_in("alice\n", "wrong password", address="a") is None
        assert await users.sign_in("-alice", "wrong password", address="a") is None
        # The address alone is counted; each refusal was checked against the dummy hash.
        assert len(counter) == 1 and verified == [None] * 12


async def test_a_provider_user_is_checked_against_the_dummy_hash(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_app(settings, FakeBackend()) as api:
        users = api.runtime.users
        erin = await users.sign_in_external("https://idp.one", "s-1", "erin")
        dummy = users_module._dummy_hash()
        checked: list[str] = []
        real = users_module._HASHER

        class Spy:
            def verify(self, stored: str, password: str) -> bool:
                checked.append(stored)
                return real.verify(stored, password)

        monkeypatch.setattr(users_module, "_HASHER", Spy())
        assert await users.sign_in(erin.username, "a password", address="a") is None
        # Not even the dummy hash's own password lets a provider's user in.
        assert await users.sign_in(erin.username, "not a password of anyone", address="b") is None
        assert checked == [dummy, dummy]
        started = time.perf_counter()
        await users.sign_in(erin.username, "a password", address="c")
        assert time.perf_counter() - started > 0.005  # an argon2 verification's time


async def test_only_failures_count(settings: Settings) -> None:
    async with running_app(settings, FakeBackend()) as api:
        users, _ = _service(api, limit=3)
        await users.create("carol", PASSWORD)
        for _ in range(2):
            assert await users.sign_in("carol", "wrong password", address="a") is None
        # Successes are taken back: carol signs in again and again from the same address ...
        for _ in range(5):
            assert await users.sign_in("carol", PASSWORD, address=f"x{_}") is not None
        assert await users.sign_in("carol", "wrong password", address="a") is None
        # ... while a 4th failure of the pair is refused, even with the right password.
        with pytest.raises(TooManyAttempts):
            await users.sign_in("carol", PASSWORD, address="a")
        assert await users.sign_in("carol", PASSWORD, address="b") is not None
