"""The MCP server at /mcp, through the official `mcp` SDK's client over streamable HTTP."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import MCPError

from gptactions.api.mcp_route import McpRoute
from gptactions.config import Settings
from gptactions.llm.fake import FakeBackend
from gptactions.llm.local import LocalBackend
from gptactions.llm.router import BackendRouter
from gptactions.runtime import Runtime
from gptactions.services.keys import Principal
from tests.actions.conftest import HAIKU_YAML as HAIKU
from tests.conftest import ADMIN_KEY, ApiClient, _KeepLoaded
from tests.protocols.conftest import Served, initialize_message, mcp_client, served


async def logged(server: Served) -> list[dict[str, Any]]:
    """The interaction log, read through the REST API."""
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.get(
            "/api/v1/gpt/logs", headers={"Authorization": f"Bearer {ADMIN_KEY}"}
        )
    assert response.status_code == 200
    entries: list[dict[str, Any]] = response.json()
    return entries


@pytest.fixture
def actions_settings(tmp_path: Path) -> Settings:
    """Settings with a user-defined action."""
    path = tmp_path / "actions.yaml"
    path.write_text(HAIKU, encoding="utf-8")
    return Settings(
        database_url=f"sqlite:///{tmp_path / 'test.db'}", api_key=ADMIN_KEY, actions_file=path
    )


@pytest.mark.model
async def test_tools_are_listed_and_called_on_the_real_model(
    actions_settings: Settings, local_backend: LocalBackend
) -> None:
    async with served(actions_settings, _KeepLoaded(local_backend)) as server:  # type: ignore[arg-type]
        async with mcp_client(server, ADMIN_KEY) as client:
            tools = {tool.name: tool for tool in (await client.list_tools()).tools}
            assert {"converse", "summarize", "haiku"} <= set(tools)
            assert tools["haiku"].input_schema["required"] == ["topic"]
            assert tools["converse"].input_schema["required"] == ["userId", "message"]

            text = "The cat sat on the mat. It was a sunny day and the cat was happy to be warm."
            summary = await client.call_tool("summarize", {"text": text, "maxWords": 20})
            assert not summary.is_error, summary.content
            assert summary.structured_content["success"] is True
            assert summary.structured_content["result"].strip()
            assert json.loads(summary.content[0].text) == summary.structured_content

            haiku = await client.call_tool("haiku", {"topic": "the sea"})
            assert not haiku.is_error, haiku.content
            assert haiku.content[0].text.strip()

        entries = await logged(server)
        assert {e["action"] for e in entries if e["kind"] == "action"} == {"summarize", "haiku"}
        assert all(e["status"] == "ok" and e["userId"] == "admin" for e in entries), entries


async def test_converse_starts_and_continues_a_conversation(settings: Settings) -> None:
    async with (
        served(settings, FakeBackend(["Hello there.", "Still here."])) as server,
        mcp_client(server, await server.key("chat")) as client,
    ):
        first = await client.call_tool("converse", {"userId": "ada", "message": "Hi"})
        assert not first.is_error, first.content
        assert first.structured_content["reply"] == "Hello there."
        # The text is the structured content, serialized (MCP 2025-06-18): a client that gives
        # its model only the text gives it the conversation's id to continue it with.
        assert json.loads(first.content[0].text) == first.structured_content
        conversation = first.structured_content["conversationId"]
        second = await client.call_tool(
            "converse", {"userId": "ada", "message": "Still?", "conversationId": conversation}
        )
        assert second.structured_content["conversationId"] == conversation
        assert second.structured_content["reply"] == "Still here."
        assert json.loads(second.content[0].text) == second.structured_content
        # REST's body, whole: how the reply ended included.
        assert second.structured_content["finishReason"] == "stop"
        assert second.structured_content["truncated"] is False
        assert "cachedTokens" in second.structured_content["usage"]
        entries = await logged(server)
        assert [e["conversationId"] for e in entries] == [conversation, conversation]


async def test_an_action_tool_answers_rests_body(settings: Settings) -> None:
    """How the result ended (finishReason, truncated) included, as POST /actions and `converse`
    answer it: the tool left both out."""
    words = " ".join(f"word{i}" for i in range(20)) + "."
    async with (
        served(settings, FakeBackend(["positive", "positive", words, words])) as server,
        mcp_client(server, ADMIN_KEY) as client,
        httpx.AsyncClient(base_url=server.url) as http,
    ):
        text = "The cat sat on the mat, happy to be warm."
        for name, arguments in [
            ("sentiment", {"text": text}),
            ("summarize", {"text": text, "maxWords": 5}),  # cut by the action's own limit
        ]:
            result = await client.call_tool(name, arguments)
            assert not result.is_error, result.content
            rest = await http.post(
                "/api/v1/gpt/actions",
                json={"action": name, "parameters": arguments},
                headers={"Authorization": f"Bearer {ADMIN_KEY}"},
            )
            assert rest.status_code == 200, rest.text
            assert result.structured_content == rest.json()
            assert result.structured_content["finishReason"] == "stop"
        assert result.structured_content["truncated"] is True
        assert result.structured_content["result"] == "word0 word1 word2 word3 word4…"


async def test_a_call_without_a_valid_key_is_refused(settings: Settings) -> None:
    async with served(settings, FakeBackend()) as server:
        for key, why in [
            (None, "an API key or an OAuth access token is required"),
            ("gpta_not_a_key", "is not valid"),
        ]:
            with pytest.raises(ExceptionGroup) as caught:
                async with mcp_client(server, key) as client:
                    await client.call_tool("summarize", {"text": "x"})
            # The client is told why (it was "Server returned an error response").
            assert caught.group_contains(MCPError, match=why, depth=2)
        async with httpx.AsyncClient(base_url=server.url) as http:
            response = await http.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
        assert response.status_code == 401
        assert response.json()["id"] == 1
        assert response.json()["error"]["data"]["code"] == "unauthorized"
        assert response.headers["www-authenticate"].startswith("Bearer")


async def http_logs(server: Any, query: str = "") -> list[dict[str, Any]]:
    """The server's log, as the admin key reads it."""
    async with httpx.AsyncClient(base_url=server.url) as http:
        answer = await http.get(
            f"/api/v1/gpt/logs{query}", headers={"Authorization": f"Bearer {ADMIN_KEY}"}
        )
    rows: list[dict[str, Any]] = answer.json()
    return rows


