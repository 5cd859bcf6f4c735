"""A user's own identity and data: /me, /me/export, /me/data, and the /privacy page."""

from __future__ import annotations

import logging

import pytest

from tests.api.test_oauth import PASSWORD, code_for, exchange, make_client
from tests.conftest import ADMIN_KEY, ApiClient


async def token(api: ApiClient, username: str) -> str:
    client = await make_client(api)
    answer = (await exchange(api, client, await code_for(api, client, username))).json()
    value: str = answer["access_token"]
    return value


@pytest.fixture
async def tokens(api: ApiClient) -> tuple[str, str]:
    await api.runtime.users.create("alice", PASSWORD)
    await api.runtime.users.create("bob", PASSWORD)
    return await token(api, "alice"), await token(api, "bob")


async def test_me_names_the_user_or_the_key(api: ApiClient, tokens: tuple[str, str]) -> None:
    alice, _ = tokens
    me = (await api.get("/api/v1/gpt/me", key=alice)).json()
    assert me["userId"] == "alice" and me["authentication"] == "oauth"
    assert me["scopes"] == ["chat", "logs"]
    admin = (await api.get("/api/v1/gpt/me", key=ADMIN_KEY)).json()
    assert admin["userId"] is None and admin["authentication"] == "apiKey"


async def test_export_and_erase_own_data_only(
    api: ApiClient, tokens: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    alice, bob = tokens
    await api.post("/api/v1/gpt/conversations", {"message": "alice secret"}, key=alice)
    await api.post("/api/v1/gpt/conversations", {"message": "bob secret"}, key=bob)

    exported = (await api.get("/api/v1/gpt/me/export", key=alice)).json()
    assert exported["userId"] == "alice"
    assert len(exported["conversations"]) == 1
    assert [i["message"] for i in exported["interactions"]] == ["alice secret"]
    posing = await api.get("/api/v1/gpt/me/export", key=alice, params={"userId": "bob"})
    assert posing.status_code == 403

    with caplog.at_level(logging.WARNING, logger="gptactions.services.personal"):
        erased = await api.http.delete(
            "/api/v1/gpt/me/data", headers={"Authorization": f"Bearer {alice}"}
        )
    assert erased.status_code == 200
    assert erased.json() == {
        "userId": "alice",
        "deletedConversations": 1,
        "deletedInteractions": 2,  # her message, and her refused export (kind rejected)
    }
    assert "erased the data of user 'alice'" in caplog.text
    assert "alice secret" not in caplog.text
    after = (await api.get("/api/v1/gpt/me/export", key=alice)).json()
    assert after["conversations"] == [] and after["interactions"] == []
    # Bob's data is untouched.
    assert len((await api.get("/api/v1/gpt/me/export", key=bob)).json()["interactions"]) == 1


async def test_an_api_key_names_the_user_and_needs_logs(api: ApiClient) -> None:
    await api.post("/api/v1/gpt/conversations", {"userId": "carol", "message": "hi"})
    missing = await api.get("/api/v1/gpt/me/export")
    assert missing.status_code == 400
    exported = await api.get("/api/v1/gpt/me/export", params={"userId": "carol"})
    assert len(exported.json()["interactions"]) == 1
    chat_key = await api.key(scopes=("chat",))
    refused = await api.get("/api/v1/gpt/me/export", key=chat_key, params={"userId": "carol"})
    assert refused.status_code == 403


async def test_the_privacy_page_comes_from_the_settings(api: ApiClient) -> None:
    page = await api.http.get("/privacy")
    assert page.status_code == 200
    assert "has not published a contact" in page.text
    assert "60 minutes" in page.text and "30 days" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "or the operator deletes it" in page.text
    api.runtime.settings.privacy_contact = "privacy@example.com"
    api.runtime.settings.log_retention = "30d"
    page = await api.http.get("/privacy")
    assert "privacy@example.com" in page.text
    assert "no longer than 30d after it was written" in page.text
