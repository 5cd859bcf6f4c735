"""Tokens are charged on the paths that used to drop them: a streamed reply whose client leaves
before its first piece (the prompt was given to the model), and the attempts of a backend that
failed midway before a fallback answered (or before the request failed), on /v1, /conversations
and /actions. Logic with fakes; tests/model and tests/upstream hold the real backends' tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from gptactions.app import create_app
from gptactions.config import Settings
from gptactions.llm.base import Backend, Usage
from gptactions.llm.fake import FakeBackend
from gptactions.llm.router import BackendRouter
from gptactions.runtime import Runtime
from tests.api.test_cancelled_usage import TURN, Slow, cancelled_midway, latest
from tests.api.test_token_limits import limited
from tests.conftest import ApiClient
from tests.llm.test_attempt_usage import USED, FailsMidway

API = "/api/v1/gpt"
SSE = {"Accept": "text/event-stream"}
CHAT: dict[str, Any] = {"messages": [{"role": "user", "content": TURN["message"]}]}


@asynccontextmanager
async def running(settings: Settings, *backends: Backend) -> AsyncIterator[ApiClient]:
    """The app on `backends`, the first the default and the others its fallbacks in order."""
    router = BackendRouter(
        list(backends), default=backends[0].name, fallbacks=[b.name for b in backends[1:]]
    )
    runtime = Runtime(settings, router=router)
    app = create_app(runtime=runtime)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield ApiClient(client, runtime)


@pytest.mark.parametrize("path", ["conversations", "v1"])
async def test_a_stream_left_before_its_first_piece_counts_the_prompt(
    tmp_path: Path, path: str
) -> None:
    slow = Slow()
    async with running(limited(tmp_path, token_limit="10/hour"), slow) as api:
        key = await api.key()
        if path == "v1":
            url, body, headers = "/v1/chat/completions", {**CHAT, "stream": True}, {}
        else:
            url, body, headers = f"{API}/conversations", TURN, SSE
        await cancelled_midway(slow, api.post(url, body, key, headers=headers))

        entry = await latest(api)
        assert entry["status"] == "cancelled" and entry["reply"] == ""
        # The prompt was given to the model: its tokens are the key's, by the model's count.
        assert entry["promptTokens"] == await slow.count_tokens(slow.requests[0].messages)
        assert entry["completionTokens"] == 0 and entry["model"] == "fake-model"
        refused = await api.post(url, body, key, headers=headers)
        assert refused.status_code == 429, refused.text


@pytest.mark.parametrize(
    ("path", "stream"),
    [("v1", False), ("v1", True), ("conversations", False), ("conversations", True)],
)
async def test_a_fallbacks_reply_counts_the_failed_attempts_tokens(
    settings: Settings, path: str, stream: bool
) -> None:
    second = FakeBackend(["The end."], name="second")
    async with running(settings, FailsMidway(), second) as api:
        if path == "v1":
            response = await api.post("/v1/chat/completions", {**CHAT, "stream": stream})
        else:
            response = await api.post(f"{API}/conversations", TURN, headers=SSE if stream else {})
        assert response.status_code == 200, response.text
        entry = await latest(api)
    answered = Usage(await second.count_tokens(second.requests[0].messages), 2)
    assert entry["status"] == "ok" and entry["reply"] == "The end."
    assert entry["model"] == "fake-model"
    assert entry["promptTokens"] == USED.prompt_tokens + answered.prompt_tokens
    assert entry["completionTokens"] == USED.completion_tokens + answered.completion_tokens


@pytest.mark.parametrize(
    ("path", "stream"),
    [
        ("v1", False),
        ("v1", True),
        ("conversations", False),
        ("conversations", True),
        ("actions", False),
    ],
)
async def test_a_request_every_backend_failed_counts_what_they_used(
    settings: Settings, path: str, stream: bool
) -> None:
    async with running(settings, FailsMidway()) as api:
        if path == "v1":
            response = await api.post("/v1/chat/completions", {**CHAT, "stream": stream})
        elif path == "actions":
            body = {"action": "summarize", "parameters": {"text": TURN["message"]}}
            response = await api.post(f"{API}/actions", body)
        else:
            response = await api.post(f"{API}/conversations", TURN, headers=SSE if stream else {})
        assert response.status_code == 502, response.text
        entry = await latest(api)
    assert entry["status"] == "error"
    assert (entry["promptTokens"], entry["completionTokens"]) == (
        USED.prompt_tokens,
        USED.completion_tokens,
    )
