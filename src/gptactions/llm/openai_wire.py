"""The wire format of OpenAI-compatible servers: what to send, and how to read what comes back."""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator
from email.utils import parsedate_to_datetime
from typing import Any

from gptactions.llm.base import ChatMessage, ToolCall, Usage

# How to ask for structured output, in order of preference: OpenAI's structured outputs (OpenAI,
# vLLM, Ollama, LM Studio, llama.cpp's server), the `json_object` + `schema` form that
# llama-cpp-python's server takes, and nothing at all (the answer is still validated).
FORMAT_STYLES = ("json_schema", "json_object", "none")


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
