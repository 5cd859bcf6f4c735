"""A whole reply cut short (its client left, or the server is stopping) is stored as `cancelled`
with the tokens it used, which count against the key's token limit and in the metrics, on each
path that generates: /conversations, /actions and /v1/chat/completions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.responses import JSONResponse

from gptactions.config import Settings
from gptactions.llm.base import Chunk, Generation, GenerationRequest
from gptactions.llm.fake import FakeBackend
from gptactions.services.interactions import ABANDONED, STOPPED
from tests.api.test_token_limits import limited
from tests.conftest import ApiClient, running_app

API = "/api/v1/gpt"
TURN = {"userId": "ada", "message": "Write a long story about a cat."}


class Slow(FakeBackend):
    """A fake that takes its time to answer, and says when it has been asked."""

    def __init__(self) -> None:
        super().__init__(delay=30)
        self.asked = asyncio.Event()

    async def generate(self, request: GenerationRequest) -> Generation:
        self.asked.set()
        return await super().generate(request)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        self.asked.set()
        async for chunk in super().stream(request):
            yield chunk


async def cancelled_midway(backend: Slow, request: Awaitable[httpx.Response]) -> None:
    """Send the request, and leave once the model is generating (as a client that times out)."""
    sent = asyncio.ensure_future(request)
    await asyncio.wait_for(backend.asked.wait(), timeout=10)
    sent.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sent
    backend.asked.clear()
    backend.delay = 0  # from here on it answers at once


async def latest(api: ApiClient) -> dict[str, Any]:
    entry: dict[str, Any] = (await api.get(f"{API}/logs")).json()[0]
    return entry


def tokens_counted(metrics: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("gptactions_tokens_total{")
    )


async def test_a_conversation_cut_short_counts_its_tokens_against_the_limit(
    tmp_path: Path,
) -> None:
    slow = Slow()
    async with running_app(limited(tmp_path, token_limit="10/hour"), slow) as api:
        key = await api.key()
        await cancelled_midway(slow, api.post(f"{API}/conversations", TURN, key))

        entry = await latest(api)
        assert entry["status"] == "cancelled" and entry["finishReason"] == "cancelled"
        assert entry["error"] == ABANDONED
        # The prompt was given to the model: its tokens are the key's, by the model's count.
        assert entry["promptTokens"] >= 10
        assert entry["model"] == "fake-model"
        metrics = (await api.get("/metrics")).text
        assert tokens_counted(metrics) == entry["promptTokens"] + entry["completionTokens"]

        refused = await api.post(f"{API}/conversations", TURN, key)
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "token_limit_exceeded"


@pytest.mark.parametrize("path", ["actions", "v1"])
async def test_an_action_or_a_completion_cut_short_counts_its_tokens(
    tmp_path: Path, path: str
) -> None:
    slow = Slow()
    async with running_app(limited(tmp_path, token_limit="10/hour"), slow) as api:
        key = await api.key()
        if path == "actions":
            body: dict[str, Any] = {"action": "summarize", "parameters": {"text": TURN["message"]}}
            url = f"{API}/actions"
        else:
            body = {"model": "fake", "messages": [{"role": "user", "content": TURN["message"]}]}
            url = "/v1/chat/completions"
        await cancelled_midway(slow, api.post(url, body, key))

        entry = await latest(api)
        assert entry["status"] == "cancelled" and entry["error"] == ABANDONED
        assert entry["promptTokens"] >= 10 and entry["model"] == "fake-model"
        assert (await api.post(url, body, key)).status_code == 429


async def test_a_conversation_the_server_stops_says_so_and_counts_its_tokens(
    settings: Settings,
) -> None:
    slow = Slow()
    async with running_app(settings, slow) as api:
        sent = asyncio.ensure_future(api.post(f"{API}/conversations", TURN))
        await asyncio.wait_for(slow.asked.wait(), timeout=10)
        api.runtime.stopping.set()  # the end of the shutdown grace
        response = await sent
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "server_restarting"
        # Encoded as every other answer (compact), not by a serializer of its own.
        assert response.content == JSONResponse(response.json()).body
        entries = (await api.get(f"{API}/logs")).json()
    assert entries[0]["status"] == "cancelled" and entries[0]["error"] == STOPPED
    assert entries[0]["promptTokens"] > 0
