"""The OAuth authorization server in-process: the grant, every bad parameter, per-user data."""

from __future__ import annotations

import asyncio
import base64
import logging
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import delete, update

from gptactions.config import Settings
from gptactions.llm.fake import FakeBackend
from gptactions.services.oauth import pkce_challenge
from gptactions.store.models import OAuthCode, OAuthToken, utcnow
from tests.conftest import ApiClient, running_app
from tests.protocols.conftest import initialize_message

CALLBACK = "https://chat.openai.com/aip/g-0123456789abcdef/oauth/callback"
PASSWORD = "correct horse battery"


@dataclass
class Client:
    id: str
    secret: str


async def make_client(
    api: ApiClient, *, scopes: tuple[str, ...] = ("chat", "actions", "logs")
) -> Client:
    new = await api.runtime.oauth.create_client("My GPT", (CALLBACK,), scopes=scopes)
    assert new.secret
    return Client(new.info.id, new.secret)


def authorize_params(client: Client, **overrides: str | None) -> dict[str, str]:
    params: dict[str, str | None] = {
        "response_type": "code",
        "client_id": client.id,
        "redirect_uri": CALLBACK,
        "scope": "chat logs",
        "state": "xyz-state",
    } | overrides
    return {k: v for k, v in params.items() if v is not None}


def hidden_fields(html: str) -> dict[str, str]:
    return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', html))


async def consent(api: ApiClient, params: dict[str, str], username: str) -> httpx.Response:
    """Sign in through the forms, as a browser would; the consent page."""
    page = await api.http.get("/oauth/authorize", params=params)
    assert page.status_code == 200, page.text
    form = hidden_fields(page.text) | {"username": username, "password": PASSWORD}
    return await api.http.post("/oauth/authorize", data=form)


async def code_for(
    api: ApiClient, client: Client, username: str = "alice", **over: str | None
) -> str:
    answer = await consent(api, authorize_params(client, **over), username)
    assert answer.status_code == 200, answer.text
    decided = await api.http.post(
        "/oauth/authorize", data=hidden_fields(answer.text) | {"decision": "allow"}
    )
    assert decided.status_code == 303
    location = decided.headers["location"]
    assert location.startswith(CALLBACK + "?")
    query = parse_qs(urlsplit(location).query)
    assert query["state"] == ["xyz-state"]
    return query["code"][0]


async def exchange(api: ApiClient, client: Client, code: str, **extra: str) -> httpx.Response:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": CALLBACK,
        "client_id": client.id,
        "client_secret": client.secret,
    } | extra
    return await api.http.post("/oauth/token", data={k: v for k, v in form.items() if v})


def basic(client_id: str, secret: str) -> dict[str, str]:
    token = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.fixture
async def users(api: ApiClient) -> None:
    await api.runtime.users.create("alice", PASSWORD)
    await api.runtime.users.create("bob", PASSWORD)


async def test_metadata_names_the_endpoints(api: ApiClient) -> None:
    meta = (await api.http.get("/.well-known/oauth-authorization-server")).json()
    assert meta["issuer"] == "http://testserver"
    assert meta["authorization_endpoint"] == "http://testserver/oauth/authorize"
    assert meta["token_endpoint"] == "http://testserver/oauth/token"
    assert meta["revocation_endpoint"] == "http://testserver/oauth/revoke"
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert {"client_secret_post", "client_secret_basic"} <= set(
        meta["token_endpoint_auth_methods_supported"]
    )


async def test_the_whole_grant_with_both_client_authentications(
    api: ApiClient, users: None
) -> None:
    client = await make_client(api)
    # client_secret_post
    tokens = (await exchange(api, client, await code_for(api, client))).json()
    assert tokens["token_type"] == "Bearer" and tokens["expires_in"] == 3600
    assert tokens["scope"] == "chat logs"
    # client_secret_basic
    code = await code_for(api, client)
    answer = await api.http.post(
        "/oauth/token",
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK},
        headers=basic(client.id, client.secret),
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    # The token acts as alice.
    me = await api.post("/api/v1/gpt/conversations", {"message": "hi"}, key=tokens["access_token"])
    assert me.status_code == 200, me.text
    # Refresh rotates: the new pair works, the old refresh token does not.
    refreshed = await api.http.post(
        "/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        headers=basic(client.id, client.secret),
    )
    assert refreshed.status_code == 200, refreshed.text
    new = refreshed.json()
    assert new["refresh_token"] != tokens["refresh_token"]
    again = await api.http.post(
        "/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        headers=basic(client.id, client.secret),
    )
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    old = await api.get("/api/v1/gpt/status", key=tokens["access_token"])
    assert old.status_code == 401
    assert (await api.get("/api/v1/gpt/status", key=new["access_token"])).status_code == 200
    # Revocation (RFC 7009): 200, and the token stops working; an unknown token is also a 200.
    revoked = await api.http.post(
        "/oauth/revoke",
        data={"token": new["refresh_token"], "token_type_hint": "refresh_token"},
        headers=basic(client.id, client.secret),
    )
    assert revoked.status_code == 200
    assert (await api.get("/api/v1/gpt/status", key=new["access_token"])).status_code == 401
    unknown = await api.http.post(
        "/oauth/revoke",
        data={"token": "nothing", "client_id": client.id, "client_secret": client.secret},
    )
    assert unknown.status_code == 200


