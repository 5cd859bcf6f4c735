"""The messages of /v1/chat/completions: the served document's schema (one per role, as OpenAI's)
and the server's validation agree on every role and field combination; a message either refuses
is a 400 in OpenAI's error shape naming the parameter."""

from __future__ import annotations

from typing import Any

import pytest
from openapi_schema_validator import OAS30Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

from gptactions.llm.fake import FakeBackend
from tests.conftest import ApiClient

CALL = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
TEXT = [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]
USER = {"role": "user", "content": "hi"}
CALLED = {"role": "assistant", "tool_calls": [CALL]}

# (messages, the param a refusal names, or None for messages both accept)
CASES: list[tuple[list[dict[str, Any]], str | None]] = [
    ([USER], None),
    ([{"role": "user", "content": TEXT, "name": "ada"}], None),
    ([{"role": "system", "content": "Be brief."}, USER], None),
    ([{"role": "developer", "content": TEXT}, USER], None),
    ([USER, {"role": "assistant", "content": "Hello."}, USER], None),
    ([USER, {"role": "assistant", "content": None, "tool_calls": [CALL]}], None),
    ([USER, {"role": "assistant", "tool_calls": [CALL]}], None),
    ([USER, {"role": "assistant", "content": "Let me see.", "tool_calls": [CALL]}], None),
    ([USER, {"role": "assistant", "content": "", "tool_calls": []}], None),
    ([USER, {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f"}}]}], None),
    ([USER, CALLED, {"role": "tool", "content": "42", "tool_call_id": "call_1"}], None),
    ([USER, CALLED, {"role": "tool", "content": TEXT, "tool_call_id": "call_1"}], None),
    # A field of another role is ignored, as any field the server does not know.
    ([{**USER, "tool_calls": "not even a list", "tool_call_id": 5}], None),
    ([{"role": "system", "content": "x", "tool_calls": [CALL]}, USER], None),
    ([{"role": "tool"}], "messages[0].content"),
    ([{"role": "tool", "content": "42"}], "messages[0].tool_call_id"),
    ([{"role": "tool", "content": "42", "tool_call_id": ""}], "messages[0].tool_call_id"),
    ([{"role": "tool", "content": None, "tool_call_id": "c"}], "messages[0].content"),
    ([{"role": "user"}], "messages[0].content"),
    ([{"role": "user", "content": None}], "messages[0].content"),
    ([{"role": "user", "content": 5}], "messages[0].content"),
    ([{"role": "system", "content": []}, USER], "messages[0].content"),
    ([{"role": "user", "content": [{"type": "text"}]}], "messages[0].content[0].text"),
    (
        [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
        "messages[0].content[0].type",
    ),
    ([USER, {"role": "assistant"}], "messages[1]"),
    ([USER, {"role": "assistant", "content": None}], "messages[1]"),
    ([USER, {"role": "assistant", "content": None, "tool_calls": []}], "messages[1]"),
    (
        [USER, {"role": "assistant", "content": [{"type": "refusal", "refusal": "No."}]}],
        "messages[1].content[0].type",
    ),
    (
        [USER, {"role": "assistant", "tool_calls": [{"id": "c"}]}],
        "messages[1].tool_calls[0].function",
    ),
    # OpenAI's legacy form: a call, and the function's answer.
    ([USER, {"role": "assistant", "function_call": {"name": "f", "arguments": "{}"}}], None),
    ([USER, {"role": "assistant", "content": None, "function_call": {"name": "f"}}], None),
    ([{"role": "function", "name": "f", "content": "x"}], None),
    ([{"role": "function", "name": "f", "content": None}], None),
    ([{"role": "function", "content": "x"}], "messages[0].name"),
    ([{"role": "function", "name": "", "content": "x"}], "messages[0].name"),
    ([{"role": "function", "name": "f"}], "messages[0].content"),
    (
        [USER, {"role": "assistant", "function_call": {"arguments": "{}"}}],
        "messages[1].function_call.name",
    ),
    ([{"content": "x"}], "messages[0].role"),
    (["hi"], "messages[0]"),
]


async def documented_schema(api: ApiClient) -> OAS30Validator:
    document = (await api.get("/openapi.json")).json()
    registry = Registry().with_resource(
        "urn:doc", Resource.from_contents(document, default_specification=DRAFT4)
    )
    return OAS30Validator(
        {"$ref": "urn:doc#/components/schemas/ChatCompletionRequest"}, registry=registry
    )


@pytest.mark.parametrize(("messages", "param"), CASES)
async def test_the_document_and_the_server_agree_on_a_message(
    api: ApiClient, fake: FakeBackend, messages: list[Any], param: str | None
) -> None:
    body = {"messages": messages, "max_tokens": 8}
    documented = (await documented_schema(api)).is_valid(body)
    response = await api.post("/v1/chat/completions", body)
    assert documented == (param is None)
    if param is None:
        assert response.status_code == 200, response.text
        return
    assert response.status_code == 400, response.text
    assert response.json() == {
        "error": {
            "message": response.json()["error"]["message"],
            "type": "invalid_request_error",
            "param": param,
            "code": None,
        }
    }
    assert not fake.requests  # refused before the model


async def test_only_each_roles_own_fields_reach_the_model(
    api: ApiClient, fake: FakeBackend
) -> None:
    messages = [
        {"role": "developer", "content": TEXT, "tool_call_id": "x"},
        {**USER, "tool_calls": [CALL]},
        {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f"}}]},
        {"role": "tool", "content": "42", "tool_call_id": "c", "name": "f"},
    ]
    response = await api.post("/v1/chat/completions", {"messages": messages})
    assert response.status_code == 200, response.text
    system, user, assistant, tool = fake.requests[0].messages
    assert (system.role, system.content, system.tool_call_id) == ("system", "one\ntwo", None)
    assert (user.role, user.content, user.tool_calls) == ("user", "hi", ())
    assert (assistant.content, assistant.tool_calls[0].name) == ("", "f")
    assert (assistant.tool_calls[0].arguments, assistant.tool_calls[0].id) == ("", "c")
    assert (tool.role, tool.tool_call_id, tool.content) == ("tool", "c", "42")


# (fields beside the messages, the param a refusal names, or None for fields both accept)
FIELDS: list[tuple[dict[str, Any], str | None]] = [
    ({"frequency_penalty": 2, "presence_penalty": -2}, None),
    ({"frequency_penalty": 2.01}, "frequency_penalty"),
    ({"presence_penalty": -2.5}, "presence_penalty"),
    ({"logit_bias": {"5": -100, "6": 100, "7": 0.5}}, None),
    ({"logit_bias": {"5": 100.5}}, "logit_bias"),
    ({"logprobs": False, "top_logprobs": 0}, None),
    ({"logprobs": True}, "logprobs"),
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"functions": [{"name": "f"}], "function_call": {"name": "f"}}, None),
    ({"functions": [{"name": "f"}], "function_call": "required"}, "function_call"),
]


@pytest.mark.parametrize(("fields", "param"), FIELDS)
async def test_the_document_and_the_server_agree_on_the_sampling_fields(
    api: ApiClient, fake: FakeBackend, fields: dict[str, Any], param: str | None
) -> None:
    body = {"messages": [USER], "max_tokens": 8, **fields}
    documented = (await documented_schema(api)).is_valid(body)
    response = await api.post("/v1/chat/completions", body)
    assert documented == (param is None)
    if param is None:
        assert response.status_code == 200, response.text
        return
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    assert not fake.requests


@pytest.mark.parametrize(
    "messages",
    [
        [USER, {"role": "tool", "content": "42", "tool_call_id": "call_1"}],
        [USER, CALLED, {"role": "tool", "content": "42", "tool_call_id": "call_2"}],
        [{"role": "tool", "content": "42", "tool_call_id": "call_1"}, CALLED],
    ],
)
async def test_a_tool_message_answering_no_call_is_refused_as_openai_refuses_it(
    api: ApiClient, messages: list[dict[str, Any]]
) -> None:
    """A `tool` message whose `tool_call_id` no earlier assistant message's `tool_calls` has:
    OpenAI's 400 at its `role`. The document's schema cannot say it (it spans messages)."""
    index = next(i for i, m in enumerate(messages) if m["role"] == "tool")
    response = await api.post("/v1/chat/completions", {"messages": messages})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == f"messages[{index}].role"
    assert "must be a response to a preceding message with 'tool_calls'" in error["message"]
