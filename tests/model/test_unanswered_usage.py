"""The embedded model's stream, left before its first piece, is charged the tokens the engine
counted: a forced tool call is delivered whole, once written, so a client that leaves while the
model writes it has seen nothing and has still cost the prompt and the tokens written."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gptactions.llm.local import LocalBackend
from tests.conftest import ApiClient
from tests.model.test_cancelled_usage import generating

pytestmark = pytest.mark.model
STORY = "Write a long story about a cat."
TOOL = {
    "type": "function",
    "function": {
        "name": "tell",
        "parameters": {
            "type": "object",
            "properties": {"story": {"type": "string"}},
            "required": ["story"],
        },
    },
}


async def test_a_stream_left_before_its_first_piece_counts_the_engines_tokens(
    model_api: ApiClient, local_backend: LocalBackend
) -> None:
    body = {
        "messages": [{"role": "user", "content": STORY}],
        "max_tokens": 1000,
        "stream": True,
        "tools": [TOOL],
        "tool_choice": {"type": "function", "function": {"name": "tell"}},
    }
    sent = asyncio.ensure_future(model_api.post("/v1/chat/completions", body))
    await generating(local_backend, 8)
    sent.cancel()  # as a client that gives up before any piece arrived
    with pytest.raises(asyncio.CancelledError):
        await sent

    entry: dict[str, Any] = (await model_api.get("/api/v1/gpt/logs")).json()[0]
    assert entry["status"] == "cancelled" and entry["reply"] == ""
    assert 8 <= entry["completionTokens"] < 1000
    # The engine's own count: the whole prompt, template and tools' instructions included.
    assert entry["promptTokens"] > 10
    assert entry["model"] == local_backend.model
