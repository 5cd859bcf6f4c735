"""POST /conversations and /respond as Server-Sent Events, and upstream failures through the API."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import uvicorn

from gptactions.app import create_app
from gptactions.config import Settings
from gptactions.llm.base import BackendError, BackendUnavailable, Chunk, GenerationRequest
from gptactions.llm.fake import FakeBackend
from gptactions.llm.openai import OpenAIBackend
from gptactions.llm.router import BackendRouter
from gptactions.runtime import Runtime
from tests.conftest import ADMIN_KEY, ApiClient

from .conftest import free_port
from .faulty import REPLY, FaultyUpstream

API = "/api/v1/gpt"
SSE = {"Accept": "text/event-stream"}


def events(text: str) -> list[tuple[str, dict[str, Any]]]:
    """The (event, data) pairs of a Server-Sent Events body."""
    parsed = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        parsed.append((fields["event"], json.loads(fields["data"])))
    return parsed


class StopsMidway(FakeBackend):
    """Streams two pieces, then fails."""

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        self.requests.append(request)
        yield Chunk(text="Half")
        yield Chunk(text=" a reply")
        raise BackendError("the upstream stopped midway")


@asynccontextmanager
async def app_with(settings: Settings, router: BackendRouter) -> AsyncIterator[ApiClient]:
    """The app over the given router, with an in-process client."""
    runtime = Runtime(settings, router=router)
    app = create_app(runtime=runtime)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield ApiClient(client, runtime)


async def latest_log(api: ApiClient) -> dict[str, Any]:
    entries: list[dict[str, Any]] = (await api.get(f"{API}/logs")).json()
    return entries[0]


async def test_a_reply_streams_as_token_events_then_done(api: ApiClient, fake: FakeBackend) -> None:
    fake.replies.append("Hello there, streaming world")
    response = await api.post(f"{API}/conversations", {"userId": "u", "message": "hi"}, headers=SSE)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    received = events(response.text)
    kinds = [kind for kind, _ in received]
    assert kinds == ["token"] * 4 + ["done"]
    tokens = "".join(data["text"] for kind, data in received if kind == "token")
    done = received[-1][1]
    assert tokens == done["reply"] == "Hello there, streaming world"
    assert done["conversationId"].startswith("conv_") and done["model"] == "fake-model"
    assert done["usage"]["completionTokens"] == 4 and done["usage"]["promptTokens"] > 0
    entry = await latest_log(api)
    assert (entry["status"], entry["reply"]) == ("ok", tokens)
    assert entry["conversationId"] == done["conversationId"]


async def test_respond_streams_and_continues_the_conversation(
    api: ApiClient, fake: FakeBackend
) -> None:
    started = await api.post(f"{API}/conversations", {"userId": "u", "message": "one"})
    conversation_id = started.json()["conversationId"]
    body = {"userId": "u", "message": "two", "conversationId": conversation_id}
    response = await api.post(f"{API}/respond", body, headers=SSE)
    kind, done = events(response.text)[-1]
    assert kind == "done" and done["conversationId"] == conversation_id
    assert done["reply"] == "echo: two"
    assert [m.content for m in fake.requests[-1].messages[1:]] == ["one", "echo: one", "two"]


async def test_without_the_accept_header_the_answer_is_json(api: ApiClient) -> None:
    response = await api.post(f"{API}/conversations", {"userId": "u", "message": "hi"})
    assert response.headers["content-type"] == "application/json"
    assert response.json()["reply"] == "echo: hi"
    refused = {"Accept": "text/event-stream;q=0, application/json"}
    response = await api.post(
        f"{API}/conversations", {"userId": "u", "message": "hi"}, headers=refused
    )
    assert response.headers["content-type"] == "application/json"


async def test_failure_before_any_output_is_a_plain_error(
    api: ApiClient, fake: FakeBackend
) -> None:
    fake.replies.append(BackendUnavailable("every backend is busy", retry_after=7))
    response = await api.post(f"{API}/conversations", {"userId": "u", "message": "hi"}, headers=SSE)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "7"
    assert response.json()["error"]["code"] == "backend_unavailable"
    entry = await latest_log(api)
    assert entry["status"] == "error" and "busy" in entry["error"]


async def test_failure_midway_is_an_error_event_and_a_failed_interaction(
    settings: Settings,
) -> None:
    async with app_with(settings, BackendRouter([StopsMidway(name="up")])) as api:
        response = await api.post(f"{API}/respond", {"userId": "u", "message": "hi"}, headers=SSE)
        assert response.status_code == 200
        received = events(response.text)
        assert [kind for kind, _ in received] == ["token", "token", "error"]
        error = received[-1][1]["error"]
        assert error["code"] == "bad_gateway" and "midway" in error["message"]
        entry = await latest_log(api)
    assert entry["status"] == "error" and "midway" in entry["error"]
    assert entry["reply"] == "Half a reply"


async def test_unknown_model_is_a_400_listing_the_names(api: ApiClient) -> None:
    for headers in ({}, SSE):
        response = await api.post(
            f"{API}/conversations",
            {"userId": "u", "message": "hi", "model": "gpt-9"},
            headers=headers,
        )
        assert response.status_code == 400
        assert "fake" in response.json()["error"]["message"]


async def test_fallback_before_the_first_piece_is_invisible_but_logged(
    settings: Settings,
) -> None:
    down = FakeBackend([BackendUnavailable("down")], name="upstream", model="big-model")
    local = FakeBackend(["from the fallback"], name="local", model="small-model")
    router = BackendRouter([down, local], fallbacks=["local"])
    async with app_with(settings, router) as api:
        response = await api.post(
            f"{API}/conversations", {"userId": "u", "message": "hi"}, headers=SSE
        )
        done = events(response.text)[-1][1]
        entry = await latest_log(api)
    assert done["reply"] == "from the fallback" and done["model"] == "small-model"
    assert entry["model"] == "small-model" and entry["status"] == "ok"


@pytest.mark.model
async def test_the_embedded_model_streams(model_api: ApiClient) -> None:
    response = await model_api.post(
        f"{API}/conversations",
        {"userId": "u", "message": "Name three colours.", "maxTokens": 24},
        headers=SSE,
    )
    received = events(response.text)
    tokens = [data["text"] for kind, data in received if kind == "token"]
    kind, done = received[-1]
    assert kind == "done" and len(tokens) > 3
    assert "".join(tokens).strip() == done["reply"]
    assert 0 < done["usage"]["completionTokens"] <= 24
    entry = await latest_log(model_api)
    assert entry["status"] == "ok" and entry["reply"] == done["reply"]


# Against real upstreams, through a real HTTP server where disconnects matter


@asynccontextmanager
async def served(settings: Settings, router: BackendRouter) -> AsyncIterator[httpx.AsyncClient]:
    """The app served by uvicorn on 127.0.0.1 in this test's event loop, and a client of it."""
    runtime = Runtime(settings, router=router)
    port = free_port()
    config = uvicorn.Config(
        create_app(runtime=runtime), host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.02)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            yield client
    finally:
        server.should_exit = True
        await task


