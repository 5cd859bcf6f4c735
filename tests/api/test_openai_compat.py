"""The OpenAI-compatible API's rules and shapes, with the fake backend (the SDK tests use the model;
so does a call cut short, which the fake cannot make)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gptactions.config import Settings
from gptactions.llm.base import BackendUnavailable
from gptactions.llm.fake import FakeBackend
from tests.conftest import ADMIN_KEY, ApiClient, running_app

CHAT = "/v1/chat/completions"
HELLO = {"model": "fake", "messages": [{"role": "user", "content": "hello there"}]}
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


def error_of(response: Any) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    error: dict[str, Any] = body["error"]
    return error


async def test_a_completion_in_openai_shape(api: ApiClient, fake: FakeBackend) -> None:
    fake.replies.append("General Kenobi")
    response = await api.post(CHAT, HELLO)
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["model"] == "fake" and isinstance(body["created"], int)
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "General Kenobi", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
    assert usage["prompt_tokens_details"] == {"cached_tokens": 0}  # the fake caches nothing


async def test_generation_settings_reach_the_backend(api: ApiClient, fake: FakeBackend) -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    body = {
        "model": "default",
        "messages": [
            {"role": "developer", "content": "Be brief."},
            {
                "role": "user",
                "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}],
            },
        ],
        "max_completion_tokens": 7,
        "temperature": 0.5,
        "top_p": 0.9,
        "seed": 42,
        "stop": "END",
        "tools": [tool],
        "tool_choice": "auto",
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
        "frequency_penalty": 0.1,
        "presence_penalty": -0.5,
        "logit_bias": {"42": -100, "7": 2.5},
    }
    assert (await api.post(CHAT, body)).status_code == 200
    request = fake.requests[-1]
    assert [(m.role, m.content) for m in request.messages] == [
        ("system", "Be brief."),
        ("user", "one\ntwo"),
    ]
    assert (request.max_tokens, request.temperature, request.top_p, request.seed) == (
        7,
        0.5,
        0.9,
        42,
    )
    assert (request.frequency_penalty, request.presence_penalty) == (0.1, -0.5)
    assert request.logit_bias == ((42, -100), (7, 2.5))
    assert request.stop == ("END",) and request.tools == (tool,) and request.tool_choice == "auto"
    assert request.json_schema == schema
    assert request.response_format == {
        "type": "json_schema",
        "json_schema": {"name": "x", "schema": schema},
    }


async def test_tool_messages_reach_the_backend(api: ApiClient, fake: FakeBackend) -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    messages = [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "done"},
    ]
    assert (await api.post(CHAT, {"messages": messages})).status_code == 200
    assistant, tool = fake.requests[-1].messages[1:]
    assert assistant.tool_calls[0].name == "f" and assistant.tool_calls[0].id == "call_1"
    assert (tool.role, tool.tool_call_id, tool.content) == ("tool", "call_1", "done")


def events(text: str) -> list[Any]:
    blocks = [block for block in text.split("\n\n") if block]
    assert all(block.startswith("data: ") for block in blocks)
    return [json.loads(b[6:]) if b != "data: [DONE]" else "[DONE]" for b in blocks]


async def test_a_stream_in_openai_shape(api: ApiClient, fake: FakeBackend) -> None:
    fake.replies.append("one two three")
    body = {**HELLO, "stream": True, "stream_options": {"include_usage": True}}
    response = await api.post(CHAT, body)
    assert response.headers["content-type"].startswith("text/event-stream")
    *chunks, usage_chunk, done = events(response.text)
    assert done == "[DONE]"
    assert all(c["object"] == "chat.completion.chunk" and c["usage"] is None for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == "one two three"
    assert chunks[-1]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["completion_tokens"] == 3
    # Without include_usage there is no usage at all.
    plain = events((await api.post(CHAT, {**HELLO, "stream": True})).text)
    assert plain[-1] == "[DONE]" and all("usage" not in c for c in plain[:-1])


async def test_each_call_is_logged_in_its_tenant(api: ApiClient) -> None:
    acme = await api.key(tenant="acme", name="acme-bot")
    assert (await api.post(CHAT, {**HELLO, "user": "alice"}, key=acme)).status_code == 200
    assert (await api.post(CHAT, {**HELLO, "stream": True}, key=acme)).status_code == 200
    admin_view = (await api.get("/api/v1/gpt/logs")).json()
    assert [(e["kind"], e["userId"], e["status"]) for e in admin_view] == [
        ("chat.completion", "acme-bot", "ok"),
        ("chat.completion", "alice", "ok"),
    ]
    assert (
        admin_view[1]["message"] == "hello there" and admin_view[1]["reply"] == "echo: hello there"
    )
    other = await api.key(tenant="other")
    assert (await api.get("/api/v1/gpt/logs", key=other)).json() == []


async def test_models_list_and_retrieve(api: ApiClient) -> None:
    listed = (await api.get("/v1/models")).json()
    assert listed["object"] == "list"
    assert [(m["id"], m["object"], m["owned_by"]) for m in listed["data"]] == [
        ("fake", "model", "gptactions:fake")
    ]
    assert (await api.get("/v1/models/fake")).json()["id"] == "fake"
    assert (await api.get("/v1/models/fake-model")).json()["id"] == "fake"  # its model's name
    missing = await api.get("/v1/models/gpt-4o")
    assert missing.status_code == 404 and error_of(missing)["code"] == "model_not_found"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user"}]}, "messages[0].content"),
        ({**HELLO, "temperature": 3}, "temperature"),
        ({**HELLO, "n": 2}, "n"),
        ({**HELLO, "max_tokens": 5000}, "max_tokens"),
        ({**HELLO, "max_completion_tokens": 5000}, "max_completion_tokens"),
        ({**HELLO, "tool_choice": "required"}, "tool_choice"),
        ({**HELLO, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({**HELLO, "stream_options": {"include_usage": True}}, "stream_options"),
        ({**HELLO, "stream": False, "stream_options": {"include_usage": True}}, "stream_options"),
        ({**HELLO, "frequency_penalty": 2.5}, "frequency_penalty"),
        ({**HELLO, "presence_penalty": -3}, "presence_penalty"),
        ({**HELLO, "presence_penalty": "high"}, "presence_penalty"),
        ({**HELLO, "logit_bias": {"hello": 5}}, "logit_bias"),
        ({**HELLO, "logit_bias": {"-1": 5}}, "logit_bias"),
        ({**HELLO, "logit_bias": {"50256": 101}}, "logit_bias"),
        ({**HELLO, "logit_bias": {"50256": "ban"}}, "logit_bias"),
        ({**HELLO, "logit_bias": [1, 2]}, "logit_bias"),
        ({**HELLO, "logprobs": True}, "logprobs"),
        ({**HELLO, "top_logprobs": 3}, "top_logprobs"),
        ({**HELLO, "top_logprobs": 21}, "top_logprobs"),
        ({**HELLO, "functions": [{"name": "f"}], "tools": [TOOL]}, "functions"),
        ({**HELLO, "functions": [{"name": "bad name"}]}, "functions[0].name"),
        ({**HELLO, "functions": [{"name": "f"}], "tool_choice": "none"}, "functions"),
        ({**HELLO, "function_call": "auto"}, "function_call"),
        ({**HELLO, "functions": [{"name": "f"}], "function_call": {"name": "g"}}, "function_call"),
        (
            {**HELLO, "functions": [{"name": "f"}], "function_call": "auto", "tool_choice": "auto"},
            "functions",
        ),
        ({**HELLO, "function_call": "none", "tool_choice": "none"}, "function_call"),
        ({**HELLO, "functions": []}, "functions"),
        ({**HELLO, "functions": [], "function_call": "auto"}, "functions"),
        ({**HELLO, "tools": []}, "tools"),
        ({**HELLO, "functions": [{"name": "f", "strict": None}]}, "functions[0].strict"),
        (
            {**HELLO, "tools": [{**TOOL, "function": {"name": "f", "strict": None}}]},
            "tools[0].function.strict",
        ),
        ({**HELLO, "functions": [{"name": "f", "parameters": None}]}, "functions[0].parameters"),
        (
            {**HELLO, "tools": [{**TOOL, "function": {"name": "f", "parameters": None}}]},
            "tools[0].function.parameters",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
            "messages[0].content[0].type",
        ),
        ("not json", None),
    ],
)
async def test_bad_input_is_a_400_in_openai_shape(
    api: ApiClient, body: Any, param: str | None
) -> None:
    if isinstance(body, str):
        response = await api.http.post(
            CHAT, content=body, headers={"Authorization": f"Bearer {ADMIN_KEY}"}
        )
    else:
        response = await api.post(CHAT, body)
    assert response.status_code == 400
    error = error_of(response)
    assert error["type"] == "invalid_request_error" and error["message"]
    if param is not None:
        assert error["param"] == param


OPEN = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
CLOSED = {**OPEN, "additionalProperties": False}


@pytest.mark.parametrize(
    ("schema", "says"),
    [
        (OPEN, "In context=(), 'additionalProperties' is required to be supplied and to be false"),
        ({**CLOSED, "required": []}, "Missing 'a'"),
        (
            {**CLOSED, "properties": {"a": {"type": "object", "properties": {"b": {}}}}},
            "In context=('properties', 'a'), 'additionalProperties'",
        ),
        ({"type": "array", "items": CLOSED}, "schema must be a JSON Schema of 'type: \"object\"'"),
    ],
)
async def test_a_strict_schema_openai_refuses_is_refused(
    api: ApiClient, fake: FakeBackend, schema: dict[str, Any], says: str
) -> None:
    """Structured Outputs' rules for `strict: true`, as OpenAI applies them: code that works
    here must not meet a 400 there. Without `strict` the same schemas are taken."""
    formats = {
        "type": "json_schema",
        "json_schema": {"name": "p", "strict": True, "schema": schema},
    }
    tool = {"type": "function", "function": {"name": "f", "strict": True, "parameters": schema}}
    for body, named in (
        ({**HELLO, "response_format": formats}, "Invalid schema for response_format 'p': "),
        ({**HELLO, "tools": [tool]}, "Invalid schema for function 'f': "),
    ):
        answer = await api.post(CHAT, body)
        assert answer.status_code == 400, answer.text
        error = error_of(answer)
        assert named in error["message"] and says in error["message"], error
    loose = {"type": "json_schema", "json_schema": {"name": "p", "schema": schema}}
    fake.replies.append('{"a": "x"}')
    assert (await api.post(CHAT, {**HELLO, "response_format": loose})).status_code == 200
    strict = {**formats, "json_schema": {**formats["json_schema"], "schema": CLOSED}}
    fake.replies.append('{"a": "x"}')
    assert (await api.post(CHAT, {**HELLO, "response_format": strict})).status_code == 200


@pytest.mark.parametrize(
    ("body", "param", "message"),
    [
        ({**HELLO, "stop": 5}, "stop", "stop: must be a string or an array"),
        ({**HELLO, "stop": ["end", 5]}, "stop[1]", "stop/1: must be a string"),
        (
            {**HELLO, "tool_choice": "8"},
            "tool_choice",
            "tool_choice: must be one of: 'none', 'auto' or 'required' or a JSON object",
        ),
        ({"messages": "8"}, "messages", "messages: must be an array"),
        ({**HELLO, "seed": 2**63}, "seed", f"seed: must be at most {2**63 - 1}"),
        ({**HELLO, "model": ""}, "model", "model: must not be empty"),
    ],
)
async def test_a_value_out_of_its_type_is_named_as_the_body_names_it(
    api: ApiClient, body: Any, param: str, message: str
) -> None:
    """Pydantic locates a union's errors under its members' names (`stop/str`,
    `stop/list[str]`): the messages said `stop/str: must be a string`, `param` `stop.str`. A seed
    past int64 (the document's format) was taken, and so was an empty model."""
    response = await api.post(CHAT, body)
    assert response.status_code == 400
    error = error_of(response)
    assert (error["param"], error["message"]) == (param, f"Invalid input: {message}")


async def test_a_prompt_beyond_the_context_window_is_a_400(settings: Settings) -> None:
    async with running_app(settings, FakeBackend(context_window=64)) as api:
        long = {"messages": [{"role": "user", "content": "word " * 100}], "max_tokens": 8}
        response = await api.post(CHAT, long)
        without_max_tokens = await api.post(CHAT, {"messages": long["messages"]})
    assert response.status_code == 400
    assert error_of(response)["code"] == "context_length_exceeded"
    assert (
        "you requested 112 tokens (104 in the messages, 8 in the completion)"
        in (error_of(response)["message"])
    )
    assert without_max_tokens.status_code == 400
    error = error_of(without_max_tokens)
    assert error["code"] == "context_length_exceeded" and error["param"] == "messages"
    assert "your messages resulted in 104 tokens" in error["message"]


async def test_without_max_tokens_the_reply_may_take_the_room_the_prompt_leaves(
    settings: Settings,
) -> None:
    """A default of 256 completion tokens refused a prompt that fit the window (1,906 tokens of
    2,048) with context_length_exceeded; OpenAI and llama-server generate in the room left."""
    fake = FakeBackend(context_window=2048)
    fits = [{"role": "user", "content": "word " * 1900 + "Say ok."}]  # 1,906 tokens here
    async with running_app(settings.model_copy(update={"max_tokens_limit": 1000}), fake) as api:
        assert (await api.post(CHAT, {"messages": fits})).status_code == 200
        assert fake.requests[-1].max_tokens == 2048 - 1906
        streamed = await api.post(CHAT, {"messages": fits, "stream": True})
        assert streamed.status_code == 200 and fake.requests[-1].max_tokens == 2048 - 1906
        # The server's own limit still bounds a reply with room to spare.
        assert (await api.post(CHAT, HELLO)).status_code == 200
        assert fake.requests[-1].max_tokens == 1000
        # As does the window: the whole of it but the prompt.
        almost = [{"role": "user", "content": "word " * 2043}]  # 2,047 tokens
        assert (await api.post(CHAT, {"messages": almost})).status_code == 200
        assert fake.requests[-1].max_tokens == 1
        # A max_tokens the client gives is still checked against the room.
        asked = await api.post(CHAT, {"messages": fits, "max_tokens": 143})
        assert asked.status_code == 400
        assert error_of(asked)["code"] == "context_length_exceeded"
        assert (await api.post(CHAT, {"messages": fits, "max_tokens": 142})).status_code == 200


async def test_fields_at_their_defaults_are_accepted(api: ApiClient, fake: FakeBackend) -> None:
    defaults = {
        "logprobs": False,
        "top_logprobs": 0,
        "frequency_penalty": 0,
        "presence_penalty": 0.0,
        "logit_bias": {},
        "functions": None,
        "function_call": None,
    }
    response = await api.post(CHAT, {**HELLO, **defaults})
    assert response.status_code == 200, response.text
    request = fake.requests[-1]
    assert (request.frequency_penalty, request.presence_penalty, request.logit_bias) == (0, 0, ())
    assert request.tools == () and request.tool_choice is None


async def test_legacy_functions_are_tools_and_their_history_tool_messages(
    api: ApiClient, fake: FakeBackend
) -> None:
    weather = {"name": "get_weather", "parameters": {"type": "object"}}
    body = {
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "function_call": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            },
            {"role": "function", "name": "get_weather", "content": "Sunny."},
        ],
        "functions": [weather],
        "function_call": {"name": "get_weather"},
    }
    assert (await api.post(CHAT, body)).status_code == 200
    request = fake.requests[-1]
    assert request.tools == ({"type": "function", "function": weather},)
    assert request.tool_choice == {"type": "function", "function": {"name": "get_weather"}}
    _, assistant, answer = request.messages
    [call] = assistant.tool_calls
    assert (call.name, call.arguments) == ("get_weather", '{"city": "Paris"}')
    assert (answer.role, answer.content, answer.tool_call_id) == ("tool", "Sunny.", call.id)
    for choice in ("auto", "none"):
        assert (await api.post(CHAT, {**body, "function_call": choice})).status_code == 200
        assert fake.requests[-1].tool_choice == choice


