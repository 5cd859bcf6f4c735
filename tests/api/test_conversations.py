"""POST /conversations and /respond: storage, history, ownership, validation (fake backend)."""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.requests import Request

from gptactions.api.responses import ConversationResponse, Usage
from gptactions.api.sse import wants_event_stream
from gptactions.app import create_app
from gptactions.config import Settings
from gptactions.llm.base import BackendError, BackendUnavailable
from gptactions.llm.fake import FakeBackend
from tests.conftest import ApiClient

API = "/api/v1/gpt"


async def test_start_returns_the_seed_shape_and_stores_the_turn(
    api: ApiClient, fake: FakeBackend
) -> None:
    fake.replies.append("Hello there!")
    response = await api.post(f"{API}/conversations", {"userId": "alice", "message": "Hi"})
    assert response.status_code == 200
    body = response.json()
    assert body["reply"] == "Hello there!"
    assert body["conversationId"].startswith("conv_")
    logs = (await api.get(f"{API}/logs")).json()
    assert [(e["userId"], e["message"], e["reply"], e["conversationId"]) for e in logs] == [
        ("alice", "Hi", "Hello there!", body["conversationId"])
    ]


async def test_respond_continues_the_named_conversation_with_its_history(
    api: ApiClient, fake: FakeBackend
) -> None:
    first = (await api.post(f"{API}/conversations", {"userId": "alice", "message": "one"})).json()
    await api.post(f"{API}/conversations", {"userId": "alice", "message": "other"})
    second = await api.post(
        f"{API}/respond",
        {"userId": "alice", "message": "two", "conversationId": first["conversationId"]},
    )
    assert second.status_code == 200
    assert second.json()["conversationId"] == first["conversationId"]
    seen = [(m.role, m.content) for m in fake.requests[-1].messages]
    assert seen[1:] == [("user", "one"), ("assistant", "echo: one"), ("user", "two")]
    assert seen[0][0] == "system"


async def test_respond_without_id_continues_the_latest_conversation(
    api: ApiClient, fake: FakeBackend
) -> None:
    await api.post(f"{API}/conversations", {"userId": "bob", "message": "old"})
    latest = (await api.post(f"{API}/conversations", {"userId": "bob", "message": "new"})).json()
    reply = (await api.post(f"{API}/respond", {"userId": "bob", "message": "next"})).json()
    assert reply["conversationId"] == latest["conversationId"]
    assert [m.content for m in fake.requests[-1].messages[1:]] == ["new", "echo: new", "next"]


async def test_respond_without_any_conversation_starts_one(api: ApiClient) -> None:
    response = await api.post(f"{API}/respond", {"userId": "carol", "message": "hello"})
    assert response.status_code == 200
    logs = (await api.get(f"{API}/logs", params={"userId": "carol"})).json()
    assert logs[0]["conversationId"] == response.json()["conversationId"]


async def test_conversations_always_starts_a_new_one(api: ApiClient) -> None:
    a = (await api.post(f"{API}/conversations", {"userId": "u", "message": "a"})).json()
    b = (await api.post(f"{API}/conversations", {"userId": "u", "message": "b"})).json()
    assert a["conversationId"] != b["conversationId"]


