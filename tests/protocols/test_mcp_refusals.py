"""What /mcp refuses, as MCP clients see it: JSON-RPC errors in a line, tool errors naming what
to fix, and a rate limit that says when to retry (through the official SDK's client)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import MCPError
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS

from gptactions.api.mcp import _converse, _run_action
from gptactions.config import Settings
from gptactions.llm.fake import FakeBackend
from gptactions.services.errors import UNPAIRED_SURROGATE, ServiceError
from gptactions.services.keys import Principal
from gptactions.store.outage import DatabaseUnavailable
from tests.actions.conftest import HAIKU_YAML
from tests.conftest import ADMIN_KEY, ApiClient
from tests.protocols.conftest import Served, mcp_client, served

ACCEPT = "application/json, text/event-stream"
SUPPORTED = [*HANDSHAKE_PROTOCOL_VERSIONS, *MODERN_PROTOCOL_VERSIONS]


async def post(
    server: Served, body: Any, *, version: str | None = None, key: str = ADMIN_KEY
) -> httpx.Response:
    """One raw POST to /mcp: a JSON value, or a str sent as it is."""
    headers = {"Authorization": f"Bearer {key}", "Accept": ACCEPT}
    if version is not None:
        headers["MCP-Protocol-Version"] = version
    async with httpx.AsyncClient(base_url=server.url) as http:
        if isinstance(body, str):
            headers["Content-Type"] = "application/json"
            return await http.post("/mcp", content=body, headers=headers)
        return await http.post("/mcp", json=body, headers=headers)


def in_a_line(message: str) -> None:
    """A message of the server's own: one line, no library's report or link."""
    assert "\n" not in message, message
    assert "pydantic" not in message.lower() and "http" not in message, message


@pytest.mark.parametrize(
    ("body", "version", "code", "answering", "says"),
    [
        ({"jsonrpc": "2.0", "id": 3}, None, -32600, 3, '"method" is missing'),
        ({"jsonrpc": "2.0", "id": 3}, "2025-06-18", -32600, 3, '"method" is missing'),
        ([{"jsonrpc": "2.0", "id": 3, "method": "ping"}], "2025-03-26", -32600, None, "batch"),
        ({"jsonrpc": "1.0", "id": 4, "method": "ping"}, None, -32600, 4, '"jsonrpc"'),
        ({"jsonrpc": "2.0", "id": [1], "method": "ping"}, None, -32600, None, '"id"'),
        ({"jsonrpc": "2.0", "id": 5, "method": 7}, None, -32600, 5, '"method" must be'),
        ("{not json", None, -32700, None, "not valid JSON"),
        ({"jsonrpc": "2.0", "id": 6}, "2026-07-28", -32600, 6, '"method" is missing'),
    ],
)
async def test_a_malformed_message_is_a_json_rpc_error_in_a_line(
    settings: Settings,
    body: Any,
    version: str | None,
    code: int,
    answering: int | None,
    says: str,
) -> None:
    """JSON-RPC 2.0, 5.1: -32700 for what is not JSON, -32600 for what is not a request object
    (it was -32602 with pydantic's multi-line report and its URLs)."""
    async with served(settings, FakeBackend()) as server:
        answer = await post(server, body, version=version)
        assert answer.status_code == 400, answer.text
        assert answer.json()["id"] == answering
        error = answer.json()["error"]
        assert error["code"] == code
        assert says in error["message"]
        in_a_line(error["message"])
        if version in MODERN_PROTOCOL_VERSIONS:
            return  # its well-formed messages carry more (params._meta), and are tested by the SDK
        # A well-formed message still reaches the SDK.
        ping = await post(server, {"jsonrpc": "2.0", "id": 9, "method": "ping"}, version=version)
        assert ping.status_code == 200 and ping.json() == {"jsonrpc": "2.0", "id": 9, "result": {}}


async def test_an_unsupported_protocol_version_is_refused_naming_those_supported(
    settings: Settings,
) -> None:
    """The spec's 400 for an unsupported MCP-Protocol-Version, saying so (it spoke of
    `params._meta`, the envelope of a revision the client did not ask for)."""
    listing = {"jsonrpc": "2.0", "id": 5, "method": "tools/list"}
    async with served(settings, FakeBackend()) as server:
        answer = await post(server, listing, version="1999-01-01")
        assert answer.status_code == 400
        assert answer.json()["id"] == 5
        error = answer.json()["error"]
        assert error["code"] == -32022
        assert "unsupported MCP protocol version '1999-01-01'" in error["message"]
        assert all(version in error["message"] for version in SUPPORTED)
        assert error["data"] == {"supported": SUPPORTED, "requested": "1999-01-01"}
        in_a_line(error["message"])
        listed = await post(server, listing, version="2025-06-18")
        assert "converse" in {tool["name"] for tool in listed.json()["result"]["tools"]}


async def test_converse_refuses_a_property_its_schema_does_not_name(settings: Settings) -> None:
    async with served(settings, FakeBackend(["never said"])) as server:
        async with mcp_client(server, await server.key("chat")) as client:
            [tool] = (await client.list_tools()).tools
            assert tool.input_schema["additionalProperties"] is False
            result = await client.call_tool(
                "converse", {"userId": "mcpuser", "message": "hi", "bogus": 1}
            )
        assert result.is_error
        error = result.structured_content["error"]
        assert error["code"] == "invalid_request"
        assert error["message"] == "Invalid input: bogus: is not a parameter of this tool"
        assert error["details"] == [
            {"pointer": "/bogus", "message": "is not a parameter of this tool"}
        ]
        assert "bogus" in result.content[0].text
        # Refused as the other refusals are: in the log, and nothing was generated.
        async with httpx.AsyncClient(base_url=server.url) as http:
            logs = await http.get(
                "/api/v1/gpt/logs", headers={"Authorization": f"Bearer {ADMIN_KEY}"}
            )
        assert [(e["kind"], e["endpoint"]) for e in logs.json()] == [
            ("rejected", "POST /mcp?tool=converse")
        ]


async def test_a_signed_in_users_converse_is_held_to_its_own_schema(api: ApiClient) -> None:
    """An OAuth token's `converse` has no required userId, and no more properties either."""
    alice = Principal("oauth-client", "oauth:My GPT", "default", frozenset({"chat"}), "alice")
    with pytest.raises(ServiceError) as refused:
        await _converse(api.runtime, alice, {"message": "hi", "tone": "warm"})
    assert [(p.pointer, p.message) for p in refused.value.details] == [
        ("/tone", "is not a parameter of this tool")
    ]
    result = await _converse(api.runtime, alice, {"message": "hi"})
    assert not result.is_error


OPEN_YAML = (
    HAIKU_YAML
    + """\
  - name: tagline
    description: Write a tagline for a product.
    parameters:
      type: object
      required: [product]
      properties:
        product: {type: string}
      additionalProperties: true
    prompt: "Write a tagline for {{ product }}."
"""
)
"""`haiku`, which says nothing of other properties, and `tagline`, whose schema admits them."""


def with_actions(tmp_path: Path, actions_yaml: str) -> Settings:
    """Settings with these user-defined actions."""
    actions = tmp_path / "actions.yaml"
    actions.write_text(actions_yaml, encoding="utf-8")
    return Settings(
        database_url=f"sqlite:///{tmp_path / 'test.db'}", api_key=ADMIN_KEY, actions_file=actions
    )


async def test_every_tool_refuses_a_property_its_schema_does_not_allow(tmp_path: Path) -> None:
    """Whatever a tool's schema is (built-in, user-defined, `converse`), the call is held to it,
    and the schema says so: the actions' tools had no `additionalProperties: false`, and took
    an argument they do not know (ignored, with a warning)."""
    fake = FakeBackend()
    async with (
        served(with_actions(tmp_path, HAIKU_YAML), fake) as server,
        mcp_client(server, ADMIN_KEY) as client,
    ):
        tools = (await client.list_tools()).tools
        assert {"converse", "haiku", "sentiment", "summarize"} <= {tool.name for tool in tools}
        for tool in tools:
            assert tool.input_schema["additionalProperties"] is False, tool.name
            result = await client.call_tool(tool.name, {"bogus": 1})
            assert result.is_error, tool.name  # every one requires something
            details = result.structured_content["error"]["details"]
            assert {"pointer": "/bogus", "message": "is not a parameter of this tool"} in details
            assert not [d for d in details if d["pointer"].startswith("/parameters")], details
    assert fake.requests == []


async def test_an_action_tool_refuses_an_argument_it_does_not_take(settings: Settings) -> None:
    """Even with every argument it needs (REST's `parameters` admit any, as the seed's do: it
    still ignores one, with a warning)."""
    fake = FakeBackend(["positive"])
    async with (
        served(settings, fake) as server,
        mcp_client(server, ADMIN_KEY) as client,
        httpx.AsyncClient(base_url=server.url) as http,
    ):
        arguments = {"text": "I love it", "bogus": 1}
        result = await client.call_tool("sentiment", arguments)
        assert result.is_error
        error = result.structured_content["error"]
        assert error["message"] == "Invalid input: bogus: is not a parameter of this tool"
        assert error["details"] == [
            {"pointer": "/bogus", "message": "is not a parameter of this tool"}
        ]
        assert json.loads(result.content[0].text) == result.structured_content  # the same, as text
        assert fake.requests == []  # refused before the model
        admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
        logs = await http.get("/api/v1/gpt/logs", headers=admin)
        assert [(e["kind"], e["endpoint"]) for e in logs.json()] == [
            ("rejected", "POST /mcp?tool=sentiment")
        ]
        rest = await http.post(
            "/api/v1/gpt/actions",
            json={"action": "sentiment", "parameters": arguments},
            headers=admin,
        )
        assert rest.status_code == 200, rest.text
        assert rest.json()["warnings"] == [
            "parameters/bogus is not a parameter of sentiment and was ignored"
        ]


async def test_an_action_tool_points_at_its_arguments(settings: Settings) -> None:
    """A tool's arguments are at the top level: `/text`, not REST's `/parameters/text`, whether
    the tool's schema or the actions service finds the problem."""
    async with (
        served(settings, FakeBackend()) as server,
        mcp_client(server, ADMIN_KEY) as client,
    ):
        result = await client.call_tool("sentiment", {})
        error = result.structured_content["error"]
        assert error["message"] == "Invalid input: text: is required"
        assert error["details"] == [{"pointer": "/text", "message": "is required"}]
        # Its text is the same body, as a success's is: a client that gives its model only the
        # text gives it the code and the pointers (and a limit's retryAfter).
        assert json.loads(result.content[0].text) == result.structured_content
        # One only the service finds: a lone surrogate, which only a caller in the process can
        # send (the endpoint's JSON parser refuses one).
        caller = Principal("k", "tester", "default", frozenset({"actions"}))
        with pytest.raises(ServiceError) as refused:
            await _run_action(server.runtime, caller, "sentiment", {"text": "bad \ud800"})
    assert refused.value.message == f"Invalid input: text: {UNPAIRED_SURROGATE}"
    assert [(p.pointer, p.message) for p in refused.value.details] == [
        ("/text", UNPAIRED_SURROGATE)
    ]


async def test_an_action_whose_schema_admits_other_properties_keeps_it(tmp_path: Path) -> None:
    """Its `additionalProperties: true` is its author's: the tool admits them too, and says
    which it ignored, by their pointers among the arguments."""
    async with (
        served(with_actions(tmp_path, OPEN_YAML), FakeBackend(["Tea, at last."])) as server,
        mcp_client(server, ADMIN_KEY) as client,
    ):
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert tools["tagline"].input_schema["additionalProperties"] is True
        assert tools["haiku"].input_schema["additionalProperties"] is False
        result = await client.call_tool("tagline", {"product": "tea", "tone": "warm"})
    assert not result.is_error, result.content
    assert result.structured_content["warnings"] == [
        "/tone is not a parameter of tagline and was ignored"
    ]


async def test_a_token_limited_tool_call_says_when_to_retry(settings: Settings) -> None:
    """A tool error (HTTP 200, `isError`) as MCP has it, with `retryAfter` in seconds as the
    endpoint's own 429 has it in `data`: the time was only in the message's text."""
    long_message = " ".join(["word"] * 60)
    async with served(settings, FakeBackend(["Fine."])) as server:
        limited = (await server.runtime.keys.create("limited", token_limit="50/hour")).secret
        async with mcp_client(server, limited) as client:
            first = await client.call_tool("converse", {"userId": "ada", "message": long_message})
            assert not first.is_error, first.content  # its tokens use the hour's up
            for name, arguments in [
                ("converse", {"userId": "ada", "message": "again"}),
                ("sentiment", {"text": "I love it"}),
            ]:
                result = await client.call_tool(name, arguments)
                assert result.is_error, name
                error = result.structured_content["error"]
                assert error["code"] == "token_limit_exceeded"
                wait = error["retryAfter"]
                assert type(wait) is int and 1 <= wait <= 3600
                assert error["message"].endswith(f"retry in {wait} s")


async def test_converse_declares_the_limits_the_server_holds_it_to(tmp_path: Path) -> None:
    """`maxTokens` over GPTACTIONS_MAX_TOKENS_LIMIT, and a userId or message longer than the
    server takes, are refused, and the schema says where that is (as the REST document does);
    it had a minimum only."""
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'test.db'}",
        api_key=ADMIN_KEY,
        max_tokens_limit=64,
        max_user_id_length=8,
        max_message_length=20,
    )
    async with (
        served(settings, FakeBackend(["Fine."])) as server,
        mcp_client(server, ADMIN_KEY) as client,
    ):
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        declared = tools["converse"].input_schema["properties"]
        assert declared["maxTokens"]["maximum"] == 64
        assert (declared["userId"]["maxLength"], declared["message"]["maxLength"]) == (8, 20)
        arguments = {"userId": "ada", "message": "hi"}
        over = await client.call_tool("converse", {**arguments, "maxTokens": 65})
        assert over.structured_content["error"]["details"] == [
            {"pointer": "/maxTokens", "message": "must be at most 64"}
        ]
        for name, value in (("userId", "u" * 9), ("message", "m" * 21)):
            long = await client.call_tool("converse", {**arguments, name: value})
            assert long.is_error
            assert [d["pointer"] for d in long.structured_content["error"]["details"]] == [
                f"/{name}"
            ]
        within = await client.call_tool("converse", {**arguments, "maxTokens": 64})
        assert not within.is_error, within.content


