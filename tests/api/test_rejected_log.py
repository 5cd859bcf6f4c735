"""Requests refused before the model are in /logs (kind rejected) for their authenticated caller,
in its tenant only; unauthenticated ones stay out of the log and are counted in the metrics."""

from __future__ import annotations

import json
from typing import Any

from gptactions.config import Settings
from gptactions.llm.fake import FakeBackend
from gptactions.services.rejections import MAX_BODY_BYTES
from tests.api.test_me import token
from tests.api.test_oauth import PASSWORD
from tests.conftest import ADMIN_KEY, ApiClient, running_app

API = "/api/v1/gpt"


async def rejected(api: ApiClient, key: str = ADMIN_KEY) -> list[dict[str, Any]]:
    answer = await api.get(f"{API}/logs?kind=rejected", key=key)
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()
    assert all(item["kind"] == "rejected" for item in items)
    return items


async def test_each_refusal_before_the_model_is_logged_with_the_body_it_sent(
    settings: Settings,
) -> None:
    limited = settings.model_copy(update={"max_body_bytes": 64 * 1024})
    async with running_app(limited, FakeBackend()) as api:
        key = await api.key(tenant="acme", name="gpt")
        chat_only = await api.key(tenant="acme", scopes=("chat",), name="chat-only")
        invalid = await api.post(f"{API}/conversations", {"userId": "u", "mesage": "typo"}, key)
        assert invalid.status_code == 400
        missing = await api.post(
            f"{API}/respond",
            {"userId": "u", "message": "hi", "conversationId": "conv_" + "0" * 32},
            key,
        )
        assert missing.status_code == 404
        # A key sent in the URL (refused there) and a search are not stored with the request.
        forbidden = await api.get(
            f"{API}/logs", key=chat_only, params={"api_key": "gpta_in_the_url", "q": "my words"}
        )
        assert forbidden.status_code == 403
        not_json = await api.http.post(
            f"{API}/conversations",
            content=b"userId=u",
            headers={"Authorization": f"Bearer {key}", "Content-Type": "text/plain"},
        )
        assert not_json.status_code == 415
        big = {"userId": "u", "message": "x" * 70_000}
        too_large = await api.post(f"{API}/conversations", big, key)
        assert too_large.status_code == 413

        items = await rejected(api, key)
        by_status = {item["httpStatus"]: item for item in items}
        assert sorted(by_status) == [400, 403, 404, 413, 415]
        first = by_status[400]
        assert first["endpoint"] == "POST /api/v1/gpt/conversations"
        assert json.loads(first["message"]) == {"userId": "u", "mesage": "typo"}
        assert first["status"] == "rejected" and first["userId"] == "u"
        assert first["error"].startswith("invalid_request: ")
        assert '"code":"invalid_request"' in first["reply"].replace(" ", "")
        assert by_status[404]["error"].startswith("not_found: ")
        assert by_status[403]["endpoint"] == "GET /api/v1/gpt/logs?api_key=REDACTED&q=REDACTED"
        assert by_status[403]["userId"] == "chat-only"  # no userId sent: the key's name
        assert by_status[415]["message"] == "userId=u"
        # Refused from its Content-Length before the app read it: its start is kept all the same.
        kept, _, rest = by_status[413]["message"].partition("… [truncated: ")
        assert kept.startswith('{"userId"') and len(kept.encode()) == MAX_BODY_BYTES
        assert rest.endswith(" bytes omitted]")
        # The other operations' interactions are not among them, and they are among all.
        everything = (await api.get(f"{API}/logs", key=key)).json()
        assert {item["kind"] for item in everything} == {"rejected"}


async def test_rate_limited_requests_are_logged(settings: Settings) -> None:
    limited = settings.model_copy(update={"rate_limit": "2/hour"})
    async with running_app(limited, FakeBackend()) as api:
        key = await api.key(name="gpt")
        for _ in range(2):
            await api.post(f"{API}/conversations", {"userId": "u", "message": "hi"}, key)
        refused = await api.post(f"{API}/conversations", {"userId": "u", "message": "again"}, key)
        assert refused.status_code == 429
        (item,) = (await api.get(f"{API}/logs?kind=rejected", key=ADMIN_KEY)).json()
        assert item["httpStatus"] == 429 and '"again"' in item["message"]