async def test_keys_and_scopes(api: ApiClient) -> None:
    missing = await api.post(CHAT, HELLO, key=None)
    assert missing.status_code == 401 and "Bearer" in missing.headers["www-authenticate"]
    assert error_of(missing)["code"] == "invalid_api_key"
    logs_only = await api.key(scopes=("logs",))
    forbidden = await api.post(CHAT, HELLO, key=logs_only)
    assert forbidden.status_code == 403
    assert error_of(forbidden)["type"] == "permission_error"
    assert (await api.get("/v1/models", key=logs_only)).status_code == 200


async def test_the_key_is_checked_before_the_body_is_read(api: ApiClient) -> None:
    malformed = await api.http.post(
        CHAT, content="{not json", headers={"Content-Type": "application/json"}
    )
    assert malformed.status_code == 401 and error_of(malformed)["code"] == "invalid_api_key"
    with_key = await api.http.post(
        CHAT,
        content="{not json",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {ADMIN_KEY}"},
    )
    assert with_key.status_code == 400 and error_of(with_key)


@pytest.mark.parametrize("where", ["content", "user", "stop"])
async def test_a_lone_surrogate_is_a_400_before_the_model_runs(
    api: ApiClient, fake: FakeBackend, where: str
) -> None:
    message: dict[str, Any] = {"role": "user", "content": "hi"}
    body: dict[str, Any] = {"model": "fake", "messages": [message]}
    if where == "content":
        message["content"] = "SURROGATE"
    else:
        body[where] = "SURROGATE"
    # A JSON escape of a lone UTF-16 surrogate: valid JSON, not storable text.
    raw = json.dumps(body).replace("SURROGATE", "a\\ud800b")
    response = await api.http.post(
        CHAT,
        content=raw,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {ADMIN_KEY}"},
    )
    assert response.status_code == 400 and error_of(response)["type"] == "invalid_request_error"
    assert fake.requests == []


