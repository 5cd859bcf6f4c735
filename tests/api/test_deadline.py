"""GPTACTIONS_REQUEST_DEADLINE: every /api/v1/gpt request is answered before it, with the reply
so far (finishReason deadline) or, when the model never began, a 503 with Retry-After; every
reply says how it ended; replies and action results fit GPTACTIONS_MAX_RESPONSE_CHARS."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from gptactions.config import Settings
from gptactions.llm.base import ChatMessage, Chunk, Generation, GenerationRequest, Usage
from gptactions.llm.fake import FakeBackend
from gptactions.services.interactions import LogQuery
from gptactions.services.keys import TERMINAL
from tests.conftest import ADMIN_KEY, ApiClient, running_app
from tests.upstream.test_streaming_api import events

API = "/api/v1/gpt"
SSE = {"Accept": "text/event-stream"}
# A deadline short enough for a quick test; the generation ends a quarter of it earlier.
DEADLINE = 2.0


class Stalls(FakeBackend):
    """Sends `pieces` at once, then nothing until the test ends (a model that has stalled, or a
    request still waiting for a model when `pieces` is empty)."""

    def __init__(self, pieces: tuple[str, ...], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pieces = pieces
        self.released = asyncio.Event()
        self.closed = 0

    async def generate(self, request: GenerationRequest) -> Generation:
        raise AssertionError("with a deadline, replies are streamed")

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        self.requests.append(request)
        try:
            for piece in self.pieces:
                yield Chunk(text=piece)
            await self.released.wait()
            yield Chunk(text="", done=True, usage=Usage(1, 1), finish_reason="stop")
        finally:
            self.closed += 1


class StopsAtLength(FakeBackend):
    """A reply cut by maxTokens."""

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        self.requests.append(request)
        yield Chunk(text="Once upon a")
        yield Chunk(text="", done=True, usage=Usage(3, 3), finish_reason="length")


class SlowToCount(FakeBackend):
    """Holds the request before the model is asked (its tokens are never counted)."""

    async def count_tokens(self, messages: tuple[ChatMessage, ...]) -> int:
        await asyncio.Event().wait()
        return 0


def quick(settings: Settings, **overrides: Any) -> Settings:
    return settings.model_copy(update={"request_deadline": DEADLINE, **overrides})


async def latest_log(api: ApiClient) -> dict[str, Any]:
    entries: list[dict[str, Any]] = (await api.get(f"{API}/logs")).json()
    return entries[0]


async def test_a_reply_still_running_at_the_deadline_is_answered_with_what_it_has(
    settings: Settings,
) -> None:
    backend = Stalls(("Hello", " there"))
    async with running_app(quick(settings), backend) as api:
        answer = await api.post(f"{API}/conversations", {"userId": "u", "message": "hi"})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["reply"] == "Hello there"
        assert body["truncated"] is True and body["finishReason"] == "deadline"
        assert backend.closed == 1  # the generation was stopped
        entry = await latest_log(api)
        assert entry["status"] == "ok" and entry["finishReason"] == "deadline"
        assert entry["reply"] == "Hello there"
        # The backend's count of the prompt, though its last chunk (with the usage) never came.
        assert body["usage"]["promptTokens"] == entry["promptTokens"] > 0
        assert entry["completionTokens"] == 2
        # The turn is part of the conversation: /respond continues it.
        backend.pieces = ("More",)
        follow = await api.post(
            f"{API}/respond",
            {"userId": "u", "message": "go on", "conversationId": body["conversationId"]},
        )
        assert follow.json()["reply"] == "More"
        assert [m.content for m in backend.requests[-1].messages][-2:] == ["Hello there", "go on"]


async def test_a_request_that_never_reached_the_model_is_a_503_with_retry_after(
    settings: Settings,
) -> None:
    backend = Stalls(())
    async with running_app(quick(settings), backend) as api:
        answer = await api.post(f"{API}/conversations", {"userId": "u", "message": "hi"})
        assert answer.status_code == 503, answer.text
        assert int(answer.headers["retry-after"]) >= 1
        assert answer.json()["error"]["code"] == "deadline_exceeded"
        assert backend.closed == 1  # the waiting request was withdrawn
        entry = await latest_log(api)
        assert entry["status"] == "error" and "deadline" in entry["error"]
        assert entry["finishReason"] is None


async def test_a_body_shorter_than_announced_is_a_408_at_the_deadline(settings: Settings) -> None:
    """The client sent part of its body and then nothing: it was answered 503 "retry shortly",
    as if the server were late."""

    async def half_a_body() -> AsyncIterator[bytes]:
        yield b'{"userId": "u", '
        await asyncio.Event().wait()  # the rest never comes

    async with running_app(quick(settings), FakeBackend(["never asked"])) as api:
        answer = await api.http.post(
            f"{API}/conversations",
            content=half_a_body(),
            headers={"Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "application/json"},
        )
    assert answer.status_code == 408, answer.text
    assert answer.headers["connection"] == "close" and "retry-after" not in answer.headers
    error = answer.json()["error"]
    assert error["code"] == "request_timeout" and "body did not all arrive" in error["message"]


async def test_a_stream_at_its_deadline_ends_with_a_done_event_saying_so(
    settings: Settings,
) -> None:
    backend = Stalls(("Hello", " world"))
    async with running_app(quick(settings), backend) as api:
        answer = await api.post(
            f"{API}/conversations", {"userId": "u", "message": "hi"}, headers=SSE
        )
        assert answer.status_code == 200
        received = events(answer.text)
        assert [kind for kind, _ in received] == ["token", "token", "done"]
        done = received[-1][1]
        assert done["reply"] == "Hello world"
        assert done["finishReason"] == "deadline" and done["truncated"] is True
        entry = await latest_log(api)
        assert entry["finishReason"] == "deadline"
        assert done["usage"]["promptTokens"] == entry["promptTokens"] > 0
        # Named in the head too, before any event: a stream cut short says where its turn is.
        conversation = answer.headers["x-conversation-id"]
        assert conversation == done["conversationId"] == entry["conversationId"]


async def test_a_stream_that_never_began_is_a_503_before_any_event(settings: Settings) -> None:
    async with running_app(quick(settings), Stalls(())) as api:
        answer = await api.post(
            f"{API}/conversations", {"userId": "u", "message": "hi"}, headers=SSE
        )
        assert answer.status_code == 503
        assert answer.headers["content-type"].startswith("application/json")
        assert "retry-after" in answer.headers


async def test_an_action_at_its_deadline_answers_with_the_result_so_far(
    settings: Settings,
) -> None:
    backend = Stalls(("Paris is", " the capital"))
    async with running_app(quick(settings), backend) as api:
        answer = await api.post(
            f"{API}/actions", {"action": "answer", "parameters": {"question": "Capital?"}}
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["success"] is True and body["result"] == "Paris is the capital"
        assert body["finishReason"] == "deadline" and body["truncated"] is True
        assert len(backend.requests) == 1  # no second attempt after the deadline
        assert (await latest_log(api))["finishReason"] == "deadline"


async def test_a_request_held_up_before_the_model_is_still_answered_before_the_deadline(
    settings: Settings,
) -> None:
    async with running_app(quick(settings), SlowToCount()) as api:
        answer = await api.post(f"{API}/conversations", {"userId": "u", "message": "hi"})
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"]["code"] == "deadline_exceeded"
        assert "retry-after" in answer.headers


async def test_every_reply_says_how_it_ended(settings: Settings) -> None:
    async with running_app(settings, FakeBackend(["All done."])) as api:
        stopped = (await api.post(f"{API}/conversations", {"userId": "u", "message": "a"})).json()
        assert stopped["finishReason"] == "stop" and stopped["truncated"] is False
        assert (await latest_log(api))["finishReason"] == "stop"
        action = (
            await api.post(f"{API}/actions", {"action": "answer", "parameters": {"question": "?"}})
        ).json()
        assert action["finishReason"] == "stop" and action["truncated"] is False
    async with running_app(settings, StopsAtLength()) as api:
        cut = (await api.post(f"{API}/conversations", {"userId": "u", "message": "a"})).json()
        assert cut["finishReason"] == "length" and cut["truncated"] is True
        assert (await latest_log(api))["finishReason"] == "length"
        # The OpenAI-compatible API's calls say it in the log too.
        chat = {"model": "fake", "messages": [{"role": "user", "content": "a"}], "stream": True}
        assert (await api.post("/v1/chat/completions", chat)).status_code == 200
        logged = await latest_log(api)
        assert logged["kind"] == "chat.completion" and logged["finishReason"] == "length"


async def test_a_reply_longer_than_the_response_limit_is_shortened_visibly(
    settings: Settings,
) -> None:
    long_reply = "word " * 30_000  # 150,000 characters
    tight = settings.model_copy(update={"max_response_chars": 10_000})
    async with running_app(tight, FakeBackend([long_reply, long_reply])) as api:
        answer = await api.post(f"{API}/conversations", {"userId": "u", "message": "hi"})
        assert answer.status_code == 200
        assert len(answer.text) <= 10_000
        body = answer.json()
        assert body["truncatedFields"] == ["reply"] and body["truncated"] is True
        assert "characters omitted]" in body["reply"]
        assert body["finishReason"] == "stop"  # the model ended it; the answer was shortened
        # The log keeps the whole reply.
        page = await api.runtime.log.page(TERMINAL, LogQuery(limit=1))
        assert page.entries[0].reply == long_reply.strip()
        streamed = await api.post(
            f"{API}/conversations", {"userId": "u", "message": "hi"}, headers=SSE
        )
        done = events(streamed.text)[-1][1]
        assert len(json.dumps(done)) <= 10_000 and done["truncatedFields"] == ["reply"]


async def test_an_action_result_longer_than_the_response_limit_is_shortened_visibly(
    settings: Settings,
) -> None:
    extracted = json.dumps({"name": "x" * 50_000})
    tight = settings.model_copy(update={"max_response_chars": 10_000})
    async with running_app(tight, FakeBackend([extracted, "y " * 40_000])) as api:
        answer = await api.post(
            f"{API}/actions",
            {
                "action": "extract",
                "parameters": {"text": "a", "fields": {"name": "string"}},
            },
        )
        assert answer.status_code == 200, answer.text
        assert len(answer.text) <= 10_000
        body = answer.json()
        assert body["success"] is True, body["result"][:200]
        # The parsed value goes first (the result holds it too), then the text is cut.
        assert body["data"] is None and body["truncatedFields"] == ["data", "result"]
        assert "characters omitted]" in body["result"]
        text = await api.post(
            f"{API}/actions", {"action": "answer", "parameters": {"question": "?"}}
        )
        assert len(text.text) <= 10_000 and text.json()["truncatedFields"] == ["result"]