async def test_a_rate_limited_client_is_told_why_and_when_to_retry(settings: Settings) -> None:
    """The SDK's client reads a refused POST's body only when it is a JSON-RPC error: the 429
    was "Server returned an error response", without its reason or Retry-After."""
    async with served(settings, FakeBackend()) as server:
        limited = (await server.runtime.keys.create("limited", rate_limit="4/hour")).secret
        async with mcp_client(server, limited) as client:
            with pytest.raises(MCPError) as caught:
                for _ in range(10):  # initialize and its notification count too; 10: a new hour
                    await client.list_tools()
        error = caught.value.error
        assert error.message.startswith("rate limit 4/hour reached for this key; retry in ")
        assert error.data["code"] == "rate_limited" and error.data["status"] == 429
        assert 1 <= error.data["retryAfter"] <= 3600
        # Over HTTP: still a 429 with Retry-After, answering the request by its id.
        for _ in range(5):
            answer = await post(server, {"jsonrpc": "2.0", "id": 8, "method": "ping"}, key=limited)
            if answer.status_code != 200:
                break
        assert answer.status_code == 429
        body = answer.json()
        assert body["id"] == 8 and body["error"]["code"] == -32010
        assert answer.headers["retry-after"] == str(body["error"]["data"]["retryAfter"])
        # And in the caller's log, as a REST 429 is.
        async with httpx.AsyncClient(base_url=server.url) as http:
            logs = await http.get(
                "/api/v1/gpt/logs?kind=rejected", headers={"Authorization": f"Bearer {ADMIN_KEY}"}
            )
        assert {(e["endpoint"], e["httpStatus"]) for e in logs.json()} == {("POST /mcp", 429)}