async def test_secrets_are_stored_only_as_hashes(api: ApiClient, users: None) -> None:
    client = await make_client(api)
    code = await code_for(api, client)
    tokens = (await exchange(api, client, code)).json()
    path = api.runtime.settings.database_url.removeprefix("sqlite:///")
    with open(path, "rb") as database:
        content = database.read()
    for secret in (client.secret, code, tokens["access_token"], tokens["refresh_token"], PASSWORD):
        assert secret.encode() not in content


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"client_id": None}, "no client_id"),
        ({"client_id": "0" * 32}, "not registered"),
        ({"redirect_uri": None}, "no redirect_uri"),
        ({"redirect_uri": "https://evil.example/callback"}, "not one registered"),
        ({"redirect_uri": CALLBACK + "/"}, "not one registered"),
        ({"redirect_uri": CALLBACK + "?x=1"}, "not one registered"),
    ],
)
async def test_a_bad_client_or_redirect_uri_is_an_error_page(
    api: ApiClient, overrides: dict[str, str | None], message: str
) -> None:
    client = await make_client(api)
    answer = await api.http.get("/oauth/authorize", params=authorize_params(client, **overrides))
    assert answer.status_code == 400
    assert "location" not in answer.headers
    assert answer.headers["content-type"].startswith("text/html")
    assert message in answer.text
    assert "default-src 'self'" in answer.headers["content-security-policy"]


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"response_type": None}, "unsupported_response_type"),
        ({"state": None}, "invalid_request"),
        ({"scope": "chat admin"}, "invalid_scope"),
        ({"scope": "everything"}, "invalid_scope"),
        ({"code_challenge": "a" * 43, "code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge": "short", "code_challenge_method": "S256"}, "invalid_request"),
    ],
)
async def test_other_bad_parameters_go_back_to_the_client(
    api: ApiClient, overrides: dict[str, str | None], error: str
) -> None:
    client = await make_client(api)
    answer = await api.http.get("/oauth/authorize", params=authorize_params(client, **overrides))
    assert answer.status_code == 303
    location = answer.headers["location"]
    assert location.startswith(CALLBACK + "?")
    query = parse_qs(urlsplit(location).query)
    assert query["error"] == [error]
    if "state" not in overrides:
        assert query["state"] == ["xyz-state"]


async def test_a_scope_the_client_may_not_ask_for(api: ApiClient) -> None:
    client = await make_client(api, scopes=("chat",))
    answer = await api.http.get("/oauth/authorize", params=authorize_params(client))
    assert parse_qs(urlsplit(answer.headers["location"]).query)["error"] == ["invalid_scope"]


@pytest.mark.parametrize("scope", ["chat,actions", "chat, actions", "actions ,chat,"])
async def test_scopes_may_be_separated_by_commas(api: ApiClient, users: None, scope: str) -> None:
    """A builder types `chat,actions` in ChatGPT's Scope field as often as `chat actions`
    (the document's `?scopes=` takes both): the grant reads commas as spaces."""
    client = await make_client(api)
    tokens = (await exchange(api, client, await code_for(api, client, scope=scope))).json()
    assert tokens["scope"] == "chat actions"


async def test_a_refresh_narrows_scopes_given_with_commas(api: ApiClient, users: None) -> None:
    client = await make_client(api)
    tokens = (await exchange(api, client, await code_for(api, client, scope="chat logs"))).json()
    narrowed = await api.http.post(
        "/oauth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "scope": "chat,",
        },
        headers=basic(client.id, client.secret),
    )
    assert narrowed.status_code == 200, narrowed.text
    assert narrowed.json()["scope"] == "chat"
    widened = await api.http.post(
        "/oauth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": narrowed.json()["refresh_token"],
            "scope": "chat,logs",
        },
        headers=basic(client.id, client.secret),
    )
    assert widened.json()["error"] == "invalid_scope"