async def test_transport_errors_are_in_openai_shape_too(api: ApiClient) -> None:
    unknown = await api.get("/v1/embeddings")
    assert unknown.status_code == 404 and error_of(unknown)["code"] == "unknown_url"
    wrong_method = await api.get(CHAT)
    assert wrong_method.status_code == 405 and error_of(wrong_method)
    too_large = await api.post(CHAT, {**HELLO, "user": "x" * 2_000_000})
    assert too_large.status_code == 413 and error_of(too_large)
    not_json = await api.http.post(
        CHAT,
        content="a=b",
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Authorization": f"Bearer {ADMIN_KEY}",
        },
    )
    assert not_json.status_code == 415 and error_of(not_json)
    # The API's own routes keep the API's one error shape.
    own = await api.post("/api/v1/gpt/conversations", {"userId": "u"})
    assert set(own.json()["error"]) == {"code", "message", "details"}


async def test_a_backend_failure_is_a_server_error_and_logged(
    api: ApiClient, fake: FakeBackend
) -> None:
    fake.replies.append(BackendUnavailable("the model is busy", retry_after=3))
    response = await api.post(CHAT, HELLO)
    assert response.status_code == 503 and response.headers["retry-after"] == "3"
    assert error_of(response)["type"] == "server_error"
    fake.replies.append(BackendUnavailable("the model is busy", retry_after=3))
    streamed = await api.post(CHAT, {**HELLO, "stream": True})
    assert streamed.status_code == 503
    logged = (await api.get("/api/v1/gpt/logs")).json()
    assert [(e["status"], e["error"]) for e in logged] == [("error", "the model is busy")] * 2