async def test_a_database_outage_is_told_with_when_to_retry(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with served(settings, FakeBackend()) as server:

        def down() -> None:
            raise DatabaseUnavailable("test", ConnectionError("refused"))

        monkeypatch.setattr(server.runtime, "require_database", down)
        answer = await post(server, {"jsonrpc": "2.0", "id": 2, "method": "ping"})
        assert answer.status_code == 503
        error = answer.json()["error"]
        assert error["message"] == "the database is unavailable; retry shortly"
        assert error["data"]["code"] == "database_unavailable"
        assert answer.headers["retry-after"] == str(error["data"]["retryAfter"])


async def raw(server: Served, body: bytes, headers: dict[str, str]) -> httpx.Response:
    """A POST to /mcp with these bytes and headers, as a client the SDK is not might send it."""
    sent = {"Authorization": f"Bearer {ADMIN_KEY}", "Accept": ACCEPT, **headers}
    async with httpx.AsyncClient(base_url=server.url) as http:
        return await http.post("/mcp", content=body, headers=sent)


PING = b'{"jsonrpc": "2.0", "id": 12, "method": "ping"}'


@pytest.mark.parametrize(
    ("body", "headers", "says"),
    [
        (PING, {"Content-Type": "text/plain"}, "Content-Type: application/json"),
        (PING, {"Content-Type": "application/json", "Content-Encoding": "gzip"}, "compressed"),
        (gzip.compress(PING), {"Content-Type": "application/json", "Content-Encoding": "gzip"}, ""),
    ],
    ids=["text/plain", "said-gzip", "gzip"],
)
async def test_a_body_rest_would_refuse_is_a_415_json_rpc_error(
    settings: Settings, body: bytes, headers: dict[str, str], says: str
) -> None:
    """As REST refuses them (a 415, compressed bodies with Accept-Encoding: identity), in
    JSON-RPC: it was a plain-text 400 "Invalid Content-Type header", a 200 for a body said to be
    gzip that was not, and "not valid JSON" for one that was."""
    async with served(settings, FakeBackend()) as server:
        answer = await raw(server, body, headers)
        assert answer.status_code == 415, answer.text
        assert answer.headers["content-type"] == "application/json"
        reply = answer.json()
        assert reply["jsonrpc"] == "2.0" and reply["id"] == (None if says == "" else 12)
        assert reply["error"]["code"] == -32010
        assert reply["error"]["data"]["code"] == "unsupported_media_type"
        assert says in reply["error"]["message"]
        in_a_line(reply["error"]["message"])
        if "Content-Encoding" in headers:
            assert answer.headers["accept-encoding"] == "identity"
        # A JSON body without a Content-Type is read as JSON, as REST reads it.
        plain = await raw(server, PING, {})
        assert "content-type" not in plain.request.headers
        assert plain.status_code == 200 and plain.json()["id"] == 12, plain.text


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"name": "converse", "arguments": "x"}, "params.arguments: must be an object"),
        ({"arguments": {}}, "params.name: is required"),
        ({"name": 5, "arguments": {}}, "params.name: must be a string"),
        (None, "params.name: is required"),
    ],
)
async def test_a_malformed_tool_call_says_which_member_is_wrong(
    settings: Settings, params: Any, says: str
) -> None:
    """It was -32602 "Invalid request parameters" with empty data."""
    call: dict[str, Any] = {"jsonrpc": "2.0", "id": 21, "method": "tools/call"}
    if params is not None:
        call["params"] = params
    async with served(settings, FakeBackend()) as server:
        answer = await post(server, call)
        reply = answer.json()
        assert answer.status_code == 200  # as the SDK answered it, and an unknown tool
        assert reply["id"] == 21 and reply["error"]["code"] == -32602, reply
        assert says in reply["error"]["message"]
        in_a_line(reply["error"]["message"])
