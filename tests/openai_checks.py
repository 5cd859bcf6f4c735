"""Calls of the official `openai` SDK that any OpenAI-compatible server must answer as OpenAI does.

Shared by the tests of the embedded model and of an upstream behind the server, so both are held
to the same expectations.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import openai

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]

WEATHER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "enum": ["Paris", "London", "Tokyo"]},
        "sunny": {"type": "boolean"},
    },
    "required": ["city", "sunny"],
    "additionalProperties": False,
}

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "enum": ["Paris", "London", "Tokyo"]},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
        },
    },
}


def check_completion(client: openai.OpenAI, model: str) -> str:
    """A whole completion in OpenAI's shape; returns its text."""
    completion = client.chat.completions.create(
        model=model, messages=QUESTION, temperature=0, max_tokens=16
    )
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-") and completion.model == model
    [choice] = completion.choices
    assert choice.index == 0 and choice.message.role == "assistant"
    assert choice.finish_reason in ("stop", "length")
    text = choice.message.content
    assert isinstance(text, str) and text.strip()
    usage = completion.usage
    assert usage is not None and usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    return text


def check_stream_joins_to_the_whole(client: openai.OpenAI, model: str) -> None:
    """At temperature 0, the streamed chunks join to the text of the whole completion."""
    whole = check_completion(client, model)
    chunks = list(
        client.chat.completions.create(
            model=model,
            messages=QUESTION,
            temperature=0,
            max_tokens=16,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1 and all(c.model == model for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    *pieces, last = chunks
    assert last.choices == [] and last.usage is not None and last.usage.completion_tokens > 0
    assert all(c.usage is None for c in pieces)
    texts = [c.choices[0].delta.content or "" for c in pieces]
    assert len([t for t in texts if t]) > 1
    assert "".join(texts) == whole
    assert pieces[-1].choices[0].finish_reason in ("stop", "length")
    assert all(c.choices[0].finish_reason is None for c in pieces[:-1])


def check_json_schema(client: openai.OpenAI, model: str) -> None:
    """A `json_schema` response format is answered with JSON valid against the schema."""
    completion = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Is it sunny in Paris? Answer in JSON."}],
        temperature=0,
        max_tokens=60,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "weather", "schema": WEATHER_SCHEMA, "strict": True},
        },
    )
    content = completion.choices[0].message.content
    assert content is not None
    jsonschema.validate(json.loads(content), WEATHER_SCHEMA)


def check_named_tool_call(client: openai.OpenAI, model: str, *, stream: bool = False) -> None:
    """A named tool choice is answered with a call of that tool, its arguments valid."""
    request: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
        "temperature": 0,
        "max_tokens": 60,
        "tools": [WEATHER_TOOL],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    }
    if stream:
        name, arguments, finish = "", "", None
        for chunk in client.chat.completions.create(**request, stream=True):
            for choice in chunk.choices:
                for call in choice.delta.tool_calls or []:
                    name += (call.function and call.function.name) or ""
                    arguments += (call.function and call.function.arguments) or ""
                finish = choice.finish_reason or finish
    else:
        completion = client.chat.completions.create(**request)
        [choice] = completion.choices
        [call] = choice.message.tool_calls or []
        assert call.type == "function" and call.id
        name, arguments, finish = call.function.name, call.function.arguments, choice.finish_reason
    assert name == "get_weather"
    assert finish in ("tool_calls", "stop")
    jsonschema.validate(json.loads(arguments), WEATHER_TOOL["function"]["parameters"])


def check_bad_requests(client: openai.OpenAI, model: str) -> None:
    """Bad input is a BadRequestError with OpenAI's error body; an unknown model a 404."""
    bad: list[dict[str, Any]] = [
        {"model": model, "messages": []},
        {"model": model, "messages": QUESTION, "temperature": 5},
        {"model": model, "messages": QUESTION, "n": 2},
        {"model": model, "messages": [{"role": "wizard", "content": "hi"}]},
    ]
    for request in bad:
        try:
            client.chat.completions.create(**request)
        except openai.BadRequestError as error:
            assert error.status_code == 400
            assert isinstance(error.body, dict) and error.body["type"] == "invalid_request_error"
            assert set(error.body) == {"message", "type", "param", "code"}
        else:
            raise AssertionError(f"accepted {request}")
    try:
        client.chat.completions.create(model="no-such-model", messages=QUESTION)
    except openai.NotFoundError as error:
        assert isinstance(error.body, dict) and error.body["code"] == "model_not_found"
    else:
        raise AssertionError("an unknown model was accepted")
