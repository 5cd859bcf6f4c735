"""/v1/chat/completions: a forced call of one of several tools that `max_tokens` cuts, and the
names a `json_schema` response format may have."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gptactions.llm.fake import FakeBackend
from gptactions.llm.tools import call_schema, calls_from_text, unnamed_call
from tests.conftest import ApiClient

CHAT = "/v1/chat/completions"


def _tool(name: str, parameter: str) -> dict[str, Any]:
    parameters = {
        "type": "object",
        "properties": {parameter: {"type": "string"}},
        "required": [parameter],
    }
    return {"type": "function", "function": {"name": name, "parameters": parameters}}


TOOLS = [_tool("w", "city"), _tool("t", "zone")]
ASKED = {
    "messages": [{"role": "user", "content": "Weather in Paris?"}],
    "tools": TOOLS,
    "tool_choice": "required",
    "temperature": 0,
    "seed": 1,
}


def events(text: str) -> list[Any]:
    """The data of a stream's events, `[DONE]` as the string it is."""
    data = [line.removeprefix("data: ") for line in text.splitlines() if line.startswith("data: ")]
    return [item if item == "[DONE]" else json.loads(item) for item in data]


def streamed_reply(text: str) -> tuple[str, dict[int, dict[str, str]], str | None]:
    """A stream's content, its calls (name and arguments by index) and its finish reason."""
    content, calls, finish = "", {}, None
    for event in events(text)[:-1]:
        [choice] = event["choices"]
        delta = choice["delta"]
        content += delta.get("content") or ""
        for piece in delta.get("tool_calls") or ():
            call = calls.setdefault(piece["index"], {"name": "", "arguments": ""})
            call["name"] += piece["function"].get("name", "")
            call["arguments"] += piece["function"].get("arguments", "")
        finish = choice["finish_reason"] or finish
    return content, calls, finish


@pytest.mark.model
@pytest.mark.parametrize(
    ("max_tokens", "fields"),
    # From 12 tokens: how many the wrapper takes before the name is known depends on the
    # spacing the model picks, which differs from one CPU to another (8 was enough on some).
    [(12, {}), (16, {}), (20, {}), (20, {"parallel_tool_calls": False})],
)
async def test_a_call_of_one_of_several_tools_cut_by_max_tokens_is_a_call(
    model_api: ApiClient, max_tokens: int, fields: dict[str, Any]
) -> None:
    """It was the server's own wrapper, `{"name": "t", "arguments" : {`, as the content, with no
    tool_calls, streamed or not; one tool's cut call was a call already."""
    body = {**ASKED, **fields, "max_tokens": max_tokens}
    whole = await model_api.post(CHAT, body)
    assert whole.status_code == 200, whole.text
    [choice] = whole.json()["choices"]
    message = choice["message"]
    assert (choice["finish_reason"], message["content"]) == ("length", None), choice
    [call] = message["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_")
    name, arguments = call["function"]["name"], call["function"]["arguments"]
    assert name in ("w", "t") and (arguments == "" or arguments.startswith("{")), call
    assert '"name"' not in arguments and '"arguments"' not in arguments

    streamed = await model_api.post(CHAT, {**body, "stream": True})
    assert streamed.status_code == 200, streamed.text
    content, calls, finish = streamed_reply(streamed.text)
    assert (content, finish) == ("", "length")
    assert calls == {0: {"name": name, "arguments": arguments}}


@pytest.mark.model
@pytest.mark.parametrize("max_tokens", [1, 3, 6])
async def test_a_call_cut_before_its_tool_is_known_is_an_empty_reply(
    model_api: ApiClient, max_tokens: int
) -> None:
    """No call can be made without a name, and the wrapper (`{ "name":`) is no content."""
    body = {**ASKED, "max_tokens": max_tokens}
    whole = await model_api.post(CHAT, body)
    [choice] = whole.json()["choices"]
    assert choice["finish_reason"] == "length"
    assert choice["message"] == {"role": "assistant", "content": "", "refusal": None}

    streamed = await model_api.post(CHAT, {**body, "stream": True})
    assert streamed_reply(streamed.text) == ("", {}, "length")
    logs = (await model_api.get("/api/v1/gpt/logs")).json()
    assert [(entry["reply"], entry["finishReason"]) for entry in logs[:2]] == [("", "length")] * 2


WRAPPER = '{ "name": "west", "arguments" : { "city": "Paris" } }'
SEVERAL = (_tool("west", "city"), _tool("wet", "city"), _tool("t", "zone"))


@pytest.mark.parametrize("cut", range(len(WRAPPER) + 1))
def test_every_cut_of_a_call_is_a_call_or_nothing_to_show(cut: int) -> None:
    """Once the name written fits one tool alone, the call is that tool's, with the arguments
    that came; before, it is no call, and no text either."""
    assert set(call_schema(SEVERAL)["anyOf"][0]["properties"]) == {"name", "arguments"}
    text = WRAPPER[:cut]
    calls = calls_from_text(text, SEVERAL)
    known = cut >= len('{ "name": "wes')
    assert unnamed_call(text, SEVERAL) == (cut > 0 and not known)
    if not known:
        assert calls == ()
        return
    [call] = calls
    after = len('{ "name": "west", "arguments" :')
    came = WRAPPER[after:cut] if cut < len(WRAPPER) else '{ "city": "Paris" }'
    try:  # whole JSON is passed on without the grammar's spacing, anything else as it came
        arguments = json.dumps(json.loads(came))
    except ValueError:
        arguments = came.strip()
    assert (call.name, call.arguments) == ("west", arguments)


def test_text_that_is_no_call_is_left_as_it_is() -> None:
    assert not unnamed_call("Sure", SEVERAL) and not unnamed_call("", SEVERAL)
    assert not unnamed_call('{ "name": "', SEVERAL[:1])  # one tool: its arguments are the call
    assert unnamed_call('{ "name": "', SEVERAL) and unnamed_call('{\n"na', SEVERAL)
    assert not unnamed_call('{ "name": "x', SEVERAL)  # no tool is called so
    assert calls_from_text('{ "name": "x", "arguments": {}', SEVERAL) == ()


@pytest.mark.parametrize("name", ["my schema", "weather.v2", "météo", "a" * 65, ""])
async def test_a_json_schema_name_openai_refuses_is_a_400(
    api: ApiClient, fake: FakeBackend, name: str
) -> None:
    """OpenAI takes `^[a-zA-Z0-9_-]{1,64}$`; a space or a dot was taken here."""
    response_format = {"type": "json_schema", "json_schema": {"name": name, "schema": {}}}
    body = {"messages": [{"role": "user", "content": "hi"}], "response_format": response_format}
    response = await api.post(CHAT, body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["type"], error["param"]) == (
        "invalid_request_error",
        "response_format.json_schema.name",
    )
    assert not fake.requests


async def test_a_json_schema_name_openai_takes_is_taken(api: ApiClient, fake: FakeBackend) -> None:
    name = "Weather_report-2" + "x" * 48  # 64 characters
    response_format = {"type": "json_schema", "json_schema": {"name": name, "schema": {}}}
    body = {"messages": [{"role": "user", "content": "hi"}], "response_format": response_format}
    response = await api.post(CHAT, body)
    assert response.status_code == 200, response.text
    assert fake.requests[-1].response_format == response_format
