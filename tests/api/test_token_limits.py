"""Token limits per key (GPTACTIONS_TOKEN_LIMIT) and each key's own limits, on every path that
generates: refused with a 429 before the model runs once a window is used up."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from gptactions.config import Rate, Settings
from gptactions.llm.fake import FakeBackend
from gptactions.services.errors import ServiceError
from gptactions.services.keys import SCOPES, TERMINAL, Principal
from gptactions.services.limits import MemoryCounter, TokenQuota
from tests.conftest import ADMIN_KEY, REDIS_URL, ApiClient, running_app
from tests.protocols.conftest import served
from tests.protocols.test_mcp import mcp_client
from tests.services.test_limits import needs_redis

API = "/api/v1/gpt"
TURN = {"userId": "ada", "message": "Hello there"}
CHAT = {"model": "fake", "messages": [{"role": "user", "content": "Hello there"}]}


def limited(tmp_path: Path, **overrides: Any) -> Settings:
    return Settings(
        database_url=f"sqlite:///{tmp_path / 'test.db'}", api_key=ADMIN_KEY, **overrides
    )


def assert_token_limited(response: httpx.Response, limit: str) -> None:
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert error["code"] == "token_limit_exceeded"
    assert error["message"].startswith(f"token limit {limit} reached for this key; retry in ")
    assert 1 <= int(response.headers["retry-after"]) <= Rate.parse(limit).period


async def test_a_key_over_its_token_limit_is_refused_before_the_model_runs(
    tmp_path: Path,
) -> None:
    fake = FakeBackend()
    async with running_app(limited(tmp_path, token_limit="20/hour"), fake) as api:
        key = await api.key()
        first = await api.post(f"{API}/conversations", TURN, key)
        # The first reply is allowed whatever its size: the window was empty.
        used = first.json()["usage"]["promptTokens"] + first.json()["usage"]["completionTokens"]
        assert first.status_code == 200 and used >= 20
        asked = len(fake.requests)

        refused = await api.post(f"{API}/conversations", TURN, key)

        assert_token_limited(refused, "20/hour")
        assert len(fake.requests) == asked  # the model never saw it
        assert refused.json()["error"]["message"].endswith(" s")
        # Reading is not generating: the key still reads its logs and usage.
        assert (await api.get(f"{API}/logs", key)).status_code == 200
        usage = await api.get(f"{API}/usage", key)
        assert usage.status_code == 200
        # The refusal is in the log, as a rejected request that used no tokens.
        assert usage.json()["total"]["rejected"] == 1
        assert usage.json()["total"]["totalTokens"] == used
        # Another key has its own window.
        other = await api.key()
        assert (await api.post(f"{API}/conversations", TURN, other)).status_code == 200


async def call(api: ApiClient, path: str, key: str) -> httpx.Response:
    """One generation on `path`."""
    if path == "stream":
        headers = {"Accept": "text/event-stream"}
        return await api.post(f"{API}/conversations", TURN, key, headers=headers)
    if path == "actions":
        body = {"action": "summarize", "parameters": {"text": "Tokens are counted."}}
        return await api.post(f"{API}/actions", body, key)
    if path == "completions":
        return await api.post("/v1/chat/completions", CHAT, key)
    return await api.post(f"{API}/{path}", TURN, key)


@pytest.mark.parametrize("path", ["conversations", "respond", "stream", "actions", "completions"])
async def test_every_path_that_generates_counts_and_is_refused(tmp_path: Path, path: str) -> None:
    async with running_app(limited(tmp_path, token_limit="1/hour"), FakeBackend()) as api:
        key = await api.key()
        first = await call(api, path, key)
        assert first.status_code == 200, first.text
        again = await call(api, path, key)
        elsewhere = await api.post(f"{API}/conversations", TURN, key)
    assert again.status_code == 429
    assert_token_limited(elsewhere, "1/hour")
    if path == "completions":  # /v1 answers in OpenAI's shape
        assert again.json()["error"]["code"] == "rate_limit_exceeded"
        assert again.json()["error"]["type"] == "tokens"  # OpenAI's, for a token limit
        assert again.json()["error"]["message"].startswith("token limit 1/hour reached")
    else:
        assert_token_limited(again, "1/hour")


async def test_mcp_tools_count_and_are_refused(tmp_path: Path) -> None:
    async with served(limited(tmp_path, token_limit="1/hour"), FakeBackend()) as server:
        key = await server.key()
        async with mcp_client(server, key) as client:
            first = await client.call_tool("converse", {"userId": "ada", "message": "Hi"})
            refused = await client.call_tool("summarize", {"text": "Tokens are counted."})
    assert not first.is_error
    assert refused.is_error
    error = refused.structured_content["error"]
    assert error["code"] == "token_limit_exceeded"
    assert error["message"].startswith("token limit 1/hour reached for this key")


async def test_a_keys_own_token_limit_wins_over_the_servers(tmp_path: Path) -> None:
    async with running_app(limited(tmp_path, token_limit="1/hour"), FakeBackend()) as api:
        generous = await api.runtime.keys.create("big", token_limit="1000000/day")
        codes = [
            (await api.post(f"{API}/conversations", TURN, generous.secret)).status_code
            for _ in range(3)
        ]
        assert codes == [200, 200, 200]
    async with running_app(limited(tmp_path, token_limit="1000000/day"), FakeBackend()) as api:
        strict = await api.runtime.keys.create("small", token_limit="5/hour")
        assert (await api.post(f"{API}/conversations", TURN, strict.secret)).status_code == 200
        assert_token_limited(await api.post(f"{API}/conversations", TURN, strict.secret), "5/hour")


async def test_a_keys_own_rate_limit_wins_over_the_servers(tmp_path: Path) -> None:
    async with running_app(limited(tmp_path, rate_limit="3/hour"), FakeBackend()) as api:
        generous = (await api.runtime.keys.create("big", rate_limit="5/hour")).secret
        strict = (await api.runtime.keys.create("small", rate_limit="1/hour")).secret
        unset = (await api.runtime.keys.create("server's")).secret
        status = f"{API}/status"
        generous_codes = [(await api.get(status, generous)).status_code for _ in range(6)]
        strict_codes = [(await api.get(status, strict)).status_code for _ in range(2)]
        unset_codes = [(await api.get(status, unset)).status_code for _ in range(4)]
        refused = await api.get(status, strict)
    assert generous_codes == [200] * 5 + [429]
    assert strict_codes == [200, 429]
    assert unset_codes == [200, 200, 200, 429]
    assert refused.json()["error"]["code"] == "rate_limited"
    assert refused.json()["error"]["message"].startswith("rate limit 1/hour reached for this key")


async def test_no_server_limit_and_no_key_limit_means_no_limit(api: ApiClient) -> None:
    key = await api.key()
    codes = [(await api.post(f"{API}/conversations", TURN, key)).status_code for _ in range(3)]
    assert codes == [200, 200, 200]


@needs_redis
async def test_two_apps_on_one_redis_share_a_keys_tokens(tmp_path: Path) -> None:
    settings = limited(tmp_path, token_limit="1/hour", redis_url=REDIS_URL)
    async with (
        running_app(settings, FakeBackend()) as one,
        running_app(settings, FakeBackend()) as two,
    ):
        # A new key per run (its id names its counts), so earlier runs cannot interfere.
        key = await one.key(name=uuid.uuid4().hex)
        first = await one.post(f"{API}/conversations", TURN, key)
        on_the_other = await two.post(f"{API}/conversations", TURN, key)
    assert first.status_code == 200
    assert_token_limited(on_the_other, "1/hour")


async def test_an_unreachable_redis_still_limits_each_process(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = limited(tmp_path, token_limit="1/hour", redis_url="redis://127.0.0.1:1/0")
    with caplog.at_level(logging.WARNING, logger="gptactions.services.limits"):
        async with running_app(settings, FakeBackend()) as api:
            key = await api.key()
            first = await api.post(f"{API}/conversations", TURN, key)
            refused = await api.post(f"{API}/conversations", TURN, key)
    assert first.status_code == 200
    assert_token_limited(refused, "1/hour")
    warned = [r for r in caplog.records if r.name == "gptactions.services.limits"]
    assert len(warned) == 1 and "unavailable (" in warned[0].getMessage()


def oauth_caller(client: str, user: str) -> Principal:
    return Principal(client, f"oauth:{client}", "default", frozenset({"chat"}), user_id=user)


async def test_an_oauth_users_tokens_count_against_the_user_across_gpts() -> None:
    quota = TokenQuota(Rate(10, 3600), MemoryCounter())
    await quota.charge(oauth_caller("gpt-a", "alice"), 10)

    with pytest.raises(ServiceError) as raised:
        await quota.reserve(oauth_caller("gpt-b", "alice"), 0)
    await quota.reserve(oauth_caller("gpt-a", "bob"), 0)  # the same GPT, another user

    assert raised.value.status == 429
    assert raised.value.message.startswith("token limit 10/hour reached for this user")


async def test_the_terminal_is_never_limited() -> None:
    quota = TokenQuota(Rate(1, 3600), MemoryCounter())
    await quota.charge(TERMINAL, 100)
    await quota.reserve(TERMINAL, 0)
    keyed = Principal("k", "k", "default", frozenset(SCOPES))
    await quota.charge(keyed, 1)
    with pytest.raises(ServiceError):
        await quota.reserve(keyed, 0)
