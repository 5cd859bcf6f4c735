"""The OpenAI-compatible API in front of a real upstream (llama.cpp's server): calls pass through.

No fallback is configured, so every answer below is the upstream's.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.openai_checks import (
    check_bad_requests,
    check_json_schema,
    check_named_tool_call,
    check_stream_joins_to_the_whole,
)
from tests.serving import Server, serve

pytestmark = [pytest.mark.upstream, pytest.mark.model]

KEY = "gpta_openai_passthrough_key_0123456789abcd"


@pytest.fixture(scope="module")
def server(llama_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {
        "GPTACTIONS_UPSTREAM_URL": llama_server,
        "GPTACTIONS_UPSTREAM_TIMEOUT": "120",
        "GPTACTIONS_FALLBACK": "none",
    }
    with serve(tmp_path_factory.mktemp("passthrough"), key=KEY, env=env) as running:
        yield running


@pytest.fixture
def client(server: Server) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0) as sdk:
        yield sdk


def test_the_upstream_is_the_listed_model(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list().data] == ["upstream"]
    assert client.models.retrieve("upstream").owned_by == "gptactions:openai"


def test_completions_and_streams_pass_through(server: Server, client: openai.OpenAI) -> None:
    check_stream_joins_to_the_whole(client, "upstream")
    logs = httpx.get(
        f"{server.url}/api/v1/gpt/logs",
        params={"limit": 2},
        headers={"Authorization": f"Bearer {KEY}"},
    ).json()
    assert [e["kind"] for e in logs] == ["chat.completion"] * 2
    assert all(e["status"] == "ok" and e["completionTokens"] > 0 for e in logs)


def test_json_schema_and_named_tool_calls_pass_through(client: openai.OpenAI) -> None:
    check_json_schema(client, "upstream")
    check_named_tool_call(client, "upstream")
    check_named_tool_call(client, "upstream", stream=True)


def test_bad_requests_are_refused_before_the_upstream(client: openai.OpenAI) -> None:
    check_bad_requests(client, "upstream")


async def test_the_async_client_streams_from_the_upstream(server: Server) -> None:
    async with openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=KEY) as sdk:
        stream = await sdk.chat.completions.create(
            model="upstream",
            messages=[{"role": "user", "content": "Say hello."}],
            temperature=0,
            max_tokens=8,
            stream=True,
        )
        assert "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])


def test_a_bad_key_is_refused(server: Server, tmp_path: Path) -> None:
    with (
        openai.OpenAI(base_url=f"{server.url}/v1", api_key="gpta_nope", max_retries=0) as bad,
        pytest.raises(openai.AuthenticationError),
    ):
        bad.models.list()