async def test_a_bad_argument_is_a_tool_error(settings: Settings) -> None:
    async with (
        served(settings, FakeBackend()) as server,
        mcp_client(server, ADMIN_KEY) as client,
    ):
        result = await client.call_tool("summarize", {"text": "x", "maxWords": "many"})
        assert result.is_error
        error = result.structured_content["error"]
        assert error["code"] == "invalid_request"
        # At the top level, where a tool's arguments are (REST's are under /parameters).
        assert error["details"][0]["pointer"] == "/maxWords"
        assert "/maxWords" in result.content[0].text and "parameters" not in result.content[0].text

        missing = await client.call_tool("converse", {"userId": "ada"})
        assert missing.is_error
        assert missing.structured_content["error"]["details"][0]["pointer"] == "/message"
        # In REST's words, not pydantic's ("Value error, must not be empty or only whitespace").
        blank = await client.call_tool("converse", {"userId": "ada", "message": "  "})
        assert blank.structured_content["error"]["message"] == (
            "Invalid input: message: must not be empty or only whitespace"
        )
        # Each refusal is in the log as REST's are: kind rejected, its arguments as the body.
        logs = await http_logs(server, "?kind=rejected")
        assert [(row["endpoint"], row["httpStatus"]) for row in reversed(logs)] == [
            ("POST /mcp?tool=summarize", 400),
            ("POST /mcp?tool=converse", 400),
            ("POST /mcp?tool=converse", 400),
        ]
        assert logs[0]["userId"] == "ada" and '"message": "  "' in logs[0]["message"]


async def test_tools_follow_the_keys_scopes(settings: Settings) -> None:
    async with served(settings, FakeBackend()) as server:
        async with mcp_client(server, await server.key("chat")) as client:
            names = {tool.name for tool in (await client.list_tools()).tools}
            assert names == {"converse"}
            refused = await client.call_tool("summarize", {"text": "x"})
            assert refused.is_error
            assert refused.structured_content["error"]["code"] == "forbidden"
        async with mcp_client(server, await server.key("actions")) as client:
            names = {tool.name for tool in (await client.list_tools()).tools}
            assert "converse" not in names and "summarize" in names


CONSEQUENTIAL_YAML = (
    HAIKU
    + """\
  - name: orderPizza
    description: Order a pizza.
    parameters:
      type: object
      required: [topping]
      properties:
        topping: {type: string}
    prompt: "Order a pizza with {{ topping }}."
    consequential: true
"""
)
"""`haiku`, and `orderPizza`, whose author says each call must be confirmed."""


