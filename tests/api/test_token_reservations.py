"""Token limits under concurrency: a request is admitted against the caller's window with the
tokens its requests in flight reserve, and reserves its own worst case there, so requests sent
at once overrun the limit by one request's worst case at most; one that ends with nothing
recorded (refused after admission, a backend's failure) gives its reservation back."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from gptactions.config import Rate, Settings
from gptactions.llm.base import BackendError, ChatMessage
from gptactions.llm.fake import FakeBackend
from tests.conftest import ADMIN_KEY, REDIS_URL, ApiClient, running_app
from tests.services.test_limits import needs_redis

API = "/api/v1/gpt"
LIMIT = "100/hour"
MAX_TOKENS = 64
"""The server's max_tokens_limit, and so its default max tokens: a request's most."""
BURST = 16
TEXT = (
    "Tokens are counted for every request that a key sends, and the limit holds however many "
    "of them run at once."
)
PATHS = ["conversations", "stream", "completions", "actions"]


def settings_for(database_url: str, **overrides: Any) -> Settings:
    return Settings(
        database_url=database_url, api_key=ADMIN_KEY, max_tokens_limit=MAX_TOKENS, **overrides
    )


def on_sqlite(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'test.db'}"


async def send(api: ApiClient, path: str, key: str, text: str = TEXT) -> httpx.Response:
    """One generation on `path`, without maxTokens (the server's default)."""
    if path == "stream":
        headers = {"Accept": "text/event-stream"}
        turn = {"userId": "ada", "message": text}
        return await api.post(f"{API}/conversations", turn, key, headers=headers)
    if path == "actions":
        body = {"action": "summarize", "parameters": {"text": text}}
        return await api.post(f"{API}/actions", body, key)
    if path == "completions":
        chat = {"model": "fake", "messages": [{"role": "user", "content": text}]}
        return await api.post("/v1/chat/completions", chat, key)
    return await api.post(f"{API}/{path}", {"userId": "ada", "message": text}, key)


def assert_token_limited(response: httpx.Response, path: str) -> None:
    """The 429 of a token limit, as every path answers it (the /v1 path in OpenAI's shape)."""
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    if path == "completions":
        assert (error["code"], error["type"]) == ("rate_limit_exceeded", "tokens")
    else:
        assert error["code"] == "token_limit_exceeded"
    assert error["message"].startswith(f"token limit {LIMIT} reached for this key; retry in ")
    assert 1 <= int(response.headers["retry-after"]) <= Rate.parse(LIMIT).period


async def tokens_used(api: ApiClient, key: str) -> int:
    """The tokens the key's tenant's recorded interactions used."""
    usage = await api.get(f"{API}/usage", key)
    assert usage.status_code == 200, usage.text
    total: int = usage.json()["total"]["totalTokens"]
    return total


async def tokens_in_window(api: ApiClient, key: str) -> int:
    """The tokens the key's window holds: used, and reserved by its requests in flight."""
    principal = await api.runtime.keys.authenticate(key)
    assert principal is not None
    return await api.runtime.quota.used(principal)


async def worst_case(backends: list[FakeBackend]) -> int:
    """The most one request the backends answered could take: its prompt and its most."""
    return max(
        [
            await backend.count_tokens(request.messages) + request.max_tokens
            for backend in backends
            for request in backend.requests
        ]
    )


@pytest.mark.parametrize("path", PATHS)
async def test_requests_sent_at_once_overrun_the_limit_by_one_worst_case_at_most(
    tmp_path: Path, path: str
) -> None:
    fake = FakeBackend(delay=0.05)  # every reply takes a while: the burst is in flight at once
    async with running_app(settings_for(on_sqlite(tmp_path)), fake) as api:
        key = (await api.runtime.keys.create("small", token_limit=LIMIT)).secret
        responses = await asyncio.gather(*(send(api, path, key) for _ in range(BURST)))

        answered = [r for r in responses if r.status_code == 200]
        refused = [r for r in responses if r.status_code != 200]
        assert answered and refused, [r.status_code for r in responses]
        for response in refused:
            assert_token_limited(response, path)
        assert len(fake.requests) == len(answered)  # the model never saw the refused ones
        used = await tokens_used(api, key)
        assert used <= Rate.parse(LIMIT).limit + await worst_case([fake])
        # Every reservation settled: the window holds the tokens used, no more.
        assert await tokens_in_window(api, key) == used


@pytest.mark.parametrize("path", ["conversations", "completions", "actions"])
async def test_requests_that_fail_after_admission_leave_the_window_as_it_was(
    tmp_path: Path, path: str
) -> None:
    fake = FakeBackend(delay=0.05)
    async with running_app(settings_for(on_sqlite(tmp_path)), fake) as api:
        key = (await api.runtime.keys.create("small", token_limit=LIMIT)).secret
        assert (await send(api, path, key, "Hello")).status_code == 200
        used = await tokens_used(api, key)
        fake.replies.extend([BackendError("the model is down")] * BURST)

        responses = await asyncio.gather(*(send(api, path, key) for _ in range(BURST)))

        failed = [r for r in responses if r.status_code != 429]
        refused = [r for r in responses if r.status_code == 429]
        # While the failing ones were in flight, their reservations held the window.
        assert failed and refused, [r.status_code for r in responses]
        assert all(r.status_code == 502 for r in failed), [r.text for r in failed]
        for response in refused:
            assert_token_limited(response, path)
        # Each failure gave its reservation back: the window is as it was.
        assert await tokens_used(api, key) == used
        assert await tokens_in_window(api, key) == used
        fake.replies.clear()
        again = await send(api, path, key, "Hello")
        assert again.status_code == 200, again.text


class SlowCounting(FakeBackend):
    """A backend whose tokenizer takes a while: a prompt is found too long a while after the
    request is admitted, with the others of the burst in flight meanwhile."""

    async def count_tokens(self, messages: tuple[ChatMessage, ...]) -> int:
        await asyncio.sleep(0.05)
        return await super().count_tokens(messages)


@pytest.mark.parametrize(
    ("path", "code"),
    [("conversations", "prompt_too_long"), ("completions", "context_length_exceeded")],
)
async def test_prompts_found_too_long_after_admission_leave_the_window_as_it_was(
    tmp_path: Path, path: str, code: str
) -> None:
    fake = SlowCounting(context_window=96)
    too_long = " ".join(["word"] * 120)
    async with running_app(settings_for(on_sqlite(tmp_path)), fake) as api:
        key = (await api.runtime.keys.create("small", token_limit=LIMIT)).secret
        assert (await send(api, path, key, "Hello")).status_code == 200
        used = await tokens_used(api, key)

        responses = await asyncio.gather(*(send(api, path, key, too_long) for _ in range(BURST)))

        too_long_ones = [r for r in responses if r.status_code != 429]
        refused = [r for r in responses if r.status_code == 429]
        assert too_long_ones and refused, [r.status_code for r in responses]
        assert {(r.status_code, r.json()["error"]["code"]) for r in too_long_ones} == {(400, code)}
        for response in refused:
            assert_token_limited(response, path)
        assert await tokens_used(api, key) == used
        assert await tokens_in_window(api, key) == used
        again = await send(api, path, key, "Hello")
        assert again.status_code == 200, again.text


@needs_redis
@pytest.mark.parametrize("path", ["conversations", "completions"])
async def test_two_apps_on_one_redis_share_the_reservations(
    migrated_database_url: str, path: str
) -> None:
    """Two replicas (on SQLite, and on PostgreSQL) counting in one Redis: the burst, split
    between them, is held within one worst case of the key's limit, and a failure on either
    gives its reservation back."""
    settings = settings_for(migrated_database_url, redis_url=REDIS_URL)
    one, two = FakeBackend(delay=0.05), FakeBackend(delay=0.05)
    async with running_app(settings, one) as first, running_app(settings, two) as second:
        # A new key per run (its id names its counts in Redis), so earlier runs cannot interfere.
        created = await first.runtime.keys.create(uuid.uuid4().hex, token_limit=LIMIT)
        key = created.secret
        responses = await asyncio.gather(
            *(send(app, path, key) for app in (first, second) for _ in range(BURST // 2))
        )

        answered = [r for r in responses if r.status_code == 200]
        refused = [r for r in responses if r.status_code != 200]
        assert answered and refused, [r.status_code for r in responses]
        for response in refused:
            assert_token_limited(response, path)
        used = await tokens_used(first, key)
        assert used <= Rate.parse(LIMIT).limit + await worst_case([one, two])
        assert await tokens_in_window(first, key) == await tokens_in_window(second, key) == used

        # Admitted on one replica, and given back in the window they share.
        fresh = (await first.runtime.keys.create(uuid.uuid4().hex, token_limit=LIMIT)).secret
        two.replies.append(BackendError("the model is down"))
        failed = await send(second, path, fresh, "Hello")
        assert failed.status_code == 502, failed.text
        assert await tokens_in_window(first, fresh) == 0
        assert await tokens_used(first, fresh) == used
