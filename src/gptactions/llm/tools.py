"""Tool calls on a model that has no tool-calling format of its own: decoded as constrained JSON.

When a request forces a tool (`tool_choice` "required", or a named function), the reply must be a
call: the model writes JSON that a grammar keeps to the tools' parameter schemas, and the JSON
becomes the call. Any other choice ("auto", "none") is answered with text.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from gptactions.llm.base import ToolCall

_ANY_OBJECT: dict[str, Any] = {"type": "object"}


def _function(tool: dict[str, Any]) -> dict[str, Any]:
    function = tool.get("function")
    return function if isinstance(function, dict) else {}


def tool_name(tool: dict[str, Any]) -> str:
    """The name of a function tool."""
    return str(_function(tool).get("name", ""))


def _parameters(tool: dict[str, Any]) -> dict[str, Any]:
    parameters = _function(tool).get("parameters")
    return parameters if isinstance(parameters, dict) and parameters else _ANY_OBJECT


def forced_tools(
    tools: tuple[dict[str, Any], ...], tool_choice: str | dict[str, Any] | None
) -> tuple[dict[str, Any], ...]:
    """The tools one of which the reply must call, or () when the model may answer text."""
    if not tools:
        return ()
    if isinstance(tool_choice, dict):
        name = _function(tool_choice).get("name")
        return tuple(tool for tool in tools if _function(tool).get("name") == name)
    if tool_choice == "required":
        return tools
    return ()


def call_schema(tools: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    """The JSON schema of a call of one of `tools`.

    One tool: its parameters themselves (the JSON is the arguments). Several: an object naming
    the tool and holding its arguments, one alternative per tool.
    """
    if len(tools) == 1:
        return _parameters(tools[0])
    return {
        "anyOf": [
            {
                "type": "object",
                "properties": {
                    "name": {"const": _function(tool).get("name", "")},
                    "arguments": _parameters(tool),
                },
                "required": ["name", "arguments"],
            }
            for tool in tools
        ]
    }


def calls_from_text(text: str, tools: tuple[dict[str, Any], ...]) -> tuple[ToolCall, ...]:
    """The call that constrained output written against `call_schema(tools)` makes.

    Output cut short (say by `max_tokens`) is still a call, of the only tool or of none: its
    arguments are passed on as written, as OpenAI does with a reply that ends for `length`.
    """
    call_id = "call_" + uuid.uuid4().hex[:24]
    if len(tools) == 1:
        name = str(_function(tools[0]).get("name", ""))
        return (ToolCall(id=call_id, name=name, arguments=_compact(text)),)
    try:
        value = json.loads(text)
    except ValueError:
        return ()
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return ()
    arguments = value.get("arguments", {})
    return (ToolCall(id=call_id, name=value["name"], arguments=json.dumps(arguments)),)


def _compact(text: str) -> str:
    """Valid JSON re-serialized without the grammar's spacing; anything else as it is."""
    try:
        return json.dumps(json.loads(text))
    except ValueError:
        return text.strip()
