"""The router's ordered fallbacks: logic with fakes, then real upstreams and the local model."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from gptactions.api.errors import backend_status
from gptactions.llm.base import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    ChatMessage,
    Chunk,
    GenerationRequest,
    PromptTooLong,
)
from gptactions.llm.fake import FakeBackend
from gptactions.llm.local import LocalBackend
from gptactions.llm.openai import OpenAIBackend
from gptactions.llm.router import BackendRouter, UnknownModel
from tests.conftest import _KeepLoaded

from .faulty import REPLY, FaultyUpstream

REQUEST = GenerationRequest(messages=(ChatMessage("user", "hi"),), max_tokens=16)


class StopsMidway(FakeBackend):
    """Streams one piece, then fails."""

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        self.requests.append(request)
        yield Chunk(text="partial")
        raise BackendError("lost the upstream midway")


def router(*backends: FakeBackend, fallbacks: tuple[str, ...] = ()) -> BackendRouter:
    return BackendRouter(list(backends), default=backends[0].name, fallbacks=fallbacks)


@pytest.mark.parametrize(
    "error",
    [
        BackendUnavailable("down", retry_after=3),
        BackendError("bad answer"),
        BackendTimeout("too slow"),
    ],
)
async def test_generate_falls_back_in_order(error: BackendError) -> None:
    primary = FakeBackend([error], name="primary")
    second = FakeBackend([BackendUnavailable("also down")], name="second")
    third = FakeBackend(["from third"], name="third")
    generation = await router(primary, second, third, fallbacks=("second", "third")).generate(
        REQUEST
    )
    assert generation.text == "from third" and generation.backend == "third"
    assert len(primary.requests) == len(second.requests) == len(third.requests) == 1


async def test_without_fallbacks_the_error_is_the_backends() -> None:
    primary = FakeBackend([BackendTimeout("too slow")], name="primary")
    spare = FakeBackend(name="spare")
    with pytest.raises(BackendTimeout, match="too slow"):
        await router(primary, spare).generate(REQUEST)
    assert not spare.requests


async def test_a_named_model_falls_back_too() -> None:
    big = FakeBackend([BackendUnavailable("down")], name="big")
    local = FakeBackend(["local answer"], name="local")
    routed = BackendRouter([local, big], default="local", fallbacks=["local"])
    assert (await routed.generate(REQUEST, "big")).backend == "local"


async def test_prompt_too_long_does_not_fall_back() -> None:
    primary = FakeBackend([PromptTooLong("too long")], name="primary")
    spare = FakeBackend(name="spare")
    with pytest.raises(PromptTooLong):
        await router(primary, spare, fallbacks=("spare",)).generate(REQUEST)
    assert not spare.requests


async def test_every_backend_down_is_503_with_the_shortest_retry_after() -> None:
    primary = FakeBackend([BackendUnavailable("a down", retry_after=9)], name="a")
    spare = FakeBackend([BackendUnavailable("b down", retry_after=2)], name="b")
    with pytest.raises(BackendUnavailable) as caught:
        await router(primary, spare, fallbacks=("b",)).generate(REQUEST)
    assert backend_status(caught.value)[0] == 503 and caught.value.retry_after == 2
    assert "a down" in caught.value.message and "b down" in caught.value.message


async def test_mixed_failures_answer_with_the_chosen_backends_error() -> None:
    primary = FakeBackend([BackendTimeout("slow")], name="a")
    spare = FakeBackend([BackendUnavailable("busy")], name="b")
    with pytest.raises(BackendTimeout) as caught:
        await router(primary, spare, fallbacks=("b",)).generate(REQUEST)
    assert backend_status(caught.value)[0] == 504


async def test_a_fallback_too_small_for_the_prompt_is_skipped() -> None:
    primary = FakeBackend([BackendUnavailable("down")], name="big", context_window=8192)
    small = FakeBackend(name="small", context_window=300)
    request = GenerationRequest(messages=(ChatMessage("user", "word " * 400),), max_tokens=16)
    with pytest.raises(BackendUnavailable):
        await router(primary, small, fallbacks=("small",)).generate(request)
    assert not small.requests


async def test_stream_falls_back_before_the_first_chunk() -> None:
    primary = FakeBackend([BackendUnavailable("down")], name="primary", model="p-model")
    spare = FakeBackend(["from the spare"], name="spare", model="s-model")
    stream = router(primary, spare, fallbacks=("spare",)).stream(REQUEST)
    chunks = [chunk async for chunk in stream]
    assert "".join(c.text for c in chunks) == "from the spare" and chunks[-1].done
    assert (stream.backend, stream.model) == ("spare", "s-model")


async def test_stream_never_falls_back_after_the_first_chunk() -> None:
    primary = StopsMidway(name="primary")
    spare = FakeBackend(["never"], name="spare")
    stream = router(primary, spare, fallbacks=("spare",)).stream(REQUEST)
    received: list[str] = []
    with pytest.raises(BackendError, match="midway"):
        async for chunk in stream:
            received.append(chunk.text)
    assert received == ["partial"]
    assert not spare.requests


class WontStart(FakeBackend):
    """A backend whose start fails, as a missing model file would."""

    async def start(self) -> None:
        raise FileNotFoundError("no model file")


async def test_a_fallback_that_cannot_start_does_not_stop_the_server() -> None:
    routed = BackendRouter([FakeBackend(name="up"), WontStart(name="local")], fallbacks=["local"])
    await routed.start()  # logged, not raised
    with pytest.raises(FileNotFoundError):
        await BackendRouter([WontStart(name="local"), FakeBackend(name="up")]).start()


def test_unknown_model_lists_the_names() -> None:
    routed = router(FakeBackend(name="a"), FakeBackend(name="b"))
    with pytest.raises(UnknownModel) as caught:
        routed.resolve("c")
    assert caught.value.available == ["a", "b"]
    assert routed.names == ["a", "b"]
    assert routed.context_window("b") == 2048


def test_misconfiguration_is_refused() -> None:
    with pytest.raises(ValueError, match="fallback"):
        BackendRouter([FakeBackend(name="a")], fallbacks=["nope"])
    with pytest.raises(ValueError, match="two backends"):
        BackendRouter([FakeBackend(name="a"), FakeBackend(name="a")])


# Against real upstreams


@pytest.mark.upstream
async def test_a_failing_upstream_falls_back_to_the_fake(faulty: FaultyUpstream) -> None:
    up = OpenAIBackend(name="up", base_url=faulty.url("reset"), model="m", backoff_max=0.01)
    spare = FakeBackend(["spare answer"], name="local")
    routed = BackendRouter([up, spare], fallbacks=["local"])
    generation = await routed.generate(REQUEST)
    stream = routed.stream(REQUEST)
    text = "".join([chunk.text async for chunk in stream])
    states = {state.name: state for state in await routed.states()}
    await routed.close()
    assert generation.backend == "local" and generation.text == "spare answer"
    assert stream.backend == "local" and text.startswith("echo")
    assert states["up"].last_error and states["up"].reachable  # there, but answering badly


@pytest.mark.upstream
async def test_an_upstreams_error_text_is_logged_once(
    faulty: FaultyUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    """The text may quote the user's prompt: the backend logs it, the router only names it."""
    caplog.set_level(logging.INFO)
    up = OpenAIBackend(name="up", base_url=faulty.url("echo-prompt"), model="m")
    quoted = GenerationRequest(messages=(ChatMessage("user", "my secret plan"),), max_tokens=8)
    routed = BackendRouter([up, FakeBackend(["spare"], name="local")], fallbacks=["local"])
    generation = await routed.generate(quoted)
    await routed.close()
    assert generation.backend == "local"
    assert caplog.text.count("my secret plan") == 1
    assert "backend 'up' failed (BackendError)" in caplog.text
    # The router still gives the text of a failure no backend logged.
    caplog.clear()
    failing = FakeBackend([BackendUnavailable("the model is busy")], name="busy")
    await router(failing, FakeBackend(name="spare"), fallbacks=("spare",)).generate(REQUEST)
    assert "backend 'busy' failed: the model is busy" in caplog.text