async def test_an_unknown_scope_among_commas_is_named_alone(api: ApiClient) -> None:
    client = await make_client(api)
    answer = await api.http.get(
        "/oauth/authorize", params=authorize_params(client, scope="chat,root")
    )
    query = parse_qs(urlsplit(answer.headers["location"]).query)
    assert query["error"] == ["invalid_scope"]
    assert query["error_description"][0].endswith("unknown scope(s): root")


async def test_wrong_password_and_rate_limited_sign_in(
    settings: Settings, fake: FakeBackend
) -> None:
    limited = settings.model_copy(update={"login_rate_limit": "3/hour"})
    async with running_app(limited, fake) as api:
        await api.runtime.users.create("alice", PASSWORD)
        client = await make_client(api)
        page = await api.http.get("/oauth/authorize", params=authorize_params(client))
        form = hidden_fields(page.text) | {"username": "alice", "password": "wrong password"}
        first = await api.http.post("/oauth/authorize", data=form)
        assert first.status_code == 401 and "wrong username or password" in first.text
        assert hidden_fields(first.text)["state"] == "xyz-state"
        # Fixed windows: 7 attempts at 3 per hour pass the limit even across one window's end.
        answers = [await api.http.post("/oauth/authorize", data=form) for _ in range(6)]
        refused = [a for a in answers if a.status_code == 429]
        assert refused, [a.status_code for a in answers]
        assert int(refused[0].headers["retry-after"]) > 0
        assert "too many sign-in attempts" in refused[0].text


async def test_deny_redirects_with_access_denied(api: ApiClient, users: None) -> None:
    client = await make_client(api)
    answer = await consent(api, authorize_params(client), "bob")
    assert "My GPT" in answer.text and "Allow" in answer.text and "Deny" in answer.text
    denied = await api.http.post(
        "/oauth/authorize", data=hidden_fields(answer.text) | {"decision": "deny"}
    )
    query = parse_qs(urlsplit(denied.headers["location"]).query)
    assert query["error"] == ["access_denied"] and query["state"] == ["xyz-state"]
    # The ticket is single-use.
    again = await api.http.post(
        "/oauth/authorize", data=hidden_fields(answer.text) | {"decision": "allow"}
    )
    assert again.status_code == 400 and "location" not in again.headers


async def test_codes_are_single_use_bound_and_expire(api: ApiClient, users: None) -> None:
    client = await make_client(api)
    other = await make_client(api)
    code = await code_for(api, client)
    assert (await exchange(api, client, code)).status_code == 200
    reused = await exchange(api, client, code)
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"

    code = await code_for(api, client)
    stolen = await exchange(api, other, code)
    assert stolen.json()["error"] == "invalid_grant"

    code = await code_for(api, client)
    wrong_uri = await exchange(api, client, code, redirect_uri=CALLBACK + "x")
    assert wrong_uri.json()["error"] == "invalid_grant"

    code = await code_for(api, client)
    async with api.runtime.database.session() as session:
        await session.execute(update(OAuthCode).values(expires_at=utcnow() - timedelta(seconds=1)))
    expired = await exchange(api, client, code)
    assert expired.json()["error"] == "invalid_grant" and "expired" in expired.text


async def test_token_endpoint_errors(api: ApiClient, users: None) -> None:
    client = await make_client(api)
    code = await code_for(api, client)
    wrong = await exchange(api, client, code, client_secret="gptcs_wrong")
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    assert wrong.headers["www-authenticate"].startswith("Basic")
    assert wrong.json()["error_description"] == "wrong client secret"
    unsent = await exchange(api, client, code, client_secret="")
    assert unsent.status_code == 401
    assert unsent.json()["error_description"] == (
        "this client must authenticate with its client_secret"
    )
    basic_wrong = await api.http.post(
        "/oauth/token",
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK},
        headers=basic(client.id, "nope"),
    )
    assert basic_wrong.status_code == 401
    differing = await api.http.post(
        "/oauth/token",
        data={"grant_type": "authorization_code", "code": code, "client_secret": "gptcs_other"},
        headers=basic(client.id, client.secret),
    )
    assert differing.status_code == 400 and differing.json()["error"] == "invalid_request"
    # The same secret both ways (Basic and the body) is read: some clients send both.
    fresh = await code_for(api, client)
    both = await api.http.post(
        "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": fresh,
            "redirect_uri": CALLBACK,
            "client_id": client.id,
            "client_secret": client.secret,
        },
        headers=basic(client.id, client.secret),
    )
    assert both.status_code == 200, both.text
    assert both.json()["access_token"].startswith("gpto_")
    for form, error in [
        ({"grant_type": "password"}, "unsupported_grant_type"),
        ({}, "invalid_request"),
        ({"grant_type": "authorization_code", "redirect_uri": CALLBACK}, "invalid_request"),
        ({"grant_type": "refresh_token"}, "invalid_request"),
        ({"grant_type": "refresh_token", "refresh_token": "gptr_unknown"}, "invalid_grant"),
    ]:
        answer = await api.http.post(
            "/oauth/token",
            data=form | {"client_id": client.id, "client_secret": client.secret},
        )
        assert answer.status_code == 400, (form, answer.text)
        assert answer.json()["error"] == error, form
    as_json = await api.http.post("/oauth/token", json={"grant_type": "authorization_code"})
    assert as_json.json()["error"] == "invalid_request"
    # The code survived the failed attempts that did not reach it, and still works once.
    assert (await exchange(api, client, code)).status_code == 200


