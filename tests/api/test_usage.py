"""GET /api/v1/gpt/usage: requests and tokens per key and per user, tenant-isolated."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from gptactions.api.responses import UsageResponse
from tests.api.test_me import token
from tests.api.test_oauth import PASSWORD
from tests.conftest import ADMIN_KEY, ApiClient

API = "/api/v1/gpt"


def report(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    UsageResponse.model_validate(body)  # the shape the document describes
    return body


async def converse(api: ApiClient, key: str, user: str, times: int = 1) -> int:
    """`times` turns of `user` with `key`; the tokens they used."""
    used = 0
    for _ in range(times):
        answer = await api.post(f"{API}/conversations", {"userId": user, "message": "Hi"}, key)
        assert answer.status_code == 200, answer.text
        used += answer.json()["usage"]["promptTokens"] + answer.json()["usage"]["completionTokens"]
    return used


async def test_each_tenant_sees_only_its_own_usage(api: ApiClient) -> None:
    acme = await api.runtime.keys.create("acme-gpt", tenant="acme")
    other = await api.runtime.keys.create("other-gpt", tenant="other")
    acme_tokens = await converse(api, acme.secret, "ada", times=2)
    acme_tokens += await converse(api, acme.secret, "bea")
    other_tokens = await converse(api, other.secret, "ada")

    seen = report(await api.get(f"{API}/usage", acme.secret))

    assert seen["total"]["requests"] == 3
    assert seen["total"]["totalTokens"] == acme_tokens
    assert [(k["keyId"], k["name"], k["requests"]) for k in seen["keys"]] == [
        (acme.info.id, "acme-gpt", 3)
    ]
    assert {(u["tenant"], u["userId"], u["requests"]) for u in seen["users"]} == {
        ("acme", "ada", 2),
        ("acme", "bea", 1),
    }
    assert seen["users"][0]["userId"] == "ada"  # the most tokens first
    assert seen["truncated"] is False

    everyone = report(await api.get(f"{API}/usage", ADMIN_KEY))
    assert everyone["total"]["totalTokens"] == acme_tokens + other_tokens
    assert {(u["tenant"], u["userId"]) for u in everyone["users"]} == {
        ("acme", "ada"),
        ("acme", "bea"),
        ("other", "ada"),
    }
    theirs = report(await api.get(f"{API}/usage", other.secret))
    assert [k["name"] for k in theirs["keys"]] == ["other-gpt"]


async def test_requests_refused_before_the_model_count_as_rejected(api: ApiClient) -> None:
    key = await api.key()
    used = await converse(api, key, "ada")
    refused = await api.post(f"{API}/conversations", {"userId": "ada", "message": ""}, key)
    assert refused.status_code == 400

    seen = report(await api.get(f"{API}/usage", key))

    ada = seen["users"][0]
    assert (ada["userId"], ada["requests"], ada["rejected"]) == ("ada", 2, 1)
    assert ada["totalTokens"] == used
    assert (seen["total"]["requests"], seen["total"]["rejected"]) == (2, 1)


async def test_an_oauth_token_sees_only_its_own_user(api: ApiClient) -> None:
    await api.runtime.users.create("alice", PASSWORD)
    await api.runtime.users.create("bob", PASSWORD)
    alice, bob = await token(api, "alice"), await token(api, "bob")
    await api.post(f"{API}/conversations", {"message": "Hi"}, alice)
    await api.post(f"{API}/conversations", {"message": "Hi"}, bob)
    await api.post(f"{API}/conversations", {"message": "Hi"}, bob)

    seen = report(await api.get(f"{API}/usage", alice))
    asked = await api.get(f"{API}/usage", alice, params={"userId": "bob"})

    assert [(u["userId"], u["requests"]) for u in seen["users"]] == [("alice", 1)]
    assert seen["total"]["requests"] == 1
    assert [k["name"].startswith("oauth:") for k in seen["keys"]] == [True]
    assert asked.status_code == 403


async def test_the_window_and_the_limit(api: ApiClient) -> None:
    key = await api.key()
    await converse(api, key, "ada")
    await converse(api, key, "bea")
    now = datetime.now(UTC)

    default = report(await api.get(f"{API}/usage", key))
    since = datetime.fromisoformat(default["since"].replace("Z", "+00:00"))
    until = datetime.fromisoformat(default["until"].replace("Z", "+00:00"))
    assert until - since == timedelta(hours=24) and abs(until - now) < timedelta(minutes=5)

    past = {"until": (now - timedelta(hours=1)).isoformat(), "window": "1h"}
    assert report(await api.get(f"{API}/usage", key, params=past))["total"]["requests"] == 0
    around = {"since": (now - timedelta(minutes=5)).isoformat()}
    assert report(await api.get(f"{API}/usage", key, params=around))["total"]["requests"] == 2

    # RFC 3339 wants four-digit years, before the year 1000 too.
    ancient = {"until": "0171-04-23T06:29:21Z", "window": "1h"}
    window = report(await api.get(f"{API}/usage", key, params=ancient))
    assert (window["since"], window["until"]) == (
        "0171-04-23T05:29:21.000Z",
        "0171-04-23T06:29:21.000Z",
    )

    one = report(await api.get(f"{API}/usage", key, params={"limit": 1, "window": "7d"}))
    assert len(one["users"]) == 1 and one["truncated"] is True
    only = report(await api.get(f"{API}/usage", key, params={"userId": "bea"}))
    assert [u["userId"] for u in only["users"]] == ["bea"]


@pytest.mark.parametrize(
    ("params", "pointer"),
    [
        ({"window": "a day"}, "/window"),
        ({"window": "0h"}, "/window"),
        ({"window": "24h", "since": "2026-01-01T00:00:00Z"}, "/window"),
        ({"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "/since"),
        ({"since": "yesterday"}, "/since"),
        ({"until": "9999-12-31T23:00:00-05:00"}, "/until"),
        ({"until": "0001-01-01T01:00:00Z", "window": "2h"}, "/window"),
        ({"limit": "0"}, "/limit"),
        ({"limit": "100000"}, "/limit"),
        ({"limit": "1_0"}, "/limit"),
        ({"window": "9" * 17}, "/window"),
    ],
)
async def test_bad_parameters_are_400s_in_the_error_shape(
    api: ApiClient, params: dict[str, str], pointer: str
) -> None:
    answer = await api.get(f"{API}/usage", params=params)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["code"] == "invalid_request"
    first = error["details"][0]
    assert first["pointer"] == pointer
    # The message says the first problem, naming the parameter once.
    named = first["message"].startswith("query parameter ")
    where = "" if named else pointer[1:] + ": "
    assert error["message"] == f"Invalid input: {where}{first['message']}"


async def test_usage_needs_the_logs_scope(api: ApiClient) -> None:
    chat_only = await api.key(scopes=("chat",))
    assert (await api.get(f"{API}/usage", chat_only)).status_code == 403
    assert (await api.get(f"{API}/usage", None)).status_code == 401


async def test_the_document_describes_usage_with_an_example(api: ApiClient) -> None:
    document = (await api.get("/openapi.json", None)).json()
    operation = document["paths"][f"{API}/usage"]["get"]
    assert operation["operationId"] == "getUsage"
    assert {p["name"] for p in operation["parameters"]} == {
        "since",
        "until",
        "window",
        "userId",
        "limit",
    }
    content = operation["responses"]["200"]["content"]["application/json"]
    assert content["schema"] == {"$ref": "#/components/schemas/UsageResponse"}
    UsageResponse.model_validate(content["example"])
    assert set(document["components"]["schemas"]["UsageResponse"]["required"]) >= {
        "since",
        "until",
        "total",
        "keys",
        "users",
    }
    assert "429" in operation["responses"] and "400" in operation["responses"]
    assert operation["x-openai-isConsequential"] is False
    # A GPT's document without the logs scope leaves usage out, as it does /logs.
    gpt = (await api.get("/openapi.json?scopes=chat,actions", None)).json()
    reader = (await api.get("/openapi.json?scopes=logs", None)).json()
    assert f"{API}/usage" not in gpt["paths"] and f"{API}/usage" in reader["paths"]


async def test_many_users_with_long_names_stay_within_the_size_limit(api: ApiClient) -> None:
    key = await api.key()
    for n in range(24):
        await converse(api, key, f"{n:02d}" + "u" * 250, times=1 + n % 3)
    whole = report(await api.get(f"{API}/usage", key))
    assert len(whole["users"]) == 24 and whole["truncated"] is False
    api.runtime.settings.max_response_chars = 4_000
    answer = await api.get(f"{API}/usage", key)
    capped = report(answer)
    assert len(answer.text) <= 4_000
    assert capped["truncated"] is True and 0 < len(capped["users"]) < 24
    # The users kept are those with the most tokens, as in the whole report; totals unchanged.
    assert capped["users"] == whole["users"][: len(capped["users"])]
    assert capped["total"] == whole["total"] and capped["keys"] == whole["keys"]
