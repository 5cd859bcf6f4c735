"""A whole reply of the embedded model cut short is stored with what it wrote and the tokens it
used, as the engine counted them."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gptactions.llm.local import LocalBackend
from tests.conftest import ApiClient

pytestmark = pytest.mark.model
API = "/api/v1/gpt"
STORY = "Write a long story about a cat."


async def generating(backend: LocalBackend, tokens: int) -> None:
    """Wait until a request has generated `tokens` tokens."""
    for _ in range(3000):
        if any(
            s.job is not None and s.job.completion_tokens >= tokens
            for s in backend.engine._sequences
        ):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the model generated nothing")


@pytest.mark.parametrize("path", ["conversations", "v1"])
async def test_a_reply_cut_short_stores_the_tokens_the_model_generated(
    model_api: ApiClient, local_backend: LocalBackend, path: str
) -> None:
    if path == "conversations":
        url, body = f"{API}/conversations", {"userId": "u", "message": STORY, "maxTokens": 1000}
    else:
        url = "/v1/chat/completions"
        body = {"messages": [{"role": "user", "content": STORY}], "max_tokens": 1000}
    sent = asyncio.ensure_future(model_api.post(url, body))
    await generating(local_backend, 8)
    sent.cancel()  # as a client that gives up
    with pytest.raises(asyncio.CancelledError):
        await sent

    entry: dict[str, Any] = (await model_api.get(f"{API}/logs")).json()[0]
    assert entry["status"] == "cancelled" and entry["finishReason"] == "cancelled"
    assert 8 <= entry["completionTokens"] < 1000
    assert entry["promptTokens"] > 10 and entry["reply"].strip()
    assert entry["model"] == local_backend.model
