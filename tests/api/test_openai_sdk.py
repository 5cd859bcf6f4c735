"""The official `openai` SDK (sync, async, streaming) against the real server and embedded model."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gptactions.llm.llama_model import LlamaModel
from gptactions.llm.local import bundled_model_path
from tests.openai_checks import (
    QUESTION,
    check_bad_requests,
    check_completion,
    check_json_schema,
    check_named_tool_call,
    check_stream_joins_to_the_whole,
)
from tests.serving import Server, serve

pytestmark = pytest.mark.model

KEY = "gpta_openai_sdk_test_key_0123456789abcdefgh"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serve(tmp_path_factory.mktemp("openai-sdk"), key=KEY) as running:
        yield running


@pytest.fixture
def client(server: Server) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0) as sdk:
        yield sdk


def test_models_are_the_configured_backends(client: openai.OpenAI) -> None:
    models = client.models.list()
    assert [m.id for m in models.data] == ["local"]
    assert models.data[0].object == "model" and models.data[0].owned_by == "gptactions:local"
    assert client.models.retrieve("local").id == "local"
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("gpt-4o")
    # The SDK's request ids (x-request-id), for a support request to quote, as OpenAI's.
    assert client.models.retrieve("local")._request_id.startswith("req_")  # type: ignore[attr-defined]
    assert missing.value.request_id is not None and missing.value.request_id.startswith("req_")


def test_a_completion_and_a_stream_that_joins_to_it(client: openai.OpenAI) -> None:
    check_stream_joins_to_the_whole(client, "local")


def test_usage_reports_the_prompt_tokens_the_model_had_cached(client: openai.OpenAI) -> None:
    system = {"role": "system", "content": "You are a terse assistant. " * 20}
    replies = [
        client.chat.completions.create(
            model="local", messages=[system, {"role": "user", "content": said}], max_tokens=2
        )
        for said in ("Hi.", "Bye.")
    ]
    first, second = (reply.usage for reply in replies)
    assert first and second and first.prompt_tokens > 100
    details = second.prompt_tokens_details
    assert details is not None and 100 < (details.cached_tokens or 0) < second.prompt_tokens


def test_the_default_model_answers_to_default_and_to_its_model_name(
    client: openai.OpenAI,
) -> None:
    for name in ("default", "SmolLM2-135M-Instruct.Q4_1"):
        completion = client.chat.completions.create(model=name, messages=QUESTION, max_tokens=4)
        assert completion.model == "local"


def test_a_json_schema_reply_validates(client: openai.OpenAI) -> None:
    check_json_schema(client, "local")


def test_replies_at_temperature_1_vary_unless_a_seed_is_given(client: openai.OpenAI) -> None:
    """Without a seed every reply was sampled with seed 0: the same prompt, the same reply."""

    def reply(**kw: Any) -> str:
        completion = client.chat.completions.create(
            model="local",
            messages=[{"role": "user", "content": "Write a short poem about the sea."}],
            max_tokens=24,
            temperature=1,
            **kw,
        )
        return completion.choices[0].message.content or ""

    assert len({reply() for _ in range(3)}) > 1
    assert reply(seed=7) == reply(seed=7)


def test_a_json_object_reply_is_an_object(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="local",
        messages=[{"role": "user", "content": "Describe Paris in JSON."}],
        temperature=0,
        max_tokens=40,
        response_format={"type": "json_object"},
    )
    assert (completion.choices[0].message.content or "").lstrip().startswith("{")


def test_a_named_tool_call_validates_whole_and_streamed(client: openai.OpenAI) -> None:
    check_named_tool_call(client, "local")
    check_named_tool_call(client, "local", stream=True)


def test_a_required_tool_choice_calls_one_of_the_tools(client: openai.OpenAI) -> None:
    other = {"type": "function", "function": {"name": "get_time", "parameters": {}}}
    from tests.openai_checks import WEATHER_TOOL

    completion = client.chat.completions.create(
        model="local",
        messages=[{"role": "user", "content": "What is the weather in Tokyo?"}],
        temperature=0,
        max_tokens=60,
        tools=[WEATHER_TOOL, other],  # type: ignore[list-item]
        tool_choice="required",
    )
    [call] = completion.choices[0].message.tool_calls or []
    assert call.function.name in ("get_weather", "get_time")  # type: ignore[union-attr]
    assert completion.choices[0].finish_reason == "tool_calls"


def test_auto_tool_choice_answers_text_and_tool_results_are_read(client: openai.OpenAI) -> None:
    from tests.openai_checks import WEATHER_TOOL

    completion = client.chat.completions.create(
        model="local",
        messages=[
            {"role": "system", "content": "You are a weather assistant."},
            {"role": "user", "content": "What is the weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 24 degrees."},
        ],
        temperature=0,
        max_tokens=20,
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
    )
    assert completion.choices[0].message.tool_calls is None
    assert completion.choices[0].message.content


async def test_the_async_client_lists_completes_and_streams(server: Server) -> None:
    async with openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=KEY) as sdk:
        assert [m.id async for m in sdk.models.list()] == ["local"]
        whole = await sdk.chat.completions.create(
            model="local",
            messages=QUESTION,
            temperature=0,
            max_tokens=12,  # type: ignore[arg-type]
        )
        stream = await sdk.chat.completions.create(
            model="local",
            messages=QUESTION,  # type: ignore[arg-type]
            temperature=0,
            max_tokens=12,
            stream=True,
        )
        pieces = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        assert "".join(pieces) == whole.choices[0].message.content


def test_errors_are_the_sdks_exceptions(server: Server, client: openai.OpenAI) -> None:
    check_bad_requests(client, "local")
    with (
        openai.OpenAI(base_url=f"{server.url}/v1", api_key="gpta_wrong", max_retries=0) as bad,
        pytest.raises(openai.AuthenticationError) as raised,
    ):
        bad.chat.completions.create(model="local", messages=QUESTION)  # type: ignore[arg-type]
    body = raised.value.body
    assert isinstance(body, dict) and "not valid" in body.pop("message")
    assert body == {"type": "invalid_request_error", "param": None, "code": "invalid_api_key"}


def test_each_call_is_one_interaction_in_the_log(server: Server, client: openai.OpenAI) -> None:
    check_completion(client, "local")
    logs = httpx.get(
        f"{server.url}/api/v1/gpt/logs",
        params={"limit": 1},
        headers={"Authorization": f"Bearer {KEY}"},
    ).json()
    [entry] = logs
    assert entry["kind"] == "chat.completion" and entry["status"] == "ok"
    assert entry["message"] == QUESTION[0]["content"] and entry["reply"]
    assert entry["promptTokens"] > 0 and entry["completionTokens"] > 0
    assert entry["latencyMs"] >= 0 and entry["model"]


def test_the_rate_limit_is_a_rate_limit_error(tmp_path: Path) -> None:
    # A daily window, so the count cannot start over between the calls.
    with (
        serve(tmp_path, key=KEY, env={"GPTACTIONS_RATE_LIMIT": "2/day"}) as limited,
        openai.OpenAI(base_url=f"{limited.url}/v1", api_key=KEY, max_retries=0) as sdk,
    ):
        sdk.models.list()
        sdk.models.list()
        with pytest.raises(openai.RateLimitError) as raised:
            sdk.models.list()
    assert raised.value.body["code"] == "rate_limit_exceeded"  # type: ignore[index]
    assert int(raised.value.response.headers["retry-after"]) > 0


# Schemas whose grammar llama.cpp cannot hold: with maxLength 65,536 its parser overflowed its
# stack and the server died (a segfault); with 4,096, or a pattern repeating 5,000 times, it
# could not parse the grammar (a 502); an empty anyOf left a grammar with no rule (a 502). Each
# is now decoded with the plain JSON grammar, as other schemas the grammar cannot take are.
UNGRAMMATICAL = [
    {"type": "string", "maxLength": 65536},
    {"type": "string", "maxLength": 4096},
    {"type": "string", "pattern": "^a{5000}$"},
    {"type": "array", "items": {"type": "integer"}, "minItems": 3000},
    {"anyOf": []},
]


@pytest.mark.parametrize("schema", UNGRAMMATICAL)
def test_a_schema_llama_cpp_cannot_hold_as_a_grammar_is_answered(
    server: Server, schema: dict[str, object]
) -> None:
    response = httpx.post(
        f"{server.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {KEY}"},
        json={
            "model": "local",
            "messages": [{"role": "user", "content": "Give JSON."}],
            "max_tokens": 8,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": schema},
            },
        },
        timeout=300,
    )
    assert response.status_code == 200, response.text
    assert httpx.get(f"{server.url}/healthz", timeout=30).status_code == 200


def test_a_schema_the_grammar_cannot_follow_is_a_400_before_generation(
    server: Server, client: openai.OpenAI
) -> None:
    """An unanchored pattern (or a $ref to nothing, a `not`…) made llama-cpp-python's converter
    raise: the reply was any JSON (`{}`, a 200) and the log had a traceback."""
    schema = {"type": "object", "properties": {"code": {"type": "string", "pattern": "[A-Z]+"}}}
    before = server.log.read_text(errors="replace")
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(
            model="local",
            messages=QUESTION,
            max_tokens=8,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "code", "schema": schema},
            },
        )
    body = raised.value.body
    assert isinstance(body, dict) and body["param"] == "response_format"
    assert body["type"] == "invalid_request_error"
    assert "'[A-Z]+' must start with ^ and end with $" in body["message"]
    assert "/properties/code/pattern" in body["message"]

    tool = {
        "type": "function",
        "function": {"name": "lookup", "parameters": {"$ref": "#/$defs/query"}},
    }
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(
            model="local",
            messages=QUESTION,
            max_tokens=8,
            tools=[tool],  # type: ignore[list-item]
            tool_choice="required",
        )
    body = raised.value.body
    assert isinstance(body, dict) and body["param"] == "tools[0].function.parameters"
    assert "'lookup'" in body["message"] and "points to nothing" in body["message"]

    written = server.log.read_text(errors="replace")[len(before) :]
    assert "Traceback" not in written and "grammar" not in written, written


@pytest.fixture(scope="module")
def tokenizer() -> Iterator[LlamaModel]:
    """The served model's vocabulary, to name tokens by id as `logit_bias` does."""
    model = LlamaModel(bundled_model_path())
    yield model
    model.close()