@pytest.mark.upstream
async def test_a_client_that_leaves_cancels_the_upstream_and_is_stored_as_cancelled(
    settings: Settings, faulty: FaultyUpstream
) -> None:
    upstream = OpenAIBackend(name="upstream", base_url=faulty.url("drip-0.3"), model="m")
    async with served(settings, BackendRouter([upstream])) as client:
        async with client.stream(
            "POST",
            f"{API}/conversations",
            json={"userId": "u", "message": "hi"},
            headers={**SSE, "Authorization": f"Bearer {ADMIN_KEY}"},
        ) as response:
            assert response.status_code == 200
            lines = response.aiter_lines()
            assert await anext(lines) == "event: token"
            assert json.loads((await anext(lines)).removeprefix("data: ")) == {"text": "Hello"}
        # Leaving the block closed the connection with the reply unfinished.
        assert await asyncio.to_thread(faulty.wait_for_disconnects, 1)
        entry: dict[str, Any] = {}
        for _ in range(100):
            logs = await client.get(f"{API}/logs", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
            if logs.json():
                entry = logs.json()[0]
                break
            await asyncio.sleep(0.05)
    assert entry["status"] == "cancelled"
    assert REPLY.startswith(entry["reply"]) and entry["reply"].startswith("Hello")
    assert "disconnected" in entry["error"]


@pytest.mark.upstream
@pytest.mark.parametrize("accept", ["application/json", "text/event-stream"])
async def test_a_client_that_leaves_before_the_first_piece_cancels_the_upstream(
    settings: Settings, faulty: FaultyUpstream, accept: str
) -> None:
    upstream = OpenAIBackend(name="upstream", base_url=faulty.url("hang-30"), model="m")
    async with served(settings, BackendRouter([upstream])) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post(
                f"{API}/conversations",
                json={"userId": "u", "message": "hi"},
                headers={"Accept": accept, "Authorization": f"Bearer {ADMIN_KEY}"},
                timeout=0.5,
            )
        assert await asyncio.to_thread(faulty.wait_for_disconnects, 1)
        entry: dict[str, Any] = {}
        for _ in range(100):
            logs = (
                await client.get(f"{API}/logs", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
            ).json()
            if logs:
                entry = logs[0]
                break
            await asyncio.sleep(0.05)
    assert entry["status"] == "cancelled" and entry["reply"] == ""


@pytest.mark.upstream
async def test_a_streamed_reply_arrives_piece_by_piece(
    settings: Settings, faulty: FaultyUpstream
) -> None:
    upstream = OpenAIBackend(name="upstream", base_url=faulty.url("drip-0.2"), model="m")
    arrivals: list[float] = []
    async with (
        served(settings, BackendRouter([upstream])) as client,
        client.stream(
            "POST",
            f"{API}/respond",
            json={"userId": "u", "message": "hi"},
            headers={**SSE, "Authorization": f"Bearer {ADMIN_KEY}"},
        ) as response,
    ):
        body = ""
        async for text in response.aiter_text():
            arrivals.append(asyncio.get_running_loop().time())
            body += text
    received = events(body)
    assert received[-1][0] == "done" and received[-1][1]["reply"] == REPLY
    # Pieces came over time, not in one buffer at the end.
    assert len(arrivals) >= 3 and arrivals[-1] - arrivals[0] >= 0.4


@pytest.mark.upstream
@pytest.mark.parametrize(
    ("mode", "status", "code"),
    [
        ("500", 502, "bad_gateway"),
        ("malformed", 502, "bad_gateway"),
        ("429-3", 503, "backend_unavailable"),
        ("reset", 502, "bad_gateway"),
        ("slow-3", 504, "backend_timeout"),
    ],
)
async def test_upstream_failures_map_to_502_503_504_and_are_logged(
    settings: Settings, faulty: FaultyUpstream, mode: str, status: int, code: str
) -> None:
    upstream = OpenAIBackend(
        name="upstream",
        base_url=faulty.url(mode),
        model="m",
        api_key="sk-api-SECRET-777",
        max_retries=1,
        backoff_max=0.01,
        total_timeout=1.0,
    )
    async with app_with(settings, BackendRouter([upstream])) as api:
        for headers in ({}, SSE):
            response = await api.post(
                f"{API}/conversations", {"userId": "u", "message": "hi"}, headers=headers
            )
            assert response.status_code == status, response.text
            assert response.json()["error"]["code"] == code
            if status == 503:
                assert int(response.headers["retry-after"]) >= 1
        entry = await latest_log(api)
        state = (await api.get(f"{API}/status")).json()
    assert entry["status"] == "error" and entry["error"]
    assert state["backends"][0]["lastError"]
    assert "sk-api-SECRET-777" not in json.dumps(state) + response.text + json.dumps(entry)


async def test_the_served_document_describes_the_event_stream(api: ApiClient) -> None:
    from openapi_spec_validator import validate

    document = (await api.http.get("/openapi.json")).json()
    validate(document)
    for path in ("conversations", "respond"):
        operation = document["paths"][f"{API}/{path}"]["post"]
        content = operation["responses"]["200"]["content"]
        assert set(content) == {"application/json", "text/event-stream"}
        assert "`done`" in content["text/event-stream"]["schema"]["description"]
        assert "text/event-stream" in operation["description"]
