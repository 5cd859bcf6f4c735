"""The usage of every attempt at a generation is charged: the router adds what a failed attempt is
known to have used (`Progress.failed`) to the attempt that answered, or keeps it for the failure
that ends the request. Logic with fakes that note their usage as the embedded model does."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gptactions.llm.base import (
    BackendError,
    ChatMessage,
    Chunk,
    Generation,
    GenerationRequest,
    Usage,
    current_progress,
    tracked_progress,
)
from gptactions.llm.fake import FakeBackend
from gptactions.llm.router import BackendRouter

REQUEST = GenerationRequest(messages=(ChatMessage("user", "tell me a story"),), max_tokens=16)
USED = Usage(40, 7)
"""What the failing backend had used when it failed."""


class FailsMidway(FakeBackend):
    """Fails after generating some tokens, noting in the progress what it used (as the embedded
    model's stream does on its way out), before any chunk."""

    def __init__(self, used: Usage | None = USED, *, name: str = "first") -> None:
        super().__init__(name=name)
        self.used = used

    def _fail(self, request: GenerationRequest) -> BackendError:
        self.requests.append(request)
        progress = current_progress()
        if progress is not None and self.used is not None:
            progress.usage = self.used
        return BackendError("the model failed midway")

    async def generate(self, request: GenerationRequest) -> Generation:
        raise self._fail(request)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        raise self._fail(request)
        yield Chunk("")  # pragma: no cover: a generator


def router(*backends: FakeBackend) -> BackendRouter:
    return BackendRouter(
        list(backends), default=backends[0].name, fallbacks=[b.name for b in backends[1:]]
    )


def with_usage(usage: Usage, extra: Usage) -> Usage:
    return Usage(
        usage.prompt_tokens + extra.prompt_tokens, usage.completion_tokens + extra.completion_tokens
    )


async def test_a_fallbacks_reply_carries_the_failed_attempts_usage() -> None:
    second = FakeBackend(["the answer"], name="second")
    answered = Usage(await second.count_tokens(REQUEST.messages), 2)
    with tracked_progress() as progress:
        generation = await router(FailsMidway(), second).generate(REQUEST)
    assert generation.backend == "second" and generation.text == "the answer"
    assert generation.usage == with_usage(answered, USED)
    assert progress.spent == generation.usage and progress.lost == Usage()


async def test_a_fallbacks_reply_carries_it_without_a_progress_kept() -> None:
    second = FakeBackend(["the answer"], name="second")
    generation = await router(FailsMidway(), second).generate(REQUEST)
    assert generation.usage.prompt_tokens == USED.prompt_tokens + await second.count_tokens(
        REQUEST.messages
    )


async def test_a_fallbacks_stream_ends_with_the_failed_attempts_usage() -> None:
    second = FakeBackend(["the answer"], name="second")
    stream = router(FailsMidway(), second).stream(REQUEST)
    chunks = [chunk async for chunk in stream]
    assert stream.backend == "second" and "".join(c.text for c in chunks) == "the answer"
    assert chunks[-1].usage == with_usage(
        Usage(await second.count_tokens(REQUEST.messages), 2), USED
    )


async def test_a_deadline_reply_through_a_fallback_counts_both_once() -> None:
    second = FakeBackend(["the answer"], name="second")
    soon = GenerationRequest(messages=REQUEST.messages, max_tokens=16, deadline=1e12)
    with tracked_progress() as progress:
        generation = await router(FailsMidway(), second).generate(soon)
    answered = Usage(await second.count_tokens(REQUEST.messages), 2)
    assert generation.usage == with_usage(answered, USED) == progress.spent


async def test_when_every_backend_fails_what_they_used_stays_charged() -> None:
    with tracked_progress() as progress, pytest.raises(BackendError):
        await router(FailsMidway(), FailsMidway(Usage(3, 0), name="second")).generate(REQUEST)
    assert (await progress.so_far()).usage == with_usage(USED, Usage(3, 0))

    stream = router(FailsMidway()).stream(REQUEST)
    with pytest.raises(BackendError):
        await anext(stream)
    assert (await stream.cut_short()).usage == USED


async def test_an_attempt_that_used_nothing_known_adds_nothing() -> None:
    second = FakeBackend(["the answer"], name="second")
    generation = await router(FailsMidway(used=None), second).generate(REQUEST)
    assert generation.usage == Usage(await second.count_tokens(REQUEST.messages), 2)