def greedy(client: openai.OpenAI, prompt: str, max_tokens: int, **kw: Any) -> str:
    """The reply at temperature 0, whole; or, with `stream`, its pieces joined."""
    messages: Any = [{"role": "user", "content": prompt}]
    if kw.pop("stream", False):
        chunks = client.chat.completions.create(
            model="local",
            messages=messages,
            temperature=0,
            max_tokens=max_tokens,
            stream=True,
            **kw,
        )
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    completion = client.chat.completions.create(
        model="local", messages=messages, temperature=0, max_tokens=max_tokens, **kw
    )
    return completion.choices[0].message.content or ""


def test_without_max_tokens_a_prompt_that_fits_the_window_is_answered(
    tmp_path: Path,
) -> None:
    """A default of 256 completion tokens refused it: 'you requested 2190 tokens (1934 in the
    messages, 256 in the completion)'. Here with a window of 512 tokens, so that the prompt
    that leaves less than 256 of them is short to read."""
    window = {"GPTACTIONS_CONTEXT_WINDOW": "512"}
    with (
        serve(tmp_path, key=KEY, env=window) as small,
        openai.OpenAI(base_url=f"{small.url}/v1", api_key=KEY, max_retries=0) as client,
    ):
        prompt: Any = [{"role": "user", "content": "word " * 300 + "Say ok."}]
        completion = client.chat.completions.create(model="local", messages=prompt, temperature=0)
        usage = completion.usage
        assert usage is not None and 512 - 256 < usage.prompt_tokens < 512
        assert 0 < usage.completion_tokens <= 512 - usage.prompt_tokens
        too_long: Any = [{"role": "user", "content": "word " * 600}]
        with pytest.raises(openai.BadRequestError) as raised:
            client.chat.completions.create(model="local", messages=too_long)
    body = raised.value.body
    assert isinstance(body, dict) and body["code"] == "context_length_exceeded"
    assert body["param"] == "messages" and "your messages resulted in" in body["message"]