async def test_the_rate_limit_is_a_429_in_openai_shape(settings: Settings) -> None:
    limited = settings.model_copy(update={"rate_limit": "1/day"})
    async with running_app(limited, FakeBackend()) as api:
        assert (await api.get("/v1/models")).status_code == 200
        response = await api.post(CHAT, HELLO)
    assert response.status_code == 429 and int(response.headers["retry-after"]) > 0
    assert error_of(response)["code"] == "rate_limit_exceeded"


@pytest.fixture
async def upstream_style_api(settings: Settings) -> AsyncIterator[ApiClient]:
    async with running_app(settings, FakeBackend(name="upstream", model="big")) as api:
        yield api


async def test_the_default_backend_answers_without_a_model(
    upstream_style_api: ApiClient,
) -> None:
    body = {"messages": HELLO["messages"]}
    response = await upstream_style_api.post(CHAT, body)
    assert response.json()["model"] == "upstream"
    by_model_name = await upstream_style_api.post(CHAT, {**body, "model": "big"})
    assert by_model_name.json()["model"] == "upstream"


async def test_an_empty_functions_array_is_refused_as_empty(api: ApiClient) -> None:
    """OpenAI's minItems 1 (it was accepted); function_call then does not claim that there were
    no functions."""
    for body in ({**HELLO, "functions": []}, {**HELLO, "functions": [], "function_call": "auto"}):
        error = error_of(await api.post(CHAT, body))
        assert error["param"] == "functions" and "at least 1" in error["message"], error
        assert "only allowed when" not in error["message"]


