"""Sign-in limits through the pages: failures count per username and client address strictly,
and per username alone loosely, so guessers at many addresses do not lock a user out."""

from __future__ import annotations

from ipaddress import ip_network

from gptactions.config import Settings
from gptactions.llm.fake import FakeBackend
from tests.conftest import running_app

PAGE = "/oauth/authorizations"
PASSWORD = "correct horse battery"


def _trusting(settings: Settings, rate: str = "10/hour") -> Settings:
    """The sign-in rate limit (in hours: no window ends during a test), and the in-process
    client (127.0.0.1) a trusted proxy."""
    return settings.model_copy(
        update={"login_rate_limit": rate, "trusted_proxies": [ip_network("127.0.0.1/32")]}
    )


def _from(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


async def test_wrong_passwords_from_many_addresses_do_not_lock_the_user_out(
    settings: Settings,
) -> None:
    async with running_app(_trusting(settings), FakeBackend()) as api:
        await api.runtime.users.create("carol", PASSWORD)
        wrong = {"step": "login", "username": "carol", "password": "wrong password"}
        for n in range(10):
            answer = await api.http.post(PAGE, data=wrong, headers=_from(f"203.0.113.{n}"))
            assert answer.status_code == 401
        right = {"step": "login", "username": "carol", "password": PASSWORD}
        carol = await api.http.post(PAGE, data=right, headers=_from("198.51.100.7"))
        assert carol.status_code == 200 and "carol" in carol.text


async def test_one_address_guessing_is_stopped_at_the_limit(settings: Settings) -> None:
    async with running_app(_trusting(settings), FakeBackend()) as api:
        await api.runtime.users.create("carol", PASSWORD)
        wrong = {"step": "login", "username": "carol", "password": "wrong password"}
        codes = [
            (await api.http.post(PAGE, data=wrong, headers=_from("203.0.113.9"))).status_code
            for _ in range(11)
        ]
        assert codes == [401] * 10 + [429]
        right = {"step": "login", "username": "carol", "password": PASSWORD}
        refused = await api.http.post(PAGE, data=right, headers=_from("203.0.113.9"))
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0


async def test_guessers_at_many_addresses_are_slowed_at_ten_times_the_limit(
    settings: Settings,
) -> None:
    async with running_app(_trusting(settings, "2/hour"), FakeBackend()) as api:
        await api.runtime.users.create("carol", PASSWORD)
        wrong = {"step": "login", "username": "carol", "password": "wrong password"}
        codes = [
            (await api.http.post(PAGE, data=wrong, headers=_from(f"10.0.0.{n}"))).status_code
            for n in range(21)
        ]
        assert codes == [401] * 20 + [429]


async def test_a_username_that_cannot_be_one_is_a_wrong_password(settings: Settings) -> None:
    async with running_app(_trusting(settings), FakeBackend()) as api:
        long = {"step": "login", "username": "x" * 100_000, "password": "wrong password"}
        answer = await api.http.post(PAGE, data=long, headers=_from("203.0.113.1"))
        assert answer.status_code == 401 and "wrong username or password" in answer.text