async def test_pkce_is_checked_and_required_for_public_clients(api: ApiClient, users: None) -> None:
    public = await api.runtime.oauth.create_client(
        "CLI", (CALLBACK,), scopes=("chat", "logs"), public=True
    )
    client = Client(public.info.id, "")
    refused = await api.http.get("/oauth/authorize", params=authorize_params(client))
    assert parse_qs(urlsplit(refused.headers["location"]).query)["error"] == ["invalid_request"]
    verifier = "v" * 50
    pkce = {"code_challenge": pkce_challenge(verifier), "code_challenge_method": "S256"}
    code = await code_for(api, client, **pkce)
    missing = await exchange(api, client, code)
    assert missing.json()["error"] == "invalid_grant"
    code = await code_for(api, client, **pkce)
    wrong = await exchange(api, client, code, code_verifier="w" * 50)
    assert wrong.json()["error"] == "invalid_grant"
    code = await code_for(api, client, **pkce)
    assert (await exchange(api, client, code, code_verifier=verifier)).status_code == 200


async def test_a_public_clients_refresh_token_used_twice_revokes_that_users_tokens(
    api: ApiClient, users: None, caplog: pytest.LogCaptureFixture
) -> None:
    """Rotation's replay detection (RFC 9700, 4.14.2), for public clients (no secret proves
    who presents a refresh token): a rotated refresh token presented again revokes every live
    token of that user for that client. Other users and other clients keep theirs."""
    public = await api.runtime.oauth.create_client(
        "Console", (CALLBACK,), scopes=("chat", "logs"), public=True
    )
    client = Client(public.info.id, "")
    verifier = "v" * 50
    pkce = {"code_challenge": pkce_challenge(verifier), "code_challenge_method": "S256"}

    async def sign_in(username: str) -> dict[str, str]:
        code = await code_for(api, client, username, **pkce)
        answer = await exchange(api, client, code, code_verifier=verifier)
        assert answer.status_code == 200, answer.text
        tokens: dict[str, str] = answer.json()
        return tokens

    def refresh(token: str) -> Any:
        form = {"grant_type": "refresh_token", "refresh_token": token, "client_id": client.id}
        return api.http.post("/oauth/token", data=form)

    stolen = await sign_in("alice")
    other_tab = await sign_in("alice")
    bob = await sign_in("bob")
    gpt = await make_client(api)
    alice_in_a_gpt = await token_for(api, gpt, "alice", "chat")
    # The user refreshes (rotation); then the thief presents the old refresh token.
    rotated = await refresh(stolen["refresh_token"])
    assert rotated.status_code == 200, rotated.text
    replayed = await refresh(stolen["refresh_token"])
    assert replayed.status_code == 400 and replayed.json()["error"] == "invalid_grant"
    assert "used again after its rotation" in caplog.text
    # Every token of alice for this client is gone: the rotated pair, the other sign-in's pair.
    for token in (rotated.json()["access_token"], other_tab["access_token"]):
        assert (await api.get("/api/v1/gpt/status", key=token)).status_code == 401
    for token in (rotated.json()["refresh_token"], other_tab["refresh_token"]):
        assert (await refresh(token)).json()["error"] == "invalid_grant"
    # Bob, and alice in another client, are untouched.
    assert (await api.get("/api/v1/gpt/status", key=bob["access_token"])).status_code == 200
    assert (await api.get("/api/v1/gpt/status", key=alice_in_a_gpt)).status_code == 200
    # Alice signs in again and goes on.
    again = await sign_in("alice")
    assert (await api.get("/api/v1/gpt/status", key=again["access_token"])).status_code == 200


