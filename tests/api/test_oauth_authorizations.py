"""`/oauth/authorizations`: a user signs in, sees the applications they allowed, and revokes
one, as the consent page promises; through the HTTP client, with a password and through an
OpenID Connect provider."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from html import unescape
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import select, update

from gptactions.config import Settings
from gptactions.llm.fake import FakeBackend
from gptactions.services.oauth import AuthorizationRequest, ClientCredentials
from gptactions.store.models import OAuthClient, OAuthCode, OAuthToken, utcnow
from tests.api.test_oauth import (
    CALLBACK,
    PASSWORD,
    Client,
    authorize_params,
    basic,
    code_for,
    consent,
    exchange,
    make_client,
    token_for,
)
from tests.conftest import ApiClient, running_app
from tests.oidc_provider import Identity, LocalProvider, serve_provider

PAGE = "/oauth/authorizations"


@pytest.fixture
async def users(api: ApiClient) -> None:
    await api.runtime.users.create("alice", PASSWORD)
    await api.runtime.users.create("bob", PASSWORD)


def revoke_forms(html: str) -> dict[str, str]:
    """Each listed application's name and the ticket of its Revoke button."""
    found = re.findall(
        r'<h2 id="grant-\d+">([^<]+)</h2>.*?name="step" value="revoke">\s*'
        r'<input type="hidden" name="ticket" value="([^"]+)">',
        html,
        re.S,
    )
    return {unescape(name): ticket for name, ticket in found}


async def listing(api: ApiClient, username: str) -> httpx.Response:
    """Sign in on the page with a password, as a browser would; the list."""
    form = await api.http.get(PAGE)
    assert form.status_code == 200, form.text
    assert f'action="{PAGE}"' in form.text
    answer = await api.http.post(
        PAGE, data={"step": "login", "username": username, "password": PASSWORD}
    )
    assert answer.status_code == 200, answer.text
    assert f"Signed in as <strong>{username}</strong>" in answer.text
    return answer


async def works(api: ApiClient, token: str) -> bool:
    answer = await api.get("/api/v1/gpt/status", key=token)
    assert answer.status_code in (200, 401), answer.text
    return answer.status_code == 200


async def test_the_consent_page_links_to_the_page_that_revokes(api: ApiClient, users: None) -> None:
    client = await make_client(api)
    page = await consent(api, authorize_params(client), "alice")
    assert "You can revoke its access at any time" in page.text
    assert f'<a href="{PAGE}" target="_blank" rel="noopener">' in page.text


async def test_a_user_sees_what_they_allowed_and_revokes_one(api: ApiClient, users: None) -> None:
    """The list names each application with its scopes and when it was allowed; Revoke ends
    that application's tokens of that user at once, and its unredeemed codes, and nothing
    else: the user's other applications and other users keep theirs."""
    gpt, other = await make_client(api), await make_client(api)
    async with api.runtime.database.session() as session:  # two names, to tell them apart
        await session.execute(
            update(OAuthClient).where(OAuthClient.id == other.id).values(name="Other app")
        )
    tokens = (await exchange(api, gpt, await code_for(api, gpt, scope="chat logs"))).json()
    second_device = await token_for(api, gpt, "alice", "chat")
    kept = await token_for(api, other, "alice", "chat")
    bobs = await token_for(api, gpt, "bob", "chat")
    pending = await code_for(api, gpt)  # allowed, not yet redeemed

    page = await listing(api, "alice")
    assert page.headers["cache-control"] == "no-store"
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "set-cookie" not in page.headers
    forms = revoke_forms(page.text)
    assert list(forms) == ["My GPT", "Other app"]
    mine = page.text.split(">My GPT</h2>", 1)[1].split("</li>\n</ul>", 1)[0]
    assert "<code>chat</code>" in mine and "<code>logs</code>" in mine
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    assert f'Allowed <time datetime="{today}' in mine

    revoked = await api.http.post(PAGE, data={"step": "revoke", "ticket": forms["My GPT"]})
    assert revoked.status_code == 200, revoked.text
    assert "<strong>My GPT</strong> can no longer use this server as you." in revoked.text
    assert list(revoke_forms(revoked.text)) == ["Other app"]
    for token in (tokens["access_token"], second_device):
        assert not await works(api, token)
    refresh = await api.http.post(
        "/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        headers=basic(gpt.id, gpt.secret),
    )
    assert refresh.json()["error"] == "invalid_grant"
    assert (await exchange(api, gpt, pending)).json()["error"] == "invalid_grant"
    assert await works(api, kept) and await works(api, bobs)
    assert list(revoke_forms((await listing(api, "bob")).text)) == ["My GPT"]

    # The application asks again, the user allows again: it is back.
    assert await works(api, await token_for(api, gpt, "alice", "chat"))
    assert list(revoke_forms((await listing(api, "alice")).text)) == ["My GPT", "Other app"]


