"""The OpenAI-compatible API in front of the fault-injecting upstream: what passes through, and
how a client that leaves or an upstream that fails midway is answered and logged."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import openai
import pytest

from gptactions.config import Settings
from gptactions.llm.openai import OpenAIBackend
from gptactions.llm.router import BackendRouter
from tests.conftest import ADMIN_KEY

from .faulty import CALL_ARGUMENTS, REPLY, FaultyUpstream
from .test_streaming_api import served

pytestmark = pytest.mark.upstream

AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
CHAT = "/v1/chat/completions"
HELLO: dict[str, Any] = {"model": "upstream", "messages": [{"role": "user", "content": "hi"}]}


def router(faulty: FaultyUpstream, mode: str) -> BackendRouter:
    return BackendRouter([OpenAIBackend(name="upstream", base_url=faulty.url(mode), model="m")])


async def latest_log(client: httpx.AsyncClient) -> dict[str, Any]:
    """The newest interaction, once the server has recorded one."""
    for _ in range(200):
        logs = (await client.get("/api/v1/gpt/logs", headers=AUTH)).json()
        if logs:
            entry: dict[str, Any] = logs[0]
            return entry
        await asyncio.sleep(0.05)
    raise AssertionError("nothing was recorded")


async def test_what_the_client_sent_reaches_the_upstream_as_sent(
    settings: Settings, faulty: FaultyUpstream
) -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    response_format = {
        "type": "json_schema",
        "json_schema": {  # as strict as OpenAI takes it: every object closed
            "name": "answer",
            "strict": True,
            "schema": {"type": "object", "properties": {}, "additionalProperties": False},
        },
    }
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    body = {
        **HELLO,
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "42"},
        ],
        "top_p": 0.5,
        "seed": 7,
        "stop": ["END"],
        "max_tokens": 9,
        "tools": [tool],
        "tool_choice": {"type": "function", "function": {"name": "f"}},
        "response_format": response_format,
    }
    async with served(settings, router(faulty, "ok")) as client:
        response = await client.post(CHAT, json=body, headers=AUTH)
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == REPLY
    sent = faulty.requests[-1].body
    assert sent["messages"] == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "content": "42", "tool_call_id": "call_1"},
    ]
    assert (sent["top_p"], sent["seed"], sent["stop"], sent["max_tokens"]) == (0.5, 7, ["END"], 9)
    assert sent["tools"] == [tool] and sent["tool_choice"] == body["tool_choice"]
    assert sent["response_format"] == response_format


async def test_penalties_and_logit_bias_reach_the_upstream_and_defaults_stay_home(
    settings: Settings, faulty: FaultyUpstream
) -> None:
    """They were dropped without a word: the upstream sampled as if they were not asked."""
    sampling = {
        "frequency_penalty": 0.5,
        "presence_penalty": -1.25,
        "logit_bias": {"50256": -100, "15": 3.5},
    }
    defaults = {"frequency_penalty": 0, "presence_penalty": 0, "logit_bias": {}, "logprobs": False}
    async with served(settings, router(faulty, "ok")) as client:
        for stream in (False, True):
            body = {**HELLO, **sampling, "stream": stream}
            response = await client.post(CHAT, json=body, headers=AUTH)
            assert response.status_code == 200
            sent = faulty.requests[-1].body
            assert {field: sent[field] for field in sampling} == sampling
        response = await client.post(CHAT, json={**HELLO, **defaults}, headers=AUTH)
        assert response.status_code == 200
    sent = faulty.requests[-1].body
    assert not set(defaults) & set(sent)
    # Without max_tokens: the room the prompt leaves, up to the server's limit.
    assert sent["max_tokens"] == settings.max_tokens_limit


WEATHER = {"name": "get_weather", "parameters": {"type": "object"}}
LEGACY: dict[str, Any] = {
    **HELLO,
    "messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "function_call": {"name": "get_weather"}},
        {"role": "function", "name": "get_weather", "content": "Rain."},
        {"role": "user", "content": "And now?"},
    ],
    "functions": [WEATHER],
    "function_call": {"name": "get_weather"},
}


async def test_legacy_functions_go_upstream_as_tools_and_come_back_as_a_function_call(
    settings: Settings, faulty: FaultyUpstream
) -> None:
    async with served(settings, router(faulty, "call")) as client:
        response = await client.post(CHAT, json=LEGACY, headers=AUTH)
        assert response.status_code == 200
        sent = faulty.requests[-1].body
        sdk = openai.AsyncOpenAI(
            base_url=str(client.base_url.join("/v1")), api_key=ADMIN_KEY, max_retries=0
        )
        async with sdk:
            stream = await sdk.chat.completions.create(**LEGACY, stream=True)
            chunks = [chunk async for chunk in stream]
            # The same upstream answer, asked with tools, is a tool call.
            tools = {**HELLO, "tools": [{"type": "function", "function": WEATHER}]}
            answered = await sdk.chat.completions.create(**tools)
    assert sent["tools"] == [{"type": "function", "function": WEATHER}]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert sent["messages"][1:3] == [
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "content": "Rain.", "tool_call_id": "call_1"},
    ]
    [choice] = response.json()["choices"]
    assert choice["finish_reason"] == "function_call"
    assert choice["message"]["function_call"] == {
        "name": "get_weather",
        "arguments": CALL_ARGUMENTS,
    }
    assert "tool_calls" not in choice["message"] and choice["message"]["content"] is None
    pieces = [c.choices[0].delta.function_call for c in chunks if c.choices]
    assert "".join(p.name or "" for p in pieces if p) == "get_weather"
    assert "".join(p.arguments or "" for p in pieces if p) == CALL_ARGUMENTS
    assert chunks[-1].choices[0].finish_reason == "function_call"
    assert not any(c.choices[0].delta.tool_calls for c in chunks if c.choices)
    assert answered.choices[0].finish_reason == "tool_calls"
    assert answered.choices[0].message.function_call is None
    [tool_call] = answered.choices[0].message.tool_calls or []
    assert tool_call.function.arguments == CALL_ARGUMENTS  # type: ignore[union-attr]


async def test_a_client_that_leaves_a_stream_cancels_the_upstream_and_is_logged(
    settings: Settings, faulty: FaultyUpstream
) -> None:
    async with served(settings, router(faulty, "drip-0.3")) as client:
        async with client.stream(
            "POST", CHAT, json={**HELLO, "stream": True}, headers=AUTH
        ) as response:
            assert response.status_code == 200
            lines = response.aiter_lines()
            first = json.loads((await anext(lines)).removeprefix("data: "))
            assert first["choices"][0]["delta"]["role"] == "assistant"
        assert await asyncio.to_thread(faulty.wait_for_disconnects, 1)
        entry = await latest_log(client)
    assert entry["kind"] == "chat.completion" and entry["status"] == "cancelled"
    assert REPLY.startswith(entry["reply"]) and "disconnected" in entry["error"]


async def test_an_upstream_that_fails_midway_is_an_error_the_sdk_raises(
    settings: Settings, faulty: FaultyUpstream
) -> None:
    async with served(settings, router(faulty, "error-event")) as client:
        sdk = openai.AsyncOpenAI(
            base_url=str(client.base_url.join("/v1")), api_key=ADMIN_KEY, max_retries=0
        )
        async with sdk:
            stream = await sdk.chat.completions.create(**HELLO, stream=True)
            pieces: list[str] = []
            with pytest.raises(openai.APIError, match="failed midway"):
                async for chunk in stream:
                    pieces.extend(c.delta.content or "" for c in chunk.choices)
        entry = await latest_log(client)
    assert "".join(pieces) == entry["reply"] != ""
    assert entry["status"] == "error" and "failed midway" in entry["error"]


async def test_an_upstream_that_is_down_is_a_503_in_openai_shape(
    settings: Settings, closed_url: str
) -> None:
    down = BackendRouter([OpenAIBackend(name="upstream", base_url=closed_url, max_retries=0)])
    async with served(settings, down) as client:
        response = await client.post(CHAT, json=HELLO, headers=AUTH)
        entry = await latest_log(client)
    assert response.status_code == 503 and response.headers["retry-after"]
    assert response.json()["error"]["type"] == "server_error"
    assert entry["status"] == "error"
