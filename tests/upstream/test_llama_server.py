"""OpenAIBackend against a real OpenAI-compatible server: llama-cpp-python's, with SmolLM2."""

from __future__ import annotations

import json

import pytest

from gptactions.llm.base import ChatMessage, GenerationRequest
from gptactions.llm.openai import OpenAIBackend

pytestmark = [pytest.mark.upstream, pytest.mark.model]

QUESTION = (ChatMessage("user", "What is the capital of France?"),)


async def started(url: str, **options: object) -> OpenAIBackend:
    backend = OpenAIBackend(name="llama", base_url=url, api_key="sk-unused", **options)  # type: ignore[arg-type]
    await backend.start()
    return backend


async def test_generate_stream_and_usage(llama_server: str) -> None:
    backend = await started(llama_server)
    try:
        request = GenerationRequest(messages=QUESTION, max_tokens=24)
        generation = await backend.generate(request)
        chunks = [chunk async for chunk in backend.stream(request)]
        state = await backend.state()
    finally:
        await backend.close()
    assert generation.text.strip()
    assert generation.usage.prompt_tokens > 0 and 0 < generation.usage.completion_tokens <= 24
    assert generation.backend == "llama" and backend.model.endswith(".gguf")
    streamed = "".join(chunk.text for chunk in chunks)
    assert len(chunks) > 3 and chunks[-1].done
    # Temperature 0: the streamed reply is the same text as the whole one.
    assert streamed == generation.text
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens > 0
    assert state.reachable and state.last_error is None and state.latency_ms


async def test_structured_output_through_the_server(llama_server: str) -> None:
    backend = await started(llama_server, model="smollm2")
    try:
        choice = await backend.generate(
            GenerationRequest(
                messages=(ChatMessage("user", "Is the sky blue? Answer yes or no."),),
                choices=("yes", "no"),
                max_tokens=16,
            )
        )
        schema = {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        }
        structured = await backend.generate(
            GenerationRequest(messages=QUESTION, json_schema=schema, max_tokens=40)
        )
    finally:
        await backend.close()
    assert choice.text in ("yes", "no")
    assert isinstance(json.loads(structured.text)["city"], str)


async def test_token_estimate_is_on_the_high_side_of_the_servers_count(llama_server: str) -> None:
    backend = await started(llama_server)
    text = "The quick brown fox jumps over the lazy dog. " * 20
    try:
        estimate = await backend.count_tokens((ChatMessage("user", text),))
        generation = await backend.generate(
            GenerationRequest(messages=(ChatMessage("user", text),), max_tokens=1)
        )
    finally:
        await backend.close()
    assert estimate >= generation.usage.prompt_tokens * 0.9