async def test_expired_access_token_and_disabled_user(api: ApiClient, users: None) -> None:
    client = await make_client(api)
    tokens = (await exchange(api, client, await code_for(api, client))).json()
    assert (await api.get("/api/v1/gpt/status", key=tokens["access_token"])).status_code == 200
    async with api.runtime.database.session() as session:
        await session.execute(update(OAuthToken).values(access_expires_at=utcnow()))
    assert (await api.get("/api/v1/gpt/status", key=tokens["access_token"])).status_code == 401
    tokens = (await exchange(api, client, await code_for(api, client))).json()
    await api.runtime.users.disable("alice")
    assert (await api.get("/api/v1/gpt/status", key=tokens["access_token"])).status_code == 401


async def token_for(api: ApiClient, client: Client, username: str, scope: str) -> str:
    code = await code_for(api, client, username, scope=scope)
    answer = (await exchange(api, client, code)).json()
    token: str = answer["access_token"]
    return token


async def test_two_users_cannot_read_each_others_data(api: ApiClient, users: None) -> None:
    client = await make_client(api)
    alice = await token_for(api, client, "alice", "chat logs")
    bob = await token_for(api, client, "bob", "chat logs")
    started = await api.post("/api/v1/gpt/conversations", {"message": "alice here"}, key=alice)
    assert started.status_code == 200, started.text
    conversation = started.json()["conversationId"]
    await api.post("/api/v1/gpt/conversations", {"message": "bob here"}, key=bob)

    # Another userId in the body is a 403 naming the mismatch; the same one is fine.
    posing = await api.post("/api/v1/gpt/respond", {"userId": "alice", "message": "hi"}, key=bob)
    assert posing.status_code == 403
    assert "'alice'" in posing.json()["error"]["message"]
    assert "'bob'" in posing.json()["error"]["message"]
    assert posing.json()["error"]["details"][0]["pointer"] == "/userId"
    own = await api.post("/api/v1/gpt/respond", {"userId": "bob", "message": "hi"}, key=bob)
    assert own.status_code == 200
    # Alice's conversation does not exist for bob.
    stolen = await api.post(
        "/api/v1/gpt/respond", {"message": "hi", "conversationId": conversation}, key=bob
    )
    assert stolen.status_code == 404
    # Continuing without a conversationId continues bob's own.
    assert own.json()["conversationId"] != conversation

    # Logs: each sees only their own interactions.
    def users_in(answer: httpx.Response) -> set[str]:
        assert answer.status_code == 200, answer.text
        return {item["userId"] for item in answer.json()}

    assert users_in(await api.get("/api/v1/gpt/logs", key=alice)) == {"alice"}
    assert users_in(await api.get("/api/v1/gpt/logs", key=bob)) == {"bob"}
    by_conversation = await api.get(
        "/api/v1/gpt/logs", key=bob, params={"conversationId": conversation}
    )
    assert by_conversation.json() == []
    asked = await api.get("/api/v1/gpt/logs", key=bob, params={"userId": "alice"})
    assert asked.status_code == 403
    # The admin key still sees everyone: API keys work as before.
    assert users_in(await api.get("/api/v1/gpt/logs")) == {"alice", "bob"}


async def test_a_key_naming_a_signed_in_user_reaches_none_of_their_data(
    api: ApiClient, users: None
) -> None:
    """A signed-in user's data is in a tenant no key has: a key of the default tenant that
    names them as `userId` starts a conversation of its own, and its log shows none of theirs."""
    client = await make_client(api)
    alice = await token_for(api, client, "alice", "chat")
    secret = await api.post(
        "/api/v1/gpt/conversations", {"message": "My secret word is PINEAPPLE"}, key=alice
    )
    assert secret.status_code == 200, secret.text
    theirs = secret.json()["conversationId"]
    key = await api.key(scopes=("chat", "logs"))  # tenant default, as keys are by default
    posing = await api.post(
        "/api/v1/gpt/respond", {"userId": "alice", "message": "The secret word?"}, key=key
    )
    assert posing.status_code == 200
    assert posing.json()["conversationId"] != theirs
    stolen = await api.post(
        "/api/v1/gpt/respond",
        {"userId": "alice", "message": "The secret word?", "conversationId": theirs},
        key=key,
    )
    assert stolen.status_code == 404
    logged = (await api.get("/api/v1/gpt/logs", key=key, params={"userId": "alice"})).json()
    assert "PINEAPPLE" not in str(logged)
    # No key can be made in the users' tenant.
    with pytest.raises(ValueError, match="reserved"):
        await api.runtime.keys.create("intruder", tenant="@users")


async def test_a_token_holds_only_the_consented_scopes(api: ApiClient, users: None) -> None:
    client = await make_client(api)
    chat_only = await token_for(api, client, "alice", "chat")
    answer = await api.get("/api/v1/gpt/logs", key=chat_only)
    assert answer.status_code == 403
    action = await api.post(
        "/api/v1/gpt/actions", {"action": "echo", "parameters": {}}, key=chat_only
    )
    assert action.status_code == 403