async def test_a_revoke_button_needs_its_own_fresh_ticket(api: ApiClient, users: None) -> None:
    """CSRF: a page of another site cannot know the ticket, and the page sets no cookie a forged
    form could ride on. A ticket works once, for its user and application, for ten minutes."""
    gpt = await make_client(api)
    token = await token_for(api, gpt, "alice", "chat")
    forms = revoke_forms((await listing(api, "alice")).text)
    for forged in ({"step": "revoke"}, {"step": "revoke", "ticket": "guessed"}):
        refused = await api.http.post(PAGE, data=forged)
        assert refused.status_code == 400
        assert "sign in again" in refused.text and f'<a href="{PAGE}">' in refused.text
    assert await works(api, token)
    async with api.runtime.database.session() as session:
        await session.execute(
            update(OAuthCode).where(OAuthCode.stage == "revoke").values(expires_at=utcnow())
        )
    late = await api.http.post(PAGE, data={"step": "revoke", "ticket": forms["My GPT"]})
    assert late.status_code == 400 and await works(api, token)

    forms = revoke_forms((await listing(api, "alice")).text)
    first = await api.http.post(PAGE, data={"step": "revoke", "ticket": forms["My GPT"]})
    assert first.status_code == 200 and not await works(api, token)
    again = await api.http.post(PAGE, data={"step": "revoke", "ticket": forms["My GPT"]})
    assert again.status_code == 400


async def test_signing_in_on_the_page(settings: Settings) -> None:
    """The sign-in form answers as the authorization's does: a wrong password is a 401 with
    the form again, and past GPTACTIONS_LOGIN_RATE_LIMIT a 429 with Retry-After."""
    limited = settings.model_copy(update={"login_rate_limit": "3/hour"})
    async with running_app(limited, FakeBackend()) as api:
        await api.runtime.users.create("carol", PASSWORD)
        form = {"step": "login", "username": " carol ", "password": "wrong password"}
        wrong = await api.http.post(PAGE, data=form)
        assert wrong.status_code == 401 and "wrong username or password" in wrong.text
        assert 'value="carol"' in wrong.text
        answers = [await api.http.post(PAGE, data=form) for _ in range(6)]
        refused = [a for a in answers if a.status_code == 429]
        assert refused and int(refused[0].headers["retry-after"]) > 0
        nobody = await api.http.get(PAGE)
        assert "No application" not in nobody.text and "Sign in with" not in nobody.text


async def test_a_user_with_nothing_allowed_and_the_time_of_the_grant(
    api: ApiClient, users: None
) -> None:
    """Refreshing replaces the pair; the page still shows when the user allowed it."""
    page = await listing(api, "bob")
    assert "No application may use this server as you." in page.text
    gpt = await make_client(api)
    tokens = (await exchange(api, gpt, await code_for(api, gpt))).json()
    then = datetime(2024, 3, 1, 9, 30, tzinfo=UTC)
    async with api.runtime.database.session() as session:
        await session.execute(update(OAuthToken).values(created_at=then))
    refreshed = await api.http.post(
        "/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        headers=basic(gpt.id, gpt.secret),
    )
    assert refreshed.status_code == 200
    page = await listing(api, "alice")
    assert "2024-03-01 09:30 UTC" in page.text