@pytest.mark.upstream
async def test_a_stream_that_breaks_midway_is_not_replaced(faulty: FaultyUpstream) -> None:
    up = OpenAIBackend(name="up", base_url=faulty.url("midway"), model="m")
    spare = FakeBackend(name="local")
    stream = BackendRouter([up, spare], fallbacks=["local"]).stream(REQUEST)
    received: list[str] = []
    with pytest.raises(BackendError):
        async for chunk in stream:
            received.append(chunk.text)
    await up.close()
    assert received and stream.backend == "up"
    assert not spare.requests


@pytest.mark.upstream
async def test_closing_a_routed_stream_cancels_the_upstream(faulty: FaultyUpstream) -> None:
    up = OpenAIBackend(name="up", base_url=faulty.url("drip-0.2"), model="m")
    routed = BackendRouter([up, FakeBackend(name="local")], fallbacks=["local"])
    stream = routed.stream(REQUEST)
    assert (await anext(stream)).text == "Hello"
    await stream.aclose()
    assert await asyncio.to_thread(faulty.wait_for_disconnects, 1)
    await routed.close()


@pytest.mark.upstream
async def test_a_healthy_upstream_is_used_first(faulty: FaultyUpstream) -> None:
    up = OpenAIBackend(name="up", base_url=faulty.url(), model="m")
    spare = FakeBackend(name="local")
    generation = await BackendRouter([up, spare], fallbacks=["local"]).generate(REQUEST)
    await up.close()
    assert generation.text == REPLY and not spare.requests


@pytest.mark.upstream
@pytest.mark.model
async def test_a_down_upstream_falls_back_to_the_embedded_model(
    closed_url: str, local_backend: LocalBackend
) -> None:
    up = OpenAIBackend(name="up", base_url=closed_url, model="m", max_retries=0)
    assert local_backend.name == "local"
    local = _KeepLoaded(local_backend)  # the run's model, loaded once
    routed = BackendRouter([up, local], fallbacks=["local"])  # type: ignore[list-item]
    await routed.start()
    try:
        generation = await routed.generate(REQUEST)
        stream = routed.stream(REQUEST)
        streamed = [chunk async for chunk in stream]
    finally:
        await routed.close()
    assert generation.backend == "local" and generation.text.strip()
    assert stream.backend == "local" and streamed[-1].done
    assert "".join(c.text for c in streamed) == generation.text
