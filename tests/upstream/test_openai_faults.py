"""OpenAIBackend against the fault-injecting upstream: retries, error mapping, limits, secrecy."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

from gptactions.api.errors import backend_status
from gptactions.config import Settings
from gptactions.llm.base import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    ChatMessage,
    Chunk,
    GenerationRequest,
    match_choice,
)
from gptactions.llm.openai import OpenAIBackend
from gptactions.llm.openai_wire import parse_retry_after
from gptactions.llm.redact import LogRedactor, safe_url
from gptactions.llm.router import BackendRouter
from gptactions.runtime import Runtime

from .faulty import REPLY, FaultyUpstream

pytestmark = pytest.mark.upstream

KEY = "sk-test-VERY-SECRET-4242"
REQUEST = GenerationRequest(messages=(ChatMessage("user", "Say hello"),), max_tokens=16)


def backend(url: str, **options: Any) -> OpenAIBackend:
    settings: dict[str, Any] = {
        "name": "up",
        "base_url": url,
        "api_key": KEY,
        "backoff_base": 0.01,
        "backoff_max": 0.05,
        "total_timeout": 10.0,
    }
    settings.update(options)
    return OpenAIBackend(**settings)


async def collect(up: OpenAIBackend, request: GenerationRequest = REQUEST) -> list[Chunk]:
    return [chunk async for chunk in up.stream(request)]


async def test_generate_sends_the_key_and_reads_text_and_usage(faulty: FaultyUpstream) -> None:
    up = backend(faulty.url())
    await up.start()
    try:
        generation = await up.generate(REQUEST)
    finally:
        await up.close()
    assert generation.text == REPLY
    assert (generation.usage.prompt_tokens, generation.usage.completion_tokens) == (11, 5)
    assert generation.backend == "up"
    assert up.model == "faulty-model"  # asked the upstream's /models at start
    sent = faulty.requests[-1]
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.body["model"] == "faulty-model"
    assert sent.body["stream"] is False


async def test_stream_yields_pieces_then_usage(faulty: FaultyUpstream) -> None:
    up = backend(faulty.url(), model="m")
    chunks = await collect(up)
    await up.close()
    assert "".join(c.text for c in chunks) == REPLY
    assert len(chunks) > 2
    assert chunks[-1].done and chunks[-1].finish_reason == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 11
    assert faulty.requests[-1].body["stream_options"] == {"include_usage": True}


async def test_stream_options_refused_is_dropped_and_usage_estimated(
    faulty: FaultyUpstream,
) -> None:
    up = backend(faulty.url("no-stream-options"), model="m")
    chunks = await collect(up)
    chunks_again = await collect(up)
    await up.close()
    assert "".join(c.text for c in chunks) == REPLY == "".join(c.text for c in chunks_again)
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens > 0 and usage.prompt_tokens > 0
    assert [("stream_options" in r.body) for r in faulty.requests] == [True, False, False]


async def test_parameters_a_reasoning_model_refuses_are_adapted(faulty: FaultyUpstream) -> None:
    up = backend(faulty.url("reasoning"), model="o3-mini")
    assert (await up.generate(REQUEST)).text == REPLY
    assert (await up.generate(REQUEST)).text == REPLY
    await up.close()
    sent = [r.body for r in faulty.requests]
    assert len(sent) == 4  # two refusals, then one request per reply
    assert sent[-1]["max_completion_tokens"] == 16
    assert "max_tokens" not in sent[-1] and "temperature" not in sent[-1]


async def test_5xx_is_retried_until_the_upstream_answers(faulty: FaultyUpstream) -> None:
    faulty.script.extend(["500", "503"])
    up = backend(faulty.url(), model="m", max_retries=2)
    generation = await up.generate(REQUEST)
    await up.close()
    assert generation.text == REPLY
    assert [r.mode for r in faulty.requests] == ["500", "503", "ok"]


async def test_persistent_500_is_a_502_after_the_retries(faulty: FaultyUpstream) -> None:
    up = backend(faulty.url("500"), model="m", max_retries=2)
    with pytest.raises(BackendError) as caught:
        await up.generate(REQUEST)
    await up.close()
    assert backend_status(caught.value)[0] == 502
    assert "500" in caught.value.message
    assert len(faulty.requests) == 3


async def test_429_honours_retry_after(faulty: FaultyUpstream) -> None:
    faulty.script.append("429-1")
    up = backend(faulty.url(), model="m")
    started = time.monotonic()
    generation = await up.generate(REQUEST)
    await up.close()
    assert generation.text == REPLY
    assert time.monotonic() - started >= 1.0
    assert [r.mode for r in faulty.requests] == ["429-1", "ok"]


async def test_429_longer_than_the_time_left_is_a_503_at_once(faulty: FaultyUpstream) -> None:
    up = backend(faulty.url("429-30"), model="m", total_timeout=5)
    started = time.monotonic()
    with pytest.raises(BackendUnavailable) as caught:
        await up.generate(REQUEST)
    await up.close()
    assert time.monotonic() - started < 2
    assert backend_status(caught.value)[0] == 503
    assert caught.value.retry_after == 30
    assert len(faulty.requests) == 1


async def test_connection_reset_is_retried_then_502(faulty: FaultyUpstream) -> None:
    # The upstream accepted the connection, so it is there: a broken answer is a bad gateway.
    up = backend(faulty.url("reset"), model="m", max_retries=1)
    with pytest.raises(BackendError) as caught:
        await up.generate(REQUEST)
    assert type(caught.value) is BackendError and backend_status(caught.value)[0] == 502
    assert "broke off" in caught.value.message
    assert len(faulty.requests) == 2
    state = await up.state()
    await up.close()
    assert state.reachable and state.last_error


async def test_an_upstream_that_is_down_is_a_503(closed_url: str) -> None:
    up = backend(closed_url, model="m", max_retries=1)
    await up.start()  # a down upstream does not stop the server from starting
    with pytest.raises(BackendUnavailable):
        await up.generate(REQUEST)
    with pytest.raises(BackendUnavailable):
        await collect(up)
    state = await up.state()
    await up.close()
    assert state.reachable is False
    assert state.last_error and "unreachable" in state.last_error


async def test_malformed_json_is_a_502_without_retry(faulty: FaultyUpstream) -> None:
    up = backend(faulty.url("malformed"), model="m")
    with pytest.raises(BackendError) as caught:
        await up.generate(REQUEST)
    with pytest.raises(BackendError) as streamed:
        await collect(up)
    await up.close()
    assert backend_status(caught.value)[0] == 502 and "malformed" in caught.value.message
    assert backend_status(streamed.value)[0] == 502
    assert len(faulty.requests) == 2


async def test_a_stream_that_stops_midway_is_an_error_after_its_pieces(
    faulty: FaultyUpstream,
) -> None:
    up = backend(faulty.url("midway"), model="m")
    received: list[str] = []
    with pytest.raises(BackendError) as caught:
        async for chunk in up.stream(REQUEST):
            received.append(chunk.text)
    await up.close()
    assert type(caught.value) is BackendError and backend_status(caught.value)[0] == 502
    assert "midway" in caught.value.message
    assert "".join(received).startswith("Hello")
    assert len(faulty.requests) == 1  # never retried once the reply has begun


async def test_an_error_event_midway_is_an_error(faulty: FaultyUpstream) -> None:
    up = backend(faulty.url("error-event"), model="m")
    with pytest.raises(BackendError, match="the model crashed"):
        await collect(up)
    await up.close()


async def test_total_timeout_is_a_504(faulty: FaultyUpstream) -> None:
    up = backend(faulty.url("slow-3"), model="m", total_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(BackendTimeout) as caught:
        await up.generate(REQUEST)
    assert backend_status(caught.value)[0] == 504
    assert time.monotonic() - started < 2
    state = await up.state()
    await up.close()
    assert state.last_error and "0.5s" in state.last_error


async def test_total_timeout_covers_a_stream(faulty: FaultyUpstream) -> None:
    up = backend(faulty.url("drip-0.3"), model="m", total_timeout=0.7)
    received: list[str] = []
    started = time.monotonic()
    with pytest.raises(BackendTimeout):
        async for chunk in up.stream(REQUEST):
            received.append(chunk.text)
    await up.close()
    assert time.monotonic() - started < 2
    assert received  # what came before the deadline was delivered


async def test_read_timeout_is_a_504_without_retry(faulty: FaultyUpstream) -> None:
    up = backend(faulty.url("slow-3"), model="m", read_timeout=0.3)
    with pytest.raises(BackendTimeout):
        await up.generate(REQUEST)
    await up.close()
    assert len(faulty.requests) == 1


async def test_concurrency_cap_refuses_beyond_a_short_wait(faulty: FaultyUpstream) -> None:
    up = backend(faulty.url("slow-1"), model="m", max_concurrency=1, queue_timeout=0.2)
    first = asyncio.create_task(up.generate(REQUEST))
    await asyncio.sleep(0.1)
    with pytest.raises(BackendUnavailable) as caught:
        await up.generate(REQUEST)
    assert "saturated" in caught.value.message and caught.value.retry_after
    assert (await first).text == REPLY
    assert (await up.generate(REQUEST)).text == REPLY  # the slot was released
    await up.close()
    assert len(faulty.requests) == 2


async def test_waiting_requests_get_a_slot_when_one_frees(faulty: FaultyUpstream) -> None:
    up = backend(faulty.url("slow-0.3"), model="m", max_concurrency=2, queue_timeout=5)
    replies = await asyncio.gather(*(up.generate(REQUEST) for _ in range(5)))
    await up.close()
    assert [r.text for r in replies] == [REPLY] * 5


async def test_closing_a_stream_cancels_the_upstream_request(faulty: FaultyUpstream) -> None:
    up = backend(faulty.url("drip-0.2"), model="m")
    stream = up.stream(REQUEST)
    first = await anext(stream)
    assert first.text == "Hello"
    await stream.aclose()  # type: ignore[attr-defined]
    assert await asyncio.to_thread(faulty.wait_for_disconnects, 1)
    await up.close()


async def test_cancelling_the_task_cancels_the_upstream_request(faulty: FaultyUpstream) -> None:
    up = backend(faulty.url("drip-0.2"), model="m", max_concurrency=1, queue_timeout=0.1)
    seen = asyncio.Event()

    async def consume() -> None:
        async for _chunk in up.stream(REQUEST):
            seen.set()

    task = asyncio.create_task(consume())
    await seen.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.to_thread(faulty.wait_for_disconnects, 1)
    # The cancelled request gave its slot back.
    faulty.script.append("ok")
    assert (await up.generate(REQUEST)).text == REPLY
    await up.close()


async def test_choices_ask_for_an_enum_and_the_answer_is_matched(faulty: FaultyUpstream) -> None:
    up = backend(faulty.url(), model="m")
    request = GenerationRequest(messages=REQUEST.messages, choices=("Hello", "Goodbye"))
    generation = await up.generate(request)
    assert generation.text == "Hello"
    response_format = faulty.requests[-1].body["response_format"]
    assert response_format["type"] == "json_schema"
    schema = response_format["json_schema"]["schema"]
    assert schema["properties"]["choice"]["enum"] == ["Hello", "Goodbye"]
    # An answer that names none of the choices is the caller's to judge, not a bad gateway.
    unmatched = await up.generate(
        GenerationRequest(messages=REQUEST.messages, choices=("yes", "no"))
    )
    assert unmatched.text == REPLY
    await up.close()


async def test_json_schema_becomes_response_format(faulty: FaultyUpstream) -> None:
    up = backend(faulty.url(), model="m")
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    await up.generate(GenerationRequest(messages=REQUEST.messages, json_schema=schema))
    await up.close()
    assert faulty.requests[-1].body["response_format"]["json_schema"]["schema"] == schema


async def test_the_key_never_leaks(
    faulty: FaultyUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = faulty.url("500").replace("http://", f"http://user:{KEY}@") + f"?key={KEY}"
    up = backend(url, model="m", max_retries=1)
    assert KEY not in repr(up) and KEY not in str(vars(up)["_api_key"])
    # httpx logs each URL: the runtime scrubs its backends' secrets from those logs while open.
    runtime = Runtime(Settings(), router=BackendRouter([up]))
    await runtime.open()
    try:
        with pytest.raises(BackendError) as caught:
            await up.generate(REQUEST)
        state = await up.state()
    finally:
        await runtime.close()
    for text in (str(caught.value), caught.value.message, repr(state), caplog.text):
        assert KEY not in text
    assert not any(isinstance(f, LogRedactor) for f in logging.getLogger("httpx").filters)


async def test_an_upstream_echoing_the_key_is_scrubbed(faulty: FaultyUpstream) -> None:
    up = backend(faulty.url("echo-auth"), model="m")
    with pytest.raises(BackendError) as caught:
        await up.generate(REQUEST)
    state = await up.state()
    await up.close()
    assert backend_status(caught.value)[0] == 502 and "401" in caught.value.message
    assert "Bearer ***" in caught.value.message
    assert KEY not in caught.value.message and KEY not in str(state.last_error)
    assert len(faulty.requests) == 1  # a refusal is not retried


async def test_state_reports_latency_after_a_reply(faulty: FaultyUpstream) -> None:
    up = backend(faulty.url(), model="m")
    await up.generate(REQUEST)
    state = await up.state()
    await up.close()
    assert state.reachable and state.last_error is None
    assert state.latency_ms is not None and state.latency_ms > 0
    assert (state.name, state.kind, state.model) == ("up", "openai", "m")


def test_helpers() -> None:
    assert parse_retry_after("7") == 7
    assert parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0
    assert safe_url(f"https://u:{KEY}@api.example.com/v1?key={KEY}") == (
        "https://api.example.com/v1"
    )
    assert match_choice('{"choice": "no"}', ("yes", "no")) == "no"
    assert match_choice(' "Yes."', ("yes", "no")) == "yes"
    assert match_choice("It is no.", ("yes", "no")) == "no"
    assert match_choice("yes or no", ("yes", "no")) is None