@pytest.fixture
def provider() -> Iterator[LocalProvider]:
    with serve_provider(LocalProvider("gptactions-test", "provider-secret", "")) as running:
        running.redirect_uri = "http://testserver/oauth/oidc/callback"
        running.identity = Identity("subject-9", "dana@example.com")
        yield running


async def test_a_provider_user_signs_in_on_the_page(
    settings: Settings, provider: LocalProvider
) -> None:
    """With GPTACTIONS_OIDC_*, the page offers the provider's sign-in, which comes back to the
    page (not to a consent page); a user without a password revokes as any other."""
    configured = Settings(
        database_url=settings.database_url,
        api_key=settings.api_key,
        oidc_issuer=provider.url,
        oidc_client_id=provider.client_id,
        oidc_client_secret="provider-secret",
        oidc_name="Example ID",
    )
    async with running_app(configured, FakeBackend()) as api:
        login = await api.http.get(PAGE)
        assert "Sign in with Example ID" in login.text
        assert '<input type="hidden" name="next" value="authorizations">' in login.text

        async def through_provider() -> httpx.Response:
            started = await api.http.get("/oauth/oidc/start", params={"next": "authorizations"})
            assert started.status_code == 303, started.text
            async with httpx.AsyncClient() as browser:
                answered = await browser.get(started.headers["location"])
            assert answered.status_code == 302, answered.text
            back = answered.headers["location"]
            assert back.startswith("http://testserver/oauth/oidc/callback?")
            return await api.http.get(back)

        first = await through_provider()
        assert first.status_code == 200, first.text
        assert "No application may use this server as you." in first.text
        [user] = await api.runtime.users.list()
        assert f"Signed in as <strong>{user.username}</strong>" in first.text

        gpt = await make_client(api)
        token = await _token_of(api, gpt, user.id)
        page = await through_provider()
        forms = revoke_forms(page.text)
        assert list(forms) == ["My GPT"]
        revoked = await api.http.post(PAGE, data={"step": "revoke", "ticket": forms["My GPT"]})
        assert "can no longer use this server as you" in revoked.text
        assert not await works(api, token)
        assert provider.refusals == []


async def _token_of(api: ApiClient, client: Client, user_id: str) -> str:
    """An access token of the user for the client, through the service (a provider's user has
    no password for the forms)."""
    oauth = api.runtime.oauth
    request = AuthorizationRequest("code", client.id, CALLBACK, "chat", "s")
    ticket = await oauth.open_consent(await oauth.validate(request), user_id)
    code = parse_qs(urlsplit(await oauth.decide(ticket, allow=True)).query)["code"][0]
    credentials = ClientCredentials(client.id, client.secret)
    issued = await oauth.exchange_code(
        credentials, code=code, redirect_uri=CALLBACK, code_verifier=None
    )
    return issued.access_token


async def test_pages_for_two_users_at_once_stay_theirs(app_factory: Any) -> None:
    """Each ticket names its user: bob's button never touches alice's grant. On SQLite and
    PostgreSQL (the list's join and the grant's first time)."""
    async with app_factory() as api:
        for name in ("alice", "bob"):
            await api.runtime.users.create(name, PASSWORD)
        gpt = await make_client(api)
        alice = await token_for(api, gpt, "alice", "chat")
        bob = await token_for(api, gpt, "bob", "chat")
        pages = await asyncio.gather(listing(api, "alice"), listing(api, "bob"))
        assert list(revoke_forms(pages[0].text)) == list(revoke_forms(pages[1].text)) == ["My GPT"]
        ticket = revoke_forms(pages[1].text)["My GPT"]
        revoked = await api.http.post(PAGE, data={"step": "revoke", "ticket": ticket})
        assert "No application may use this server as you." in revoked.text
        assert await works(api, alice) and not await works(api, bob)
        async with api.runtime.database.session() as session:
            live = await session.scalars(
                select(OAuthToken.user_id).where(OAuthToken.revoked_at.is_(None))
            )
            assert len(list(live)) == 1
        for name in ("alice", "bob"):
            await api.runtime.users.delete(name)
