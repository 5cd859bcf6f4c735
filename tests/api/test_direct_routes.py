"""Direct routes read FastAPI's internals; a FastAPI that builds routes otherwise must not break
the server: its routes then go through FastAPI's own handler."""

from __future__ import annotations

from typing import Any

import pytest

from gptactions.api import direct
from gptactions.config import Settings
from gptactions.llm.fake import FakeBackend
from tests.conftest import running_app

MOVED_ON = "go through FastAPI's own handler"


async def converse(settings: Settings) -> dict[str, Any]:
    """Start a conversation through the app; its answer."""
    async with running_app(settings, FakeBackend()) as api:
        answer = await api.post("/api/v1/gpt/conversations", {"userId": "u", "message": "Hi"})
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body


async def test_routes_are_direct_with_the_fastapi_installed(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    direct._warn_once.cache_clear()
    assert (await converse(settings))["conversationId"]
    assert MOVED_ON not in caplog.text


async def test_a_fastapi_whose_internals_moved_on_still_serves(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Here `serialize_response` takes other arguments, as a future FastAPI's might."""

    async def serialize_response(*, response_content: Any, model: Any = None) -> Any:
        raise AssertionError("never called with the arguments of another version")

    monkeypatch.setattr(direct, "serialize_response", serialize_response)
    direct._warn_once.cache_clear()
    body = await converse(settings)
    assert body["conversationId"] and body["reply"]
    assert caplog.text.count(MOVED_ON) == 1  # said once, not once per route