Hints = tuple[bool | None, bool | None, bool | None, bool | None]


def hints_of(a: Any) -> Hints:
    """Annotations' (readOnly, destructive, idempotent, openWorld) hints."""
    return (a.read_only_hint, a.destructive_hint, a.idempotent_hint, a.open_world_hint)


def hints(tool: Any) -> Hints:
    """A tool's hints, as the SDK's client read them."""
    assert tool.annotations is not None, tool.name
    return hints_of(tool.annotations)


async def test_tools_say_what_they_change(tmp_path: Path) -> None:
    """Every tool has MCP's annotations, with a title: without them a client must take each for
    destructive and open-world, a consequential action alike with `sentiment`."""
    path = tmp_path / "actions.yaml"
    path.write_text(CONSEQUENTIAL_YAML, encoding="utf-8")
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'test.db'}", api_key=ADMIN_KEY, actions_file=path
    )
    async with (
        served(settings, FakeBackend()) as server,
        mcp_client(server, ADMIN_KEY) as client,
    ):
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert all(tool.annotations and tool.annotations.title for tool in tools.values()), tools
    # The built-ins, and a prompt template of the actions file, only write text: read-only.
    for name in ("sentiment", "summarize", "generateCode", "haiku"):
        assert hints(tools[name]) == (True, False, True, False), name
    assert tools["generateCode"].annotations.title == "Generate code"  # type: ignore[union-attr]
    assert tools["generateCode"].title == "Generate code"
    # `converse` adds a turn to a conversation: additive, not idempotent, the server's own.
    assert hints(tools["converse"]) == (False, False, False, False)
    # A consequential action: destructive, as `x-openai-isConsequential: true` says for ChatGPT.
    assert hints(tools["orderPizza"]) == (False, True, False, True)
    assert tools["orderPizza"].annotations.title == "Order pizza"  # type: ignore[union-attr]
    assert tools["orderPizza"].description == (
        "Order a pizza. Consequential: confirm each call with the user before running it."
    )
    assert tools["haiku"].description == "Write a haiku about a topic."


def test_an_action_of_unknown_effects_is_not_said_to_be_read_only() -> None:
    """A handler registered in code, neither built in nor a prompt template: its effects are
    not known, so it is not read-only and may reach out; not destructive unless consequential."""
    from gptactions.api.mcp import action_annotations, tool_title
    from gptactions.services.actions import ActionDefinition, ActionOutcome

    async def handler(_ctx: Any, _params: dict[str, Any]) -> ActionOutcome:
        return ActionOutcome(True, "done")

    definition = ActionDefinition(
        "sendMail", "Send a mail.", {"type": "object"}, handler, builtin=False
    )
    assert hints_of(action_annotations(definition)) == (False, False, False, True)
    consequential = replace(definition, consequential=True)
    assert hints_of(action_annotations(consequential)) == (False, True, False, True)
    assert action_annotations(definition).title == "Send mail"
    names = ["explainCode", "write_haiku", "get-URL", "listURLs", "v2Draft"]
    titles = ["Explain code", "Write haiku", "Get URL", "List URLs", "V2 draft"]
    assert [tool_title(n) for n in names] == titles


async def test_an_action_called_with_an_oauth_token_is_the_users_own(
    api: ApiClient, fake: FakeBackend
) -> None:
    """Logged under the token's user, as the same call over REST is: it is in their export,
    and their erasure takes it; not under the GPT's client name."""
    from gptactions.api.mcp import _run_action

    fake.replies.append("positive")
    alice = Principal("oauth-client", "oauth:My GPT", "default", frozenset({"actions"}), "alice")
    result = await _run_action(api.runtime, alice, "sentiment", {"text": "good"})
    assert not result.is_error, result.content
    [entry] = (await api.get("/api/v1/gpt/logs")).json()
    assert (entry["kind"], entry["action"], entry["userId"]) == ("action", "sentiment", "alice")


