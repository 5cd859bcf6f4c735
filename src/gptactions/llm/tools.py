"""Tool calls on a model that has no tool-calling format of its own: decoded as constrained JSON.

When a request forces a tool (`tool_choice` "required", or a named function), the reply must be a
call: the model writes JSON that a grammar keeps to the tools' parameter schemas, and the JSON
becomes the call. Any other choice ("auto", "none") is answered with text.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from gptactions.llm.base import ToolCall

_ANY_OBJECT: dict[str, Any] = {"type": "object"}
# The start of a call of one of several tools, as `call_schema` has the model write it: the
# name comes first (the grammar keeps the schema's order), then the arguments.
_NAME = re.compile(r'\s*\{\s*"name"\s*:\s*"([A-Za-z0-9_-]*)("?)')
_NAME_KEY = '{"name":"'
_ARGUMENTS_KEY = re.compile(r'\s*,\s*"arguments"\s*:')
_SPACE = re.compile(r"\s+")


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

    Output cut short (say by `max_tokens`) is still a call, as OpenAI's is when a reply ends for
    `length`: its arguments are passed on as written. Of one tool, whatever came; of several,
    once the name written so far fits one tool alone (the grammar allows no other), with the
    arguments that came after it. Before that there is no call, as a call has a name; nor is
    the output text (see `unnamed_call`).
    """
    call_id = "call_" + uuid.uuid4().hex[:24]
    if len(tools) == 1:
        name = str(_function(tools[0]).get("name", ""))
        return (ToolCall(id=call_id, name=name, arguments=_compact(text)),)
    try:
        value = json.loads(text)
    except ValueError:
        cut = _cut_call(text, tools)
        return (ToolCall(id=call_id, name=cut[0], arguments=cut[1]),) if cut else ()
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return ()
    arguments = value.get("arguments", {})
    return (ToolCall(id=call_id, name=value["name"], arguments=json.dumps(arguments)),)


def unnamed_call(text: str, tools: tuple[dict[str, Any], ...]) -> bool:
    """Whether `text` is a call of one of several `tools`, as `call_schema` has the model write
    it, cut before the tool it calls is known.

    Such output is no call (a call has a name) and no reply either: it is the server's own
    wrapper, `{"name": "`, which OpenAI never shows. It is answered as nothing, with the reason
    the output ended (`length`), rather than shown as the content.
    """
    if len(tools) < 2:
        return False
    squeezed = _SPACE.sub("", text)  # the grammar puts space only between JSON's tokens here
    if not squeezed or _cut_call(text, tools) is not None:
        return False
    if _NAME_KEY.startswith(squeezed):
        return True
    written = squeezed.removeprefix(_NAME_KEY)
    return written != squeezed and any(tool_name(t).startswith(written) for t in tools)


def _cut_call(text: str, tools: tuple[dict[str, Any], ...]) -> tuple[str, str] | None:
    """The tool a cut call of one of several tools calls, and its arguments so far; None until
    the name written fits one tool alone."""
    match = _NAME.match(text)
    if match is None:
        return None
    written, closed = match.group(1), bool(match.group(2))
    names = dict.fromkeys(tool_name(tool) for tool in tools)
    fitting = [name for name in names if (name == written if closed else name.startswith(written))]
    if len(fitting) != 1:
        return None
    arguments = _ARGUMENTS_KEY.match(text, match.end()) if closed else None
    return fitting[0], (_compact(text[arguments.end() :]) if arguments else "")


def _compact(text: str) -> str:
    """Valid JSON re-serialized without the grammar's spacing; anything else as it is."""
    try:
        return json.dumps(json.loads(text))
    except ValueError:
        return text.strip()