async def test_actions_run_as_the_tokens_user(api: ApiClient, users: None) -> None:
    client = await make_client(api)
    token = await token_for(api, client, "alice", "actions logs")
    listed = await api.get("/api/v1/gpt/actions", key=token)
    name = (
        next(iter(listed.json()["actions"]))["name"]
        if isinstance(listed.json()["actions"], list)
        else next(iter(listed.json()["actions"]))
    )
    posing = await api.post(
        "/api/v1/gpt/actions", {"action": name, "parameters": {}, "userId": "bob"}, key=token
    )
    assert posing.status_code == 403


async def test_the_admin_key_still_needs_a_user_id(api: ApiClient) -> None:
    answer = await api.post("/api/v1/gpt/conversations", {"message": "hi"})
    assert answer.status_code == 400
    assert answer.json()["error"]["details"][0]["pointer"] == "/userId"


async def test_the_grant_on_each_database(app_factory: Any) -> None:
    """Single-use codes and rotation rest on conditional UPDATEs: SQLite and PostgreSQL alike."""
    async with app_factory() as api:
        await api.runtime.users.create("alice", PASSWORD)
        client = await make_client(api)
        code = await code_for(api, client)
        tokens = (await exchange(api, client, code)).json()
        refresh = {
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": client.id,
            "client_secret": client.secret,
        }
        assert (await api.http.post("/oauth/token", data=refresh)).status_code == 200
        again = await api.http.post("/oauth/token", data=refresh)
        assert again.json()["error"] == "invalid_grant"
        assert (await exchange(api, client, code)).json()["error"] == "invalid_grant"
        await api.runtime.users.delete("alice")


async def test_a_code_redeemed_again_revokes_the_tokens_issued_from_it(
    app_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """RFC 6749, 4.1.2: a second redemption is refused, and the pair issued from the code is
    revoked, also once refreshed (its descendants), also after the code itself was forgotten.
    Tokens from other codes keep working. On SQLite and PostgreSQL (migration 0010)."""
    async with app_factory() as api:
        await api.runtime.users.create("alice", PASSWORD)
        client = await make_client(api)

        async def works(token: str) -> bool:
            answer = await api.get("/api/v1/gpt/status", key=token)
            assert answer.status_code in (200, 401), answer.text
            return answer.status_code == 200

        def refresh(token: str) -> Any:
            form = {"grant_type": "refresh_token", "refresh_token": token}
            return api.http.post("/oauth/token", data=form, headers=basic(client.id, client.secret))

        code = await code_for(api, client)
        first = (await exchange(api, client, code)).json()
        refreshed = (await refresh(first["refresh_token"])).json()
        other = (await exchange(api, client, await code_for(api, client))).json()
        assert await works(refreshed["access_token"]) and await works(other["access_token"])

        reused = await exchange(api, client, code)
        assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
        assert reused.headers["cache-control"] == "no-store"
        assert not await works(refreshed["access_token"])
        assert (await refresh(refreshed["refresh_token"])).json()["error"] == "invalid_grant"
        assert "used again: the 1 token pair(s) issued from it are revoked" in caplog.text
        assert await works(other["access_token"])

        # The code's row is forgotten once it expires; the tokens still know where they came from.
        code = await code_for(api, client)
        late = (await exchange(api, client, code)).json()
        async with api.runtime.database.session() as session:
            await session.execute(delete(OAuthCode))
        assert (await exchange(api, client, code)).json()["error"] == "invalid_grant"
        assert not await works(late["access_token"])
        assert await works(other["access_token"])

        # Two redemptions at once: one gets a pair, which the other's then revokes.
        code = await code_for(api, client)
        answers = await asyncio.gather(*(exchange(api, client, code) for _ in range(2)))
        assert sorted(a.status_code for a in answers) == [200, 400]
        [won] = [a.json() for a in answers if a.status_code == 200]
        assert not await works(won["access_token"])
        await api.runtime.users.delete("alice")


async def test_an_mcp_client_finds_how_to_sign_in_and_then_calls_the_tools(
    api: ApiClient, users: None
) -> None:
    """The MCP authorization spec's path: a 401 from /mcp names the resource's RFC 9728
    metadata, which names this server as the authorization server (RFC 8414 metadata); a public
    client then runs the code grant with PKCE and the resource indicator, and calls /mcp."""
    accept = {"Accept": "application/json, text/event-stream"}
    initialize = initialize_message("an MCP client")
    refused = await api.http.post("/mcp", json=initialize, headers=accept)
    assert refused.status_code == 401
    found = re.search(r'resource_metadata="([^"]+)"', refused.headers["www-authenticate"])
    assert found and found.group(1) == "http://testserver/.well-known/oauth-protected-resource/mcp"
    resource = (await api.http.get(found.group(1))).json()
    assert resource["resource"] == "http://testserver/mcp"
    assert resource["bearer_methods_supported"] == ["header"]
    [server] = resource["authorization_servers"]
    meta = (await api.http.get(f"{server}/.well-known/oauth-authorization-server")).json()
    assert meta["issuer"] == server and "S256" in meta["code_challenge_methods_supported"]
    whole = (await api.http.get("/.well-known/oauth-protected-resource")).json()
    assert whole["resource"] == server and whole["authorization_servers"] == [server]

    public = await api.runtime.oauth.create_client(
        "An MCP client", (CALLBACK,), scopes=("chat", "actions"), public=True
    )
    client = Client(public.info.id, "")
    verifier = "m" * 64
    pkce = {"code_challenge": pkce_challenge(verifier), "code_challenge_method": "S256"}
    code = await code_for(api, client, scope="chat actions", resource=resource["resource"], **pkce)
    tokens = await exchange(
        api, client, code, code_verifier=verifier, resource=resource["resource"]
    )
    assert tokens.status_code == 200, tokens.text
    bearer = {"Authorization": f"Bearer {tokens.json()['access_token']}"}
    answer = await api.http.post("/mcp", json=initialize, headers=accept | bearer)
    assert answer.status_code == 200, answer.text
    assert answer.json()["result"]["serverInfo"]["name"] == "gptactions"
    # The token is its user: `converse` asks for no userId, which a client would have to guess.
    session = {k: v for k, v in answer.headers.items() if k.lower() == "mcp-session-id"}
    listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}
    listed = await api.http.post("/mcp", json=listing, headers=accept | bearer | session)
    assert listed.status_code == 200, listed.text
    tools = {tool["name"]: tool for tool in listed.json()["result"]["tools"]}
    assert tools["converse"]["inputSchema"]["required"] == ["message"]


