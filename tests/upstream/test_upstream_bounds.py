"""OpenAIBackend's bounds on what an upstream sends: line and answer sizes, `Retry-After`, and the
state a good streamed reply leaves."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any, cast

import aiohttp
import pytest

from gptactions.api.errors import backend_status
from gptactions.config import Settings
from gptactions.llm import openai_transport
from gptactions.llm.base import (
    BackendError,
    BackendUnavailable,
    ChatMessage,
    Chunk,
    GenerationRequest,
)
from gptactions.llm.openai import OpenAIBackend
from gptactions.llm.router import BackendRouter

from .faulty import REPLY, FaultyUpstream
from .test_streaming_api import API, SSE, app_with

pytestmark = pytest.mark.upstream

REQUEST = GenerationRequest(messages=(ChatMessage("user", "Say hello"),), max_tokens=16)
LONG = 2 << 20  # a 2 MiB line, past the 1 MiB limit


def backend(url: str, **options: Any) -> OpenAIBackend:
    settings: dict[str, Any] = {
        "name": "up",
        "base_url": url,
        "model": "m",
        "backoff_base": 0.01,
        "backoff_max": 0.05,
        "total_timeout": 5.0,
    }
    settings.update(options)
    return OpenAIBackend(**settings)


async def streamed_text(up: OpenAIBackend) -> str:
    """The reply, read as the API reads it: the iterator is closed once `done` arrives."""
    text = ""
    stream = cast(AsyncGenerator[Chunk, None], up.stream(REQUEST))
    async with aclosing(stream) as chunks:
        async for chunk in chunks:
            text += chunk.text
            if chunk.done:
                break
    return text


async def disconnects(faulty: FaultyUpstream, count: int) -> bool:
    """Whether the upstream saw `count` clients hang up within 5 s (the loop runs meanwhile: a
    closed transport closes its socket on the loop's next turn)."""
    for _ in range(250):
        if faulty.disconnects >= count:
            return True
        await asyncio.sleep(0.02)
    return faulty.disconnects >= count


async def test_a_streamed_line_past_the_limit_is_a_502_and_the_pool_survives(
    faulty: FaultyUpstream,
) -> None:
    # One slot: the pool holds 3 connections, so leaking one per failure would exhaust it.
    up = backend(faulty.url(), max_concurrency=1, max_retries=0)
    try:
        for _ in range(4):
            faulty.script.append(f"longline-{LONG}")
            with pytest.raises(BackendError) as caught:
                await streamed_text(up)
            assert type(caught.value) is BackendError
            assert backend_status(caught.value)[0] == 502
            assert "longer than 1 MiB" in caught.value.message
        assert await disconnects(faulty, 4)  # each connection was dropped, not kept
        assert await streamed_text(up) == REPLY
        assert (await up.generate(REQUEST)).text == REPLY
    finally:
        await up.close()


async def test_a_whole_answer_past_the_limit_is_a_502(
    faulty: FaultyUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(openai_transport, "MAX_BODY_BYTES", 1 << 20)
    up = backend(faulty.url(), max_concurrency=1, max_retries=0)
    try:
        faulty.script.append(f"longline-{LONG}")
        with pytest.raises(BackendError) as caught:
            await up.generate(REQUEST)
        assert type(caught.value) is BackendError
        assert backend_status(caught.value)[0] == 502
        assert "larger than 1 MiB" in caught.value.message
        assert await disconnects(faulty, 1)
        assert (await up.generate(REQUEST)).text == REPLY
    finally:
        await up.close()


class _Content:
    """What `_lines` reads of a response: these pieces, one per read."""

    def __init__(self, pieces: list[bytes]) -> None:
        self._pieces = pieces

    def read_nowait(self) -> bytes:
        return self._pieces.pop(0) if self._pieces else b""

    def at_eof(self) -> bool:
        return not self._pieces

    async def readany(self) -> bytes:
        return self.read_nowait()


class _Response:
    def __init__(self, pieces: list[bytes]) -> None:
        self.content = _Content(pieces)


async def _read_lines(pieces: list[bytes], limit: int) -> list[str]:
    response = cast(aiohttp.ClientResponse, _Response(pieces))
    lines = openai_transport._lines(response, float("inf"), limit)
    async with aclosing(lines):
        return [line async for line in lines]


async def test_lines_split_across_pieces() -> None:
    pieces = [b"da", b"ta: a\r\nda", b"ta: ", b"b\n", b"\nx", b"y\r"]
    assert await _read_lines(pieces, 16) == ["data: a", "data: b", "", "xy"]
    assert await _read_lines([b"a" * 16 + b"\n" + b"b" * 16], 16) == ["a" * 16, "b" * 16]
    for pieces in ([b"a" * 17 + b"\n"], [b"a" * 10, b"a" * 7, b"\n"], [b"a" * 9] * 3):
        with pytest.raises(openai_transport.AnswerTooLarge, match="longer than 16 bytes"):
            await _read_lines(pieces, 16)


async def test_state_after_a_good_streamed_reply_is_healthy_with_its_latency(
    faulty: FaultyUpstream,
) -> None:
    up = backend(faulty.url(), max_retries=0)
    try:
        faulty.script.append("500")
        with pytest.raises(BackendError):
            await streamed_text(up)
        failed = await up.state()
        assert failed.last_error and "500" in failed.last_error
        assert failed.latency_ms is None
        assert await streamed_text(up) == REPLY
        state = await up.state()
    finally:
        await up.close()
    assert state.reachable and state.last_error is None
    assert state.latency_ms is not None and state.latency_ms > 0


async def test_status_after_a_good_streamed_reply_through_the_api(
    settings: Settings, faulty: FaultyUpstream
) -> None:
    upstream = backend(faulty.url(), name="upstream", max_retries=0)
    async with app_with(settings, BackendRouter([upstream])) as api:
        await upstream.checked()  # the start-up probe, before the script is set
        faulty.script.append("500")
        body = {"userId": "u", "message": "hi"}
        failed = await api.post(f"{API}/conversations", body, headers=SSE)
        assert failed.status_code == 502
        answered = await api.post(f"{API}/conversations", body, headers=SSE)
        assert answered.status_code == 200 and "event: done" in answered.text
        status = (await api.get(f"{API}/status")).json()["backends"][0]
    assert status["lastError"] is None
    assert status["latencyMs"] is not None and status["latencyMs"] > 0


async def test_a_retry_after_far_ahead_is_clamped(
    settings: Settings, faulty: FaultyUpstream
) -> None:
    up = backend(faulty.url("429date"), max_retries=0)
    try:
        with pytest.raises(BackendUnavailable) as caught:
            await up.generate(REQUEST)
    finally:
        await up.close()
    assert caught.value.retry_after == 3600 == openai_transport.MAX_RETRY_AFTER
    upstream = backend(faulty.url("429date"), name="upstream", max_retries=0)
    async with app_with(settings, BackendRouter([upstream])) as api:
        for headers in ({}, SSE):
            response = await api.post(
                f"{API}/conversations", {"userId": "u", "message": "hi"}, headers=headers
            )
            assert response.status_code == 503
            assert response.headers["retry-after"] == "3600"