async def test_get_and_delete_are_405_and_requests_log_no_session_line(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """GET opened an event stream that never sent anything, and every request logged the SDK's
    "Terminating session: None" at INFO: a stateless server has no stream and no session."""
    caplog.set_level(logging.INFO)
    async with (
        served(settings, FakeBackend()) as server,
        httpx.AsyncClient(base_url=server.url, timeout=10) as http,
    ):
        for method, key in [("GET", ADMIN_KEY), ("GET", None), ("DELETE", ADMIN_KEY)]:
            headers = {"Accept": "text/event-stream, application/json"}
            if key:
                headers["Authorization"] = f"Bearer {key}"
            response = await http.request(method, "/mcp", headers=headers)
            assert response.status_code == 405, (method, response.text)
            assert response.headers["allow"] == "POST"
            assert response.json()["error"]["code"] == "method_not_allowed"
        # As clients of the 2025 revisions talk (those of ChatGPT, Claude, Cursor): the
        # SDK's stateless path for them is the one that logged the line.
        headers = {
            "Authorization": f"Bearer {ADMIN_KEY}",
            "Accept": "application/json, text/event-stream",
        }
        initialize = initialize_message()
        response = await http.post("/mcp", json=initialize, headers=headers)
        assert response.status_code == 200, response.text
        listed = await http.post(
            "/mcp",
            json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
            headers={**headers, "MCP-Protocol-Version": "2025-06-18"},
        )
        assert "converse" in {tool["name"] for tool in listed.json()["result"]["tools"]}
    # The transport's own logger (its manager's says once that it started, and stopped).
    transport = [r for r in caplog.records if r.name == "mcp.server.streamable_http"]
    assert not [r.getMessage() for r in transport if r.levelno >= logging.INFO]


async def test_a_message_over_the_body_limit_is_413_in_the_apis_shape(api: ApiClient) -> None:
    """MCP's messages are bounded like every other body, and refused in the one error shape."""
    big = initialize_message("a client") | {"padding": "x" * (api.runtime.settings.max_body_bytes)}
    answer = await api.http.post(
        "/mcp",
        json=big,
        headers={
            "Authorization": f"Bearer {ADMIN_KEY}",
            "Accept": "application/json, text/event-stream",
        },
    )
    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "payload_too_large"


def test_the_app_is_built_without_the_mcp_sdk(tmp_path: Path) -> None:
    """Importing the SDK cost every start ~0.4 s: the app loads it on its first /mcp request."""
    probe = (
        "import sys\n"
        "from gptactions.app import create_app\n"
        "from gptactions.config import Settings\n"
        f"create_app(Settings(database_url='sqlite:///{tmp_path / 'app.db'}'))\n"
        "print(sorted(m for m in sys.modules if m == 'mcp' or m.startswith(('mcp.', 'mcp_types'))))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert loaded.stdout.strip() == "[]", loaded.stdout


async def test_requests_at_once_on_a_fresh_server_share_one_endpoint(settings: Settings) -> None:
    """The first requests of a server all wait for the one endpoint being built, then answer."""
    async with served(settings, FakeBackend()) as server:
        route = next(r for r in server.app.router.routes if getattr(r, "path", "") == "/mcp")
        mcp_route = route.endpoint  # type: ignore[attr-defined]
        assert isinstance(mcp_route, McpRoute)
        assert mcp_route._endpoint is None
        headers = {
            "Authorization": f"Bearer {ADMIN_KEY}",
            "Accept": "application/json, text/event-stream",
        }
        async with httpx.AsyncClient(base_url=server.url, headers=headers) as http:
            answers = await asyncio.gather(
                *(http.post("/mcp", json=initialize_message(f"c{i}")) for i in range(4))
            )
        assert [a.status_code for a in answers] == [200] * 4, [a.text for a in answers]
        assert all(a.json()["result"]["serverInfo"]["name"] for a in answers)
        endpoint = mcp_route._endpoint
        assert endpoint is not None and endpoint._manager is not None
    assert mcp_route._endpoint is None and endpoint._manager is None  # stopped with the app


async def test_an_endpoint_that_starts_as_the_app_stops_is_stopped(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The app's lifespan may end while a first request starts the session manager."""
    from gptactions.api import mcp as mcp_module

    route = McpRoute(Runtime(settings, router=BackendRouter([FakeBackend()])))
    stop = asyncio.Event()

    async def lifespan() -> None:
        async with route.running():
            await stop.wait()

    app_running = asyncio.create_task(lifespan())
    await asyncio.sleep(0)
    started = mcp_module.McpEndpoint.running

    @asynccontextmanager
    async def late(endpoint: mcp_module.McpEndpoint) -> AsyncIterator[None]:
        stop.set()
        await app_running  # the app has stopped before this manager runs
        async with started(endpoint):
            yield

    monkeypatch.setattr(mcp_module.McpEndpoint, "running", late)
    endpoint = await route._build()
    assert endpoint._manager is None  # stopped at once, as the app would have stopped it
    assert route._endpoint is None
