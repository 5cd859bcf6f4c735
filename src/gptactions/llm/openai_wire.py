"""The wire format of OpenAI-compatible servers: what to send, and how to read what comes back."""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Collection
from email.utils import parsedate_to_datetime
from typing import Any

from gptactions.llm.base import ChatMessage, GenerationRequest, ToolCall, Usage

# Upstreams expose no tokenizer: English text runs about 4 characters a token, and each message
# costs a few tokens of chat template. Rounding up and padding keeps the estimate on the high side.
_CHARS_PER_TOKEN = 4
_TOKENS_PER_MESSAGE = 8

# How to ask for structured output, in order of preference: OpenAI's structured outputs (OpenAI,
# vLLM, Ollama, LM Studio, llama.cpp's server), the `json_object` + `schema` form that
# llama-cpp-python's server takes, and nothing at all (the answer is still validated).
FORMAT_STYLES = ("json_schema", "json_object", "none")


def estimated_tokens(text: str) -> int:
    """About how many tokens `text` takes (at least one), rounded up."""
    return max(1, math.ceil(len(text) / _CHARS_PER_TOKEN))


def estimated_prompt_tokens(messages: tuple[ChatMessage, ...]) -> int:
    """About how many tokens the messages take in a prompt, on the high side."""
    return sum(
        math.ceil(len(message.content) / _CHARS_PER_TOKEN) + _TOKENS_PER_MESSAGE
        for message in messages
    )


def chat_payload(
    request: GenerationRequest,
    *,
    model: str,
    stream: bool,
    refused: Collection[str] = (),
    format_style: int = 0,
) -> dict[str, Any]:
    """The body of a `chat/completions` request, without the optional parts the upstream
    `refused` (`refused_feature`), and asking for structured output in the `format_style`'th of
    `FORMAT_STYLES`."""
    payload: dict[str, Any] = {
        "model": model,
        "messages": [wire_message(m) for m in request.messages],
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
        "stream": stream,
    }
    if request.stop:
        payload["stop"] = list(request.stop)
    if request.top_p is not None:
        payload["top_p"] = request.top_p
    if request.seed is not None:
        payload["seed"] = request.seed
    # OpenAI's sampling fields, only when set to something other than their defaults (which
    # change nothing), so that an upstream that does not know them is not asked to.
    if request.frequency_penalty:
        payload["frequency_penalty"] = request.frequency_penalty
    if request.presence_penalty:
        payload["presence_penalty"] = request.presence_penalty
    if request.logit_bias:
        payload["logit_bias"] = {str(token): bias for token, bias in request.logit_bias}
    if request.tools:
        payload["tools"] = list(request.tools)
        if request.tool_choice is not None:
            payload["tool_choice"] = request.tool_choice
    schema = choices_schema(request.choices) if request.choices else request.json_schema
    style = FORMAT_STYLES[min(format_style, len(FORMAT_STYLES) - 1)]
    if request.response_format is not None and format_style == 0:
        # A client's own response_format, as it wrote it; refused, it becomes a schema.
        payload["response_format"] = request.response_format
    elif schema is not None and (wanted := response_format(schema, style)) is not None:
        payload["response_format"] = wanted
    if stream and "stream_options" not in refused:
        payload["stream_options"] = {"include_usage": True}
    if "max_tokens" in refused:
        # OpenAI's reasoning models take only the newer name.
        payload["max_completion_tokens"] = payload.pop("max_tokens")
    if "temperature" in refused:
        del payload["temperature"]
    return payload


def response_format(schema: dict[str, Any], style: str) -> dict[str, Any] | None:
    """The `response_format` asking for JSON valid against `schema`, in the given style."""
    if style == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": "reply", "schema": schema}}
    if style == "json_object":
        return {"type": "json_object", "schema": schema}
    return None


def choices_schema(choices: tuple[str, ...]) -> dict[str, Any]:
    """A JSON schema for an object whose one property is one of the choices.

    The root is an object because OpenAI's structured outputs refuse any other root type.
    """
    return {
        "type": "object",
        "properties": {"choice": {"type": "string", "enum": list(choices)}},
        "required": ["choice"],
        "additionalProperties": False,
    }


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def refused_feature(payload: dict[str, Any], body: str) -> str | None:
    """The optional part of the request that an error answer says the upstream cannot take."""
    for feature in ("stream_options", "response_format"):
        if feature in payload and feature in body:
            return feature
    if "max_tokens" in payload and "max_completion_tokens" in body:
        return "max_tokens"
    lowered = body.lower()
    if "temperature" in payload and "temperature" in lowered and "support" in lowered:
        return "temperature"
    return None


async def sse_data(lines: AsyncIterator[str]) -> AsyncGenerator[str, None]:
    """The `data` of each Server-Sent Event in a stream of lines."""
    data: list[str] = []
    async for line in lines:
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        if field == "data":
            data.append(value.removeprefix(" "))
    if data:
        yield "\n".join(data)


def usage_of(value: Any) -> Usage | None:
    """The token counts of an OpenAI `usage` object, if it is one."""
    if not isinstance(value, dict):
        return None
    try:
        return Usage(int(value.get("prompt_tokens") or 0), int(value.get("completion_tokens") or 0))
    except (TypeError, ValueError):
        return None


def first_model(body: bytes) -> str:
    """The id of the first model an upstream's `/models` lists, or nothing."""
    try:
        return str(json.loads(body)["data"][0]["id"])
    except (ValueError, KeyError, IndexError, TypeError):
        return ""


def error_message(body: str) -> str:
    """The message of an OpenAI-style error body, or the body itself."""
    try:
        data = json.loads(body)
    except ValueError:
        return body
    if isinstance(data, dict):
        error = data.get("error", data.get("detail", data))
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(error, str):
            return error
        return json.dumps(error)
    return body


def wire_message(message: ChatMessage) -> dict[str, Any]:
    """A message as Chat Completions takes it, tool calls and tool answers included."""
    wire: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        wire["content"] = message.content or None
        wire["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in message.tool_calls
        ]
    if message.tool_call_id is not None:
        wire["tool_call_id"] = message.tool_call_id
    return wire


def tool_calls_of(value: Any, *, piece: bool = False) -> tuple[ToolCall, ...]:
    """The tool calls of a message (or, with `piece`, of a streamed delta), if it has any."""
    if not isinstance(value, list):
        return ()
    calls = []
    for position, item in enumerate(value):
        if not isinstance(item, dict):
            continue
        function = item.get("function")
        if not isinstance(function, dict):
            function = {}
        name, arguments = function.get("name"), function.get("arguments")
        if not piece and not isinstance(name, str):
            continue
        index = item.get("index", position)
        calls.append(
            ToolCall(
                id=str(item.get("id") or ""),
                name=name if isinstance(name, str) else "",
                arguments=arguments if isinstance(arguments, str) else "",
                index=index if isinstance(index, int) else position,
            )
        )
    return tuple(calls)


_SURROGATE = re.compile("[\ud800-\udfff]")


def well_formed(text: str) -> str:
    """The text with any unpaired UTF-16 surrogate (which JSON's `\\ud800` escape can carry, and
    UTF-8 cannot) replaced by U+FFFD, so that it can be stored and sent on."""
    return text if text.isascii() else _SURROGATE.sub("\ufffd", text)