async def test_a_token_for_another_resource_is_refused_invalid_target(
    api: ApiClient, users: None
) -> None:
    """RFC 8707: this server issues tokens for itself only. A client asking for one "for"
    another resource (which could then replay it here) is told invalid_target, at the
    authorization endpoint (a redirect, the client being known) and at the token endpoint."""
    client = await make_client(api)
    params = authorize_params(client, resource="https://elsewhere.example/mcp")
    refused = await api.http.get("/oauth/authorize", params=params)
    assert refused.status_code == 303
    assert refused.headers["location"].startswith(CALLBACK + "?")
    query = parse_qs(urlsplit(refused.headers["location"]).query)
    assert query["error"] == ["invalid_target"] and query["state"] == ["xyz-state"]
    # Its own URL, with or without a path, is fine.
    for own in ("http://testserver", "http://TestServer/", "http://testserver/api/v1/gpt"):
        page = await api.http.get("/oauth/authorize", params=authorize_params(client, resource=own))
        assert page.status_code == 200, page.text
    code = await code_for(api, client)
    foreign = await exchange(api, client, code, resource="https://elsewhere.example/")
    assert foreign.status_code == 400 and foreign.json()["error"] == "invalid_target"


async def test_the_oauth_endpoints_refuse_a_body_over_the_limit(api: ApiClient) -> None:
    """Forms are read whole: past GPTACTIONS_MAX_BODY_BYTES they are refused unread, by the
    token and revocation endpoints in OAuth's error shape, by the others in the API's."""
    big = "grant_type=refresh_token&refresh_token=" + "x" * (2 * 1024 * 1024)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    for path in ("/oauth/token", "/oauth/revoke", "/oauth/authorize", "/oauth/register"):
        answer = await api.http.post(path, content=big, headers=form)
        assert answer.status_code == 413, (path, answer.status_code)
        if path in ("/oauth/token", "/oauth/revoke"):
            assert answer.json()["error"] == "invalid_request", path
        else:
            assert answer.json()["error"]["code"] == "payload_too_large", path


