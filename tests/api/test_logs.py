"""GET /logs: the seed's array, extension fields, filters, paging by Link header, tenants."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from tests.conftest import ApiClient

API = "/api/v1/gpt"


async def _chat(api: ApiClient, user: str, message: str, key: str | None = None) -> str:
    body = {"userId": user, "message": message}
    response = await (
        api.post(f"{API}/conversations", body, key=key)
        if key
        else api.post(f"{API}/conversations", body)
    )
    assert response.status_code == 200
    return str(response.json()["conversationId"])


async def test_items_have_the_seed_fields_and_the_extensions(api: ApiClient) -> None:
    conversation = await _chat(api, "alice", "hello")
    [item] = (await api.get(f"{API}/logs")).json()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", item["timestamp"])
    assert (item["userId"], item["message"], item["reply"]) == ("alice", "hello", "echo: hello")
    assert item["conversationId"] == conversation
    assert (item["kind"], item["action"], item["status"]) == ("conversation", None, "ok")
    assert item["latencyMs"] >= 0 and item["promptTokens"] > 0 and item["completionTokens"] > 0


async def test_newest_first_with_filters(api: ApiClient) -> None:
    first = await _chat(api, "alice", "one")
    await _chat(api, "bob", "two")
    await _chat(api, "alice", "three")
    assert [i["message"] for i in (await api.get(f"{API}/logs")).json()] == ["three", "two", "one"]
    alice = (await api.get(f"{API}/logs", params={"userId": "alice"})).json()
    assert [i["message"] for i in alice] == ["three", "one"]
    by_conversation = (await api.get(f"{API}/logs", params={"conversationId": first})).json()
    assert [i["message"] for i in by_conversation] == ["one"]
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert (await api.get(f"{API}/logs", params={"since": future})).json() == []
    assert len((await api.get(f"{API}/logs", params={"until": future})).json()) == 3


async def test_since_equal_to_until_is_an_empty_range_and_after_it_a_400(api: ApiClient) -> None:
    await _chat(api, "alice", "one")
    stamp = (await api.get(f"{API}/logs")).json()[0]["timestamp"]
    empty = await api.get(f"{API}/logs", params={"since": stamp, "until": stamp})
    assert empty.status_code == 200 and empty.json() == []  # since is in, until is not
    backwards = await api.get(
        f"{API}/logs", params={"since": stamp, "until": "2000-01-01T00:00:00Z"}
    )
    assert backwards.status_code == 400
    assert backwards.json()["error"]["details"] == [
        {"pointer": "/since", "message": "must not be after until"}
    ]


async def test_paging_follows_the_link_header_to_the_end(api: ApiClient) -> None:
    for index in range(7):
        await _chat(api, "u", f"m{index}")
    seen: list[str] = []
    url: str | None = f"{API}/logs?limit=3&userId=u"
    pages = 0
    while url:
        response = await api.get(url)
        seen += [i["message"] for i in response.json()]
        pages += 1
        match = re.match(r'<([^>]+)>; rel="next"', response.headers.get("link", ""))
        url = match.group(1) if match else None
        if url:
            assert "userId=u" in url and "limit=3" in url
    assert pages == 3
    assert seen == [f"m{i}" for i in reversed(range(7))]


async def test_a_key_sees_only_its_tenant_and_an_admin_sees_all(api: ApiClient) -> None:
    red, blue = await api.key(tenant="red"), await api.key(tenant="blue")
    await _chat(api, "r", "red secret", key=red)
    await _chat(api, "b", "blue secret", key=blue)
    assert [i["message"] for i in (await api.get(f"{API}/logs", key=red)).json()] == ["red secret"]
    assert [i["message"] for i in (await api.get(f"{API}/logs", key=blue)).json()] == [
        "blue secret"
    ]
    everything = (await api.get(f"{API}/logs")).json()
    assert {i["message"] for i in everything} == {"red secret", "blue secret"}


async def test_the_limit_bound_follows_the_setting(settings, fake) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import running_app

    async with running_app(settings.model_copy(update={"logs_max_limit": 5}), fake) as api:
        assert (await api.get(f"{API}/logs?limit=5")).status_code == 200
        too_many = await api.get(f"{API}/logs?limit=6")
        document = (await api.http.get("/openapi.json")).json()
    assert too_many.status_code == 400
    assert too_many.json()["error"]["details"][0]["pointer"] == "/limit"
    limit = next(
        p for p in document["paths"][f"{API}/logs"]["get"]["parameters"] if p["name"] == "limit"
    )
    assert limit["schema"]["maximum"] == 5