async def test_rejections_are_seen_by_their_own_tenant_only(settings: Settings) -> None:
    async with running_app(settings, FakeBackend()) as api:
        acme = await api.key(tenant="acme")
        other = await api.key(tenant="other")
        await api.post(f"{API}/conversations", {"userId": "u", "message": ""}, acme)
        assert len(await rejected(api, acme)) == 1
        assert await rejected(api, other) == []
        assert len(await rejected(api, ADMIN_KEY)) == 1  # an admin key sees every tenant


async def test_an_oauth_users_rejection_is_theirs_whatever_userid_it_names(
    api: ApiClient,
) -> None:
    await api.runtime.users.create("alice", PASSWORD)
    await api.runtime.users.create("bob", PASSWORD)
    alice, bob = await token(api, "alice"), await token(api, "bob")
    refused = await api.post(f"{API}/conversations", {"userId": "bob", "message": "hi"}, alice)
    assert refused.status_code == 403
    (item,) = await rejected(api, alice)
    assert item["userId"] == "alice" and '"bob"' in item["message"]
    assert await rejected(api, bob) == []


async def test_unauthenticated_requests_are_counted_not_logged(api: ApiClient) -> None:
    body = {"userId": "u", "message": "hi"}
    assert (await api.post(f"{API}/conversations", body, key=None)).status_code == 401
    assert (await api.post(f"{API}/conversations", body, key="gpta_wrong")).status_code == 401
    big = {"userId": "u", "message": "x" * 2_000_000}
    assert (await api.post(f"{API}/conversations", big, key="gpta_wrong")).status_code == 413
    assert await rejected(api) == []
    metrics = (await api.get("/metrics")).text
    assert 'gptactions_unauthenticated_rejections_total{status="401"} 2.0' in metrics
    assert 'gptactions_unauthenticated_rejections_total{status="413"} 1.0' in metrics


async def test_a_long_body_is_kept_up_to_the_bound_with_a_marker(api: ApiClient) -> None:
    key = await api.key(name="gpt")
    refused = await api.post(f"{API}/conversations", {"message": "y" * 20_000}, key)
    assert refused.status_code == 400  # no userId
    (item,) = await rejected(api, key)
    kept, _, rest = item["message"].partition("… [truncated: ")
    assert kept.startswith('{"message"') and len(kept.encode()) == MAX_BODY_BYTES
    assert rest.endswith(" bytes omitted]")
    assert item["userId"] == "gpt"


async def test_a_refusal_naming_what_a_database_cannot_store_is_recorded(
    app_factory: Any, caplog: Any
) -> None:
    """A NUL in userId (or in the path) is a 400, and its rejection is still recorded, under the
    key's name: on PostgreSQL it was lost, with a traceback holding the body."""
    async with app_factory() as api:
        key = await api.key(name="gpt")
        refused = await api.post(f"{API}/conversations", {"userId": "a\x00", "message": "x"}, key)
        assert refused.status_code == 400
        lost = await api.get(f"{API}/logs%00", key)
        assert lost.status_code == 404
        items = await rejected(api, key)
        assert sorted(item["httpStatus"] for item in items) == [400, 404]
        assert {item["userId"] for item in items} == {"gpt"}
        assert "could not be recorded" not in caplog.text


async def test_a_refused_openai_compatible_request_is_logged(api: ApiClient) -> None:
    key = await api.key(name="sdk")
    refused = await api.post("/v1/chat/completions", {"messages": [], "user": "ann"}, key)
    assert refused.status_code == 400
    (item,) = await rejected(api, key)
    assert item["endpoint"] == "POST /v1/chat/completions" and item["userId"] == "ann"
    assert item["httpStatus"] == 400 and item["error"].startswith("invalid_request")