def test_logit_bias_bans_and_forces_tokens(client: openai.OpenAI, tokenizer: LlamaModel) -> None:
    question = "What is the capital of France?"
    plain = greedy(client, question, 6)
    first = tokenizer.tokenize(plain)[0]
    banned = greedy(client, question, 6, logit_bias={str(first): -100})
    assert banned and tokenizer.tokenize(banned)[0] != first
    assert greedy(client, question, 6, logit_bias={str(first): -100}, stream=True) == banned
    forced = tokenizer.tokenize("Banana")[0]
    reply = greedy(client, question, 3, logit_bias={str(forced): 100})
    assert reply.startswith(tokenizer.piece(forced).decode())
    with pytest.raises(openai.BadRequestError) as raised:
        greedy(client, question, 3, logit_bias={str(tokenizer.n_vocab): -100})
    body = raised.value.body
    assert isinstance(body, dict) and body["param"] == "logit_bias"
    assert "vocabulary" in body["message"]


def distinct(tokenizer: LlamaModel, text: str) -> float:
    """The share of a text's tokens that are not repeats."""
    tokens = tokenizer.tokenize(text)
    return len(set(tokens)) / len(tokens)


@pytest.mark.parametrize("penalty", ["presence_penalty", "frequency_penalty"])
def test_a_penalty_changes_a_greedy_reply_that_repeats(
    client: openai.OpenAI, tokenizer: LlamaModel, penalty: str
) -> None:
    fruits = "List ten fruits."
    plain = greedy(client, fruits, 40)
    assert greedy(client, fruits, 40, **{penalty: 0}) == plain  # the default changes nothing
    penalized = greedy(client, fruits, 40, **{penalty: 2})
    assert penalized != plain and distinct(tokenizer, penalized) > distinct(tokenizer, plain)
    assert greedy(client, fruits, 40, stream=True, **{penalty: 2}) == penalized
    # A negative penalty favours what was written.
    hello = "Write 'hello' ten times."
    encouraged = greedy(client, hello, 40, **{penalty: -2})
    assert encouraged.lower().count("hello") > greedy(client, hello, 40).lower().count("hello")