@pytest.mark.parametrize("owner", ["other-user", "other-tenant", "unknown"])
async def test_respond_to_a_conversation_that_is_not_yours_is_404(
    api: ApiClient, owner: str
) -> None:
    started = (await api.post(f"{API}/conversations", {"userId": "alice", "message": "a"})).json()
    conversation_id, user, key = started["conversationId"], "alice", None
    if owner == "other-user":
        user = "mallory"
    elif owner == "other-tenant":
        key = await api.key(tenant="elsewhere")
    else:
        conversation_id = "conv_doesnotexist"
    body = {"userId": user, "message": "b", "conversationId": conversation_id}
    response = (
        await api.post(f"{API}/respond", body, key=key)
        if key
        else await api.post(f"{API}/respond", body)
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


async def test_oldest_turns_are_dropped_when_the_history_does_not_fit(settings: Any) -> None:
    from tests.conftest import running_app

    backend = FakeBackend(context_window=400)
    async with running_app(settings, backend) as api:
        body = {"userId": "u", "message": "first " + "word " * 60, "maxTokens": 100}
        started = (await api.post(f"{API}/conversations", body)).json()
        for index in range(6):
            turn = {
                **body,
                "message": f"turn{index} " + "word " * 60,
                "conversationId": started["conversationId"],
            }
            assert (await api.post(f"{API}/respond", turn)).status_code == 200
        last = backend.requests[-1]
        assert await backend.count_tokens(last.messages) <= 400 - 100
        contents = [m.content for m in last.messages]
        assert contents[-1].startswith("turn5")
        assert not any(c.startswith("first") for c in contents)  # the oldest went first
        assert any(c.startswith("turn4") for c in contents)  # the most recent turn stayed


async def test_a_message_that_cannot_fit_is_400(settings: Any) -> None:
    from tests.conftest import running_app

    async with running_app(settings, FakeBackend(context_window=300)) as api:
        response = await api.post(f"{API}/conversations", {"userId": "u", "message": "word " * 400})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "prompt_too_long"  # as an action's prompt
    assert response.json()["error"]["details"][0]["pointer"] == "/message"


async def test_without_max_tokens_a_long_message_gets_the_room_it_leaves(settings: Any) -> None:
    """The default maxTokens (256) was reserved whole: a message that fit the window, but left
    less than 256 tokens, was a 400 prompt_too_long, as /v1 refused such a prompt."""
    from tests.conftest import running_app

    backend = FakeBackend(context_window=400)
    async with running_app(settings, backend) as api:
        started = await api.post(f"{API}/conversations", {"userId": "u", "message": "hi"})
        assert started.status_code == 200 and backend.requests[-1].max_tokens == 256
        long = {
            "userId": "u",
            "message": "word " * 250,
            "conversationId": started.json()["conversationId"],
        }
        assert (await api.post(f"{API}/respond", long)).status_code == 200
        last = backend.requests[-1]
        prompt = await backend.count_tokens(last.messages)
        assert [m.content for m in last.messages[1:]] == [long["message"]]  # history dropped
        assert 0 < last.max_tokens == 400 - prompt < 256
        # A maxTokens the client gives is reserved whole, as before.
        asked = await api.post(f"{API}/respond", {**long, "maxTokens": 256})
        assert asked.status_code == 400 and asked.json()["error"]["code"] == "prompt_too_long"


async def test_max_tokens_and_temperature_reach_the_model(
    api: ApiClient, fake: FakeBackend
) -> None:
    body = {"userId": "u", "message": "m", "maxTokens": 17, "temperature": 0.5}
    assert (await api.post(f"{API}/conversations", body)).status_code == 200
    assert (fake.requests[-1].max_tokens, fake.requests[-1].temperature) == (17, 0.5)


async def test_a_backend_failure_is_a_502_and_a_failed_interaction(
    api: ApiClient, fake: FakeBackend
) -> None:
    fake.replies.append(BackendError("upstream said nonsense"))
    response = await api.post(f"{API}/conversations", {"userId": "u", "message": "m"})
    assert response.status_code == 502
    assert response.json()["error"]["message"] == "upstream said nonsense"
    entry = (await api.get(f"{API}/logs")).json()[0]
    assert (entry["status"], entry["error"], entry["reply"]) == (
        "error",
        "upstream said nonsense",
        "",
    )


async def test_a_saturated_backend_is_503_with_retry_after(
    api: ApiClient, fake: FakeBackend
) -> None:
    fake.replies.append(BackendUnavailable("busy", retry_after=7))
    response = await api.post(f"{API}/conversations", {"userId": "u", "message": "m"})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "7"


async def test_an_unexpected_error_is_500_without_a_traceback(
    api: ApiClient, fake: FakeBackend
) -> None:
    fake.replies.append(RuntimeError("secret internals /etc/passwd"))
    response = await api.post(f"{API}/conversations", {"userId": "u", "message": "m"})
    assert response.status_code == 500
    assert "secret" not in response.text and "Traceback" not in response.text
    assert response.json()["error"]["code"] == "internal_error"


async def test_an_empty_model_reply_is_never_a_200(api: ApiClient, fake: FakeBackend) -> None:
    fake.replies.append("   ")
    response = await api.post(f"{API}/conversations", {"userId": "u", "message": "m"})
    assert response.status_code == 502


async def test_an_unknown_model_is_400_listing_the_names(api: ApiClient) -> None:
    response = await api.post(
        f"{API}/conversations", {"userId": "u", "message": "m", "model": "gpt-9"}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    # Said as any other field's problem is: "Invalid input: " and the field's pointer.
    assert error["message"] == "Invalid input: model: must be one of: fake"
    assert error["details"] == [{"pointer": "/model", "message": "must be one of: fake"}]


def test_no_route_dependency_runs_in_the_thread_pool(settings: Settings) -> None:
    """FastAPI runs a plain `def` dependency in its thread pool: two thread hand-offs per request.

    Every dependency of every route is a coroutine (or an object with an `async __call__`).
    """
    app = create_app(settings)
    plain: set[str] = set()

    def walk(dependant: Dependant) -> None:
        for dependency in dependant.dependencies:
            call = dependency.call
            method = type(call).__call__ if not inspect.isfunction(call) else None
            if not (inspect.iscoroutinefunction(call) or inspect.iscoroutinefunction(method)):
                plain.add(getattr(call, "__qualname__", repr(call)))
            walk(dependency)

    def api_routes(routes: list[Any]) -> Iterator[APIRoute]:
        for route in routes:
            if isinstance(route, APIRoute):
                yield route
            included = getattr(route, "original_router", None)  # app.include_router's wrapper
            if included is not None:
                yield from api_routes(included.routes)

    routes = list(api_routes(app.routes))
    assert any(route.path.endswith("/conversations") for route in routes)
    for route in routes:
        walk(route.dependant)
    assert plain == set()


@pytest.mark.parametrize("cut", [None, ["reply"]])
def test_a_body_written_as_json_text_is_its_wire_data(cut: list[str] | None) -> None:
    """The JSON answer is written straight from the model; the size limit counts the same
    characters as for the wire data (`truncatedFields` only when some were)."""
    body = ConversationResponse(
        conversation_id="conv_1",
        reply='héllo\n"quoted" \u2028 ✓',
        model="m",
        usage=Usage(prompt_tokens=1, completion_tokens=2),
        latency_ms=3,
        finish_reason="stop",
        truncated=cut is not None,
        truncated_fields=cut,
    )
    written = body.wire_json()
    assert json.loads(written) == body.wire()
    assert len(written) == len(json.dumps(body.wire(), ensure_ascii=False, separators=(",", ":")))
    assert ("truncatedFields" in written) == (cut is not None)


@pytest.mark.parametrize(
    ("accept", "stream"),
    [
        ("text/event-stream", True),
        ("application/json, text/event-stream", True),  # a tie: the client named the stream
        ("text/event-stream;q=0.1, application/json", False),  # RFC 9110: JSON preferred
        ("text/event-stream;q=0.5, */*", False),
        ("text/event-stream, application/json;q=0.9", True),
        ("text/event-stream;q=0", False),
        ("TEXT/EVENT-STREAM; Q=0.8, application/*;q=0.5", True),
        ("application/json", False),
        ("*/*", False),
        ("", False),
    ],
)
def test_the_accept_headers_preference_decides_the_form(accept: str, stream: bool) -> None:
    request = Request({"type": "http", "headers": [(b"accept", accept.encode())]})
    assert wants_event_stream(request) is stream