FUNCTION = {
    "name": "f",
    "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
}
HI = [{"role": "user", "content": "hi"}]
CUT = {"messages": HI, "functions": [FUNCTION], "function_call": {"name": "f"}, "max_tokens": 2}
CUT_TOOLS = {
    "messages": HI,
    "tools": [{"type": "function", "function": FUNCTION}],
    "tool_choice": {"type": "function", "function": {"name": "f"}},
    "max_tokens": 2,
}


@pytest.mark.parametrize("body", [CUT, CUT_TOOLS], ids=["functions", "tools"])
async def test_a_call_cut_by_max_tokens_finishes_with_length(
    model_api: ApiClient, body: dict[str, Any]
) -> None:
    """OpenAI's finish_reason for a call the token limit cut: `length`, with what came (it was
    `function_call`/`tool_calls`, as if the arguments `{ "` were a finished call)."""
    whole = (await model_api.post(CHAT, body)).json()
    [choice] = whole["choices"]
    assert choice["finish_reason"] == "length", choice
    message = choice["message"]
    call = message["function_call"] if "functions" in body else message["tool_calls"][0]["function"]
    assert call["name"] == "f" and call["arguments"]
    streamed = events((await model_api.post(CHAT, {**body, "stream": True})).text)
    assert streamed[-1] == "[DONE]"
    assert streamed[-2]["choices"][0]["finish_reason"] == "length"
    logs = (await model_api.get("/api/v1/gpt/logs")).json()
    assert [entry["finishReason"] for entry in logs[:2]] == ["length", "length"]