async def test_the_token_endpoints_answer_every_error_in_oauths_shape(api: ApiClient) -> None:
    """RFC 6749, 5.2 (RFC 7009, 2.2.1): an OAuth client reads `error` and `error_description`,
    never cached, whatever the error: a wrong method (405, still with Allow), a body too large
    by its Content-Length or while it is read (413)."""

    async def chunks() -> Any:
        yield b"grant_type=refresh_token&refresh_token="
        for _ in range(40):
            yield b"x" * 65536

    form = {"Content-Type": "application/x-www-form-urlencoded"}
    too_large = {
        "error": "invalid_request",
        "error_description": "the body is larger than 1048576 bytes",
    }
    for path in ("/oauth/token", "/oauth/revoke"):
        by_length = await api.http.post(path, content=b"x" * (1024 * 1024 + 1), headers=form)
        while_read = await api.http.post(path, content=chunks(), headers=form)
        wrong_method = await api.http.get(path)
        for answer, status in ((by_length, 413), (while_read, 413), (wrong_method, 405)):
            assert answer.status_code == status, (path, answer.text)
            assert answer.headers["cache-control"] == "no-store", path
            assert answer.headers["content-type"] == "application/json"
            assert set(answer.json()) == {"error", "error_description"}, answer.text
        assert by_length.json() == too_large and while_read.json() == too_large
        assert wrong_method.headers["allow"] == "POST"
        assert wrong_method.json() == {
            "error": "invalid_request",
            "error_description": f"method GET is not allowed on {path}",
        }
    # The API's own paths keep the API's shape.
    api_path = await api.http.get("/api/v1/gpt/conversations")
    assert api_path.status_code == 405 and api_path.json()["error"]["code"] == "method_not_allowed"
    assert "cache-control" not in api_path.headers


async def test_dynamic_registration_is_off_unless_asked_for(api: ApiClient) -> None:
    meta = (await api.http.get("/.well-known/oauth-authorization-server")).json()
    assert "registration_endpoint" not in meta
    answer = await api.http.post("/oauth/register", json={"redirect_uris": [CALLBACK]})
    assert answer.status_code == 404
    assert "gptactions oauth clients create" in answer.json()["error"]["message"]


async def test_a_client_registers_itself_and_signs_a_user_in(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """RFC 7591 with GPTACTIONS_OAUTH_DYNAMIC_REGISTRATION: a public client registers, its
    name marked self-registered, and runs the code grant with PKCE; what this server cannot
    honour is refused with RFC 7591's errors."""
    caplog.set_level(logging.INFO, logger="gptactions.api.oauth")
    allowed = settings.model_copy(update={"oauth_dynamic_registration": True})
    async with running_app(allowed, FakeBackend()) as api:
        await api.runtime.users.create("alice", PASSWORD)
        meta = (await api.http.get("/.well-known/oauth-authorization-server")).json()
        assert meta["registration_endpoint"] == "http://testserver/oauth/register"
        registered = await api.http.post(
            meta["registration_endpoint"],
            json={
                "client_name": "Claude",
                "redirect_uris": [CALLBACK],
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
                "token_endpoint_auth_method": "none",
            },
        )
        assert registered.status_code == 201, registered.text
        client_info = registered.json()
        assert client_info["client_name"] == "Claude (self-registered)"
        assert client_info["token_endpoint_auth_method"] == "none"
        assert client_info["scope"] == "chat actions"
        assert "client_secret" not in client_info
        assert "registered itself" in caplog.text
        client = Client(client_info["client_id"], "")
        verifier = "r" * 64
        pkce = {"code_challenge": pkce_challenge(verifier), "code_challenge_method": "S256"}
        page = await api.http.get(
            "/oauth/authorize", params=authorize_params(client, scope="chat", **pkce)
        )
        assert "Claude (self-registered)" in page.text  # what the user consents to
        code = await code_for(api, client, scope="chat", **pkce)
        tokens = await exchange(api, client, code, code_verifier=verifier)
        assert tokens.status_code == 200, tokens.text
        me = await api.get("/api/v1/gpt/me", key=tokens.json()["access_token"])
        assert me.json()["userId"] == "alice"

        for metadata, error in (
            ({}, "invalid_redirect_uri"),
            ({"redirect_uris": ["http://evil.example/cb"]}, "invalid_redirect_uri"),
            ({"redirect_uris": [{"uri": CALLBACK}]}, "invalid_redirect_uri"),
            (
                {"redirect_uris": [CALLBACK], "token_endpoint_auth_method": "client_secret_basic"},
                "invalid_client_metadata",
            ),
            ({"redirect_uris": [CALLBACK], "grant_types": ["password"]}, "invalid_client_metadata"),
            ({"redirect_uris": [CALLBACK], "grant_types": [{}]}, "invalid_client_metadata"),
            ({"redirect_uris": [CALLBACK], "scope": "admin"}, "invalid_client_metadata"),
            ({"redirect_uris": [CALLBACK], "client_name": "x" * 101}, "invalid_client_metadata"),
        ):
            refused = await api.http.post("/oauth/register", json=metadata)
            assert refused.status_code == 400, (metadata, refused.text)
            assert refused.json()["error"] == error, metadata
        not_json = await api.http.post("/oauth/register", content=b"{")
        assert not_json.json()["error"] == "invalid_client_metadata"
