"""A user's own identity and data: /me, /me/export, /me/data, and the /privacy page."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from gptactions.config import Settings
from gptactions.llm.fake import FakeBackend
from tests.api.test_oauth import PASSWORD, code_for, exchange, make_client
from tests.conftest import ADMIN_KEY, ApiClient, running_app


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


async def export_pages(api: ApiClient, user: str, key: str | None = None) -> list[dict[str, Any]]:
    """Every page of a user's export, following the Link header; each checked to fit the limit."""
    limit = api.runtime.settings.max_response_chars
    pages: list[dict[str, Any]] = []
    url: str | None = f"/api/v1/gpt/me/export?userId={user}"
    while url:
        answer = await api.get(url, key=key) if key else await api.get(url)
        assert answer.status_code == 200, answer.text
        assert len(answer.text) <= limit
        pages.append(answer.json())
        link = answer.headers.get("link")
        url = link.split(";")[0].strip("<>") if link else None
        assert len(pages) < 200
    return pages


async def test_a_large_export_comes_in_pages_within_the_limit(
    settings: Settings, fake: FakeBackend, database_url: str
) -> None:
    tight = settings.model_copy(
        update={
            "database_url": database_url,  # both databases: the pages seek row values
            "max_response_chars": 4_000,
            "max_message_length": 9_000,
        }
    )
    async with running_app(tight, fake) as api:
        conversations = set()
        for n in range(25):
            answer = await api.post(
                "/api/v1/gpt/conversations", {"userId": "u", "message": f"{n:03d} " + "m" * 300}
            )
            assert answer.status_code == 200, answer.text
            conversations.add(answer.json()["conversationId"])
        # One row longer than a page: shortened with a marker, never dropped.
        long = await api.post("/api/v1/gpt/conversations", {"userId": "u", "message": "L" * 8_000})
        conversations.add(long.json()["conversationId"])
        await api.post("/api/v1/gpt/conversations", {"userId": "other", "message": "not u's"})

        pages = await export_pages(api, "u")
        assert len(pages) > 3
        exported = [c["conversationId"] for page in pages for c in page["conversations"]]
        interactions = [i for page in pages for i in page["interactions"]]
        assert sorted(exported) == sorted(conversations)  # each once, none of another user's
        ids = [i["id"] for i in interactions]
        assert len(ids) == len(set(ids)) == 26
        assert {i["userId"] for i in interactions} == {"u"}
        messages = {i["message"][:3] for i in interactions if i["message"][0] != "L"}
        assert messages == {f"{n:03d}" for n in range(25)}
        (shortened,) = [i for i in interactions if i["message"][0] == "L"]
        assert "message" in shortened["truncatedFields"] and "[truncated:" in shortened["message"]

        garbled = await api.get("/api/v1/gpt/me/export", params={"userId": "u", "cursor": "x!"})
        assert garbled.status_code == 400
        assert garbled.json()["error"]["details"][0]["pointer"] == "/cursor"
        assert garbled.json()["error"]["message"] == (
            "Invalid input: query parameter cursor: not a cursor returned by this server"
        )


async def test_each_page_of_an_export_is_the_tokens_own_user(
    api: ApiClient, tokens: tuple[str, str]
) -> None:
    alice, bob = tokens
    await api.post("/api/v1/gpt/conversations", {"message": "alice secret"}, key=alice)
    await api.post("/api/v1/gpt/conversations", {"message": "bob secret"}, key=bob)
    whole = await api.get("/api/v1/gpt/me/export", key=alice)
    assert "link" not in whole.headers
    api.runtime.settings.max_response_chars = len(whole.text) - 1  # now two pages
    pages = await export_pages(api, "alice", key=alice)
    assert len(pages) >= 2 and {p["userId"] for p in pages} == {"alice"}
    assert [i["message"] for p in pages for i in p["interactions"]] == ["alice secret"]
    # Bob following a cursor of Alice's pages still reads Bob's data only.
    first = await api.get("/api/v1/gpt/me/export", key=alice)
    cursor = first.headers["link"].split("cursor=")[1].split(">")[0]
    hers = await api.get(f"/api/v1/gpt/me/export?cursor={cursor}", key=bob)
    assert hers.status_code == 200 and "alice" not in hers.text


async def test_a_deleted_users_data_goes_with_them_not_to_their_namesake(
    api: ApiClient, tokens: tuple[str, str]
) -> None:
    alice, bob = tokens
    said = await api.post("/api/v1/gpt/conversations", {"message": "My secret is 4242"}, key=alice)
    assert said.status_code == 200
    assert (
        await api.post("/api/v1/gpt/conversations", {"message": "hi"}, key=bob)
    ).status_code == 200
    deleted = await api.runtime.users.delete("alice")
    assert deleted is not None and (deleted.conversations, deleted.interactions) == (1, 1)
    await api.runtime.users.create("alice", PASSWORD)
    again = await token(api, "alice")
    assert (await api.get("/api/v1/gpt/logs", key=again)).json() == []
    answer = await api.post("/api/v1/gpt/respond", {"message": "What is my secret?"}, key=again)
    assert answer.json()["conversationId"] != said.json()["conversationId"]
    assert len((await api.get("/api/v1/gpt/logs", key=bob)).json()) == 1  # bob keeps his


async def test_a_missing_scope_names_the_token_not_a_key(
    api: ApiClient, tokens: tuple[str, str]
) -> None:
    alice, _ = tokens  # chat and logs, not actions
    body = {"action": "summarize", "parameters": {"text": "t"}}
    refused = await api.post("/api/v1/gpt/actions", body, key=alice)
    assert refused.status_code == 403
    assert refused.json()["error"]["message"] == "this access token lacks the 'actions' scope"


async def test_a_user_id_is_bounded_by_the_setting_as_in_a_body(
    settings: Settings, fake: FakeBackend
) -> None:
    """`?userId=` of /me/export and /me/data has the bound of a body's userId
    (GPTACTIONS_MAX_USER_ID_LENGTH), and the document says so."""
    async with running_app(settings.model_copy(update={"max_user_id_length": 12}), fake) as api:
        document = (await api.http.get("/openapi.json")).json()
        for path, method in (("/api/v1/gpt/me/export", "get"), ("/api/v1/gpt/me/data", "delete")):
            (user_id,) = [
                p for p in document["paths"][path][method]["parameters"] if p["name"] == "userId"
            ]
            assert user_id["schema"]["maxLength"] == 12, path
            for value, status in (("u" * 12, 200), ("u" * 13, 400)):
                answer = await api.http.request(
                    method.upper(),
                    path,
                    params={"userId": value},
                    headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                )
                assert answer.status_code == status, (path, value, answer.text)
            assert answer.json()["error"]["details"] == [
                {
                    "pointer": "/userId",
                    "message": "query parameter userId: must be at most 12 characters",
                }
            ]
        body = document["components"]["schemas"]["ConversationRequest"]["properties"]["userId"]
        assert body["maxLength"] == 12