def test_legacy_functions_are_answered_with_a_function_call(client: openai.OpenAI) -> None:
    from tests.openai_checks import WEATHER_TOOL

    asked: dict[str, Any] = {
        "model": "local",
        "messages": [{"role": "user", "content": "What is the weather in Tokyo?"}],
        "temperature": 0,
        "max_tokens": 60,
        "functions": [WEATHER_TOOL["function"]],
        "function_call": {"name": "get_weather"},
    }
    completion = client.chat.completions.create(**asked)
    [choice] = completion.choices
    call = choice.message.function_call
    assert call is not None and call.name == "get_weather" and choice.message.tool_calls is None
    assert json.loads(call.arguments)["city"] in ("Paris", "London", "Tokyo")
    assert choice.finish_reason == "function_call"
    chunks = list(client.chat.completions.create(**asked, stream=True))
    pieces = [c.choices[0].delta.function_call for c in chunks if c.choices]
    assert "".join(p.name or "" for p in pieces if p) == "get_weather"
    assert "".join(p.arguments or "" for p in pieces if p) == call.arguments
    assert chunks[-1].choices[0].finish_reason == "function_call"


def test_logprobs_are_refused_rather_than_left_out(client: openai.OpenAI) -> None:
    for asked in ({"logprobs": True}, {"top_logprobs": 5}):
        with pytest.raises(openai.BadRequestError) as raised:
            client.chat.completions.create(
                model="local",
                messages=QUESTION,  # type: ignore[arg-type]
                max_tokens=4,
                **asked,
            )
        body = raised.value.body
        assert isinstance(body, dict) and body["param"] == next(iter(asked))
    plain = client.chat.completions.create(
        model="local",
        messages=QUESTION,  # type: ignore[arg-type]
        max_tokens=4,
        logprobs=False,
        top_logprobs=0,
    )
    assert plain.choices[0].logprobs is None
