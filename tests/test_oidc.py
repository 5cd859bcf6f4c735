"""Signing in through an OpenID Connect provider, end to end through the real server.

`gptactions serve` runs with GPTACTIONS_OIDC_* pointing at a small provider on a local port
(tests/oidc_provider.py); httpx plays the browser, following redirects and keeping cookies.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from gptactions.config import Settings
from gptactions.llm.fake import FakeBackend
from gptactions.services.users import UserDisabled, external_usernames
from tests.conftest import ApiClient, running_app
from tests.oidc_provider import Identity, LocalProvider, serve_provider
from tests.serving import Server, free_port, run_cli, serve

GPT_CALLBACK = "https://chat.openai.com/aip/g-5f1c2e9a0b7d4e3f/oauth/callback"
API_KEY = "gpta_oidc_test_key_0123456789abcdefghijklmnop"
PROVIDER_SECRET = "provider-secret-of-gptactions"


@pytest.fixture(scope="module")
def provider() -> Iterator[LocalProvider]:
    """The OpenID Connect provider, before the server that trusts it."""
    with serve_provider(LocalProvider("gptactions-test", PROVIDER_SECRET, "")) as running:
        yield running


@pytest.fixture(scope="module")
def server(provider: LocalProvider, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The real server, configured from the environment as an administrator would."""
    env = {
        "GPTACTIONS_OIDC_ISSUER": provider.url,
        "GPTACTIONS_OIDC_CLIENT_ID": provider.client_id,
        "GPTACTIONS_OIDC_CLIENT_SECRET": PROVIDER_SECRET,
        "GPTACTIONS_OIDC_NAME": "Example ID",
        "GPTACTIONS_OIDC_ALLOWED_DOMAINS": "example.com, Example.org",
        # Every test here signs in from 127.0.0.1: the default 10/minute per address would
        # refuse the later ones. The limit itself has its own test below.
        "GPTACTIONS_LOGIN_RATE_LIMIT": "1000/minute",
    }
    with serve(tmp_path_factory.mktemp("oidc-server"), key=API_KEY, env=env, timeout=180) as up:
        provider.redirect_uri = f"{up.url}/oauth/oidc/callback"
        yield up


@pytest.fixture(scope="module")
def gpt_client(server: Server) -> tuple[str, str]:
    """A GPT registered as an OAuth client of the server."""
    out = run_cli(
        server, "oauth", "clients", "create", "--name", "Trip planner GPT",
        "--redirect-uri", GPT_CALLBACK, "--scope", "chat",
    ).splitlines()  # fmt: skip
    return out[-2].removeprefix("client_id="), out[-1].removeprefix("client_secret=")


@pytest.fixture(autouse=True)
def honest_provider(provider: LocalProvider) -> Iterator[None]:
    """Each test starts with a provider that behaves, and leaves no refusal unexplained."""
    provider.tamper = None
    provider.identity = Identity("subject-1", "alice@example.com")
    provider.refusals.clear()
    yield
    assert provider.refusals == [], provider.refusals


def authorize_url(server: Server, client_id: str, state: str = "gpt-state", **over: str) -> str:
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": GPT_CALLBACK,
        "scope": "chat",
        "state": state,
    } | over
    return f"{server.url}/oauth/authorize?{urlencode(params)}"


def start_form(html: str) -> str:
    """The "Sign in with" form's target: /oauth/oidc/start with its hidden fields."""
    form = re.search(r'<form method="get" action="(/oauth/oidc/start)">(.*?)</form>', html, re.S)
    assert form, html
    fields = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', form.group(2))
    return f"{form.group(1)}?{urlencode({k: unescape(v) for k, v in fields})}"


def hidden_fields(html: str) -> dict[str, str]:
    return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', html))


def browser() -> httpx.Client:
    """A browser: follows redirects, keeps cookies, never leaves for ChatGPT by itself."""
    return httpx.Client(follow_redirects=True, timeout=60)


def through_provider(
    server: Server, provider: LocalProvider, client_id: str, session: httpx.Client
) -> httpx.Response:
    """From ChatGPT's redirect to whatever page the sign-in ends on, via the provider."""
    login = session.get(authorize_url(server, client_id))
    assert login.status_code == 200, login.text
    assert "Sign in with Example ID" in login.text
    answer = session.get(server.url + start_form(login.text))
    visited = [str(r.url) for r in [*answer.history, answer]]
    # Nowhere but the server and its provider: never the GPT, let alone an unregistered URI.
    assert all(url.startswith((server.url, provider.url)) for url in visited), visited
    return answer


def allow(server: Server, session: httpx.Client, consent: httpx.Response) -> str:
    """Allow on the consent page; the code ChatGPT receives."""
    decided = session.post(
        f"{server.url}/oauth/authorize",
        data=hidden_fields(consent.text) | {"decision": "allow"},
        follow_redirects=False,
    )
    assert decided.status_code == 303, decided.text
    location = decided.headers["location"]
    assert location.startswith(GPT_CALLBACK + "?")
    query = parse_qs(urlsplit(location).query)
    assert query["state"] == ["gpt-state"]
    return query["code"][0]


def signed_in_user(
    server: Server, provider: LocalProvider, gpt_client: tuple[str, str]
) -> tuple[str, str]:
    """Sign in through the provider, allow, exchange the code; the userId and access token."""
    client_id, secret = gpt_client
    with browser() as session:
        consent = through_provider(server, provider, client_id, session)
        assert consent.status_code == 200, consent.text
        assert "Allow access?" in consent.text
        code = allow(server, session, consent)
    tokens = httpx.post(
        f"{server.url}/oauth/token",
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": GPT_CALLBACK},
        auth=(client_id, secret),
    )
    assert tokens.status_code == 200, tokens.text
    access = tokens.json()["access_token"]
    me = httpx.get(f"{server.url}/api/v1/gpt/me", headers={"Authorization": f"Bearer {access}"})
    assert me.status_code == 200, me.text
    return me.json()["userId"], access


def test_a_provider_user_signs_in_and_the_gpt_acts_as_them(
    server: Server, provider: LocalProvider, gpt_client: tuple[str, str]
) -> None:
    user_id, _ = signed_in_user(server, provider, gpt_client)
    assert user_id == "alice@example.com"

    # What went to the provider: state, nonce and PKCE S256, on the registered callback.
    sent = provider.authorize_requests[-1]
    assert sent["code_challenge_method"] == "S256" and len(sent["code_challenge"]) == 43
    assert sent["nonce"] and sent["state"] and sent["scope"] == "openid email profile"
    assert sent["redirect_uri"] == f"{server.url}/oauth/oidc/callback"
    assert provider.token_requests[-1]["code_verifier"]

    # The link is the provider's subject: a new email address is still the same user.
    provider.identity = Identity("subject-1", "alice.new@example.org")
    assert signed_in_user(server, provider, gpt_client)[0] == "alice@example.com"
    listed = run_cli(server, "users", "list")
    assert "alice.new" not in listed and listed.count("alice@example.com") == 1

    # A user from the provider has no password to sign in with.
    client_id, _ = gpt_client
    with browser() as session:
        login = session.get(authorize_url(server, client_id))
        form = hidden_fields(login.text) | {
            "username": "alice@example.com",
            "password": "!external",
        }
        refused = session.post(f"{server.url}/oauth/authorize", data=form)
    assert refused.status_code == 401


def test_a_provider_user_never_takes_over_a_local_account_of_the_same_name(
    server: Server, provider: LocalProvider, gpt_client: tuple[str, str]
) -> None:
    run_cli(server, "users", "create", "--username", "bob@example.com", stdin="a long password\n")
    provider.identity = Identity("subject-of-another-bob", "bob@example.com")
    user_id, _ = signed_in_user(server, provider, gpt_client)
    first, fallback = external_usernames("bob@example.com", provider.url, "subject-of-another-bob")
    assert user_id == fallback != first == "bob@example.com"


def test_a_disabled_user_stays_refused(
    server: Server, provider: LocalProvider, gpt_client: tuple[str, str]
) -> None:
    provider.identity = Identity("subject-carol", "carol@example.com")
    user_id, access = signed_in_user(server, provider, gpt_client)
    run_cli(server, "users", "disable", user_id)
    with browser() as session:
        page = through_provider(server, provider, gpt_client[0], session)
    assert page.status_code == 403
    assert "is disabled" in page.text and "Allow" not in page.text
    status = httpx.get(f"{server.url}/api/v1/gpt/me", headers={"Authorization": f"Bearer {access}"})
    assert status.status_code == 401


@pytest.mark.parametrize(
    ("identity", "message"),
    [
        (Identity("subject-mallory", "mallory@elsewhere.test"), "elsewhere.test may not sign in"),
        (Identity("subject-unverified", "eve@example.com", False), "no verified email"),
        (Identity("subject-no-email"), "no verified email"),
    ],
)
def test_only_the_allowed_domains_sign_in(
    server: Server,
    provider: LocalProvider,
    gpt_client: tuple[str, str],
    identity: Identity,
    message: str,
) -> None:
    provider.identity = identity
    with browser() as session:
        page = through_provider(server, provider, gpt_client[0], session)
    assert page.status_code == 403
    assert message in page.text
    assert identity.sub not in run_cli(server, "users", "list")


@pytest.mark.parametrize(
    ("tamper", "status", "message"),
    [
        ("nonce", 400, "ID token from Example ID is not valid (Invalid claim: 'nonce')"),
        ("audience", 400, "ID token from Example ID is not valid (Invalid claim: 'aud')"),
        ("expired", 400, "ID token from Example ID is not valid (The token is expired)"),
        ("issuer", 400, "ID token from Example ID is not valid (Invalid claim: 'iss')"),
        ("signature", 400, "ID token from Example ID is not valid (bad_signature)"),
        ("state", 400, "did not start in this browser"),
        ("error", 403, "Example ID did not sign you in (access_denied): The user said no"),
    ],
)
def test_a_bad_answer_of_the_provider_is_an_error_page(
    server: Server,
    provider: LocalProvider,
    gpt_client: tuple[str, str],
    tamper: str,
    status: int,
    message: str,
) -> None:
    provider.tamper = tamper  # type: ignore[assignment]
    provider.identity = Identity(f"subject-{tamper}", f"{tamper}@example.com")
    with browser() as session:
        page = through_provider(server, provider, gpt_client[0], session)
    assert page.status_code == status, page.text
    assert message in unescape(page.text)
    assert "Cannot sign in" in page.text and "ticket" not in page.text
    assert f"{tamper}@example.com" not in run_cli(server, "users", "list")


def test_the_answer_counts_only_in_the_browser_that_asked_and_only_once(
    server: Server, provider: LocalProvider, gpt_client: tuple[str, str]
) -> None:
    with browser() as session:
        login = session.get(authorize_url(server, gpt_client[0]))
        to_provider = session.get(server.url + start_form(login.text), follow_redirects=False)
        assert to_provider.status_code == 303
        assert to_provider.headers["location"].startswith(f"{provider.url}/authorize?")
        cookie = to_provider.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=lax" in cookie and "path=/oauth/oidc/" in cookie
        back = session.get(to_provider.headers["location"], follow_redirects=False)
        callback = back.headers["location"]

        # Login CSRF: another browser (no cookie) brought to the same answer gets nothing.
        with browser() as other:
            stolen = other.get(callback)
        assert stolen.status_code == 400
        assert "did not start in this browser" in stolen.text

        first = session.get(callback)
        assert first.status_code == 200 and "Allow access?" in first.text
        # The cookie was cleared; with it put back, the answer still counts only once.
        session.cookies.set("gptactions_oidc_state", parse_qs(urlsplit(callback).query)["state"][0])
        again = session.get(callback)
    assert again.status_code == 400
    assert "expired or was already used" in again.text


def test_an_unregistered_redirect_uri_never_reaches_the_provider(
    server: Server, provider: LocalProvider, gpt_client: tuple[str, str]
) -> None:
    before = len(provider.authorize_requests)
    with browser() as session:
        url = authorize_url(server, gpt_client[0], redirect_uri="https://evil.example/callback")
        page = session.get(url.replace("/oauth/authorize?", "/oauth/oidc/start?"))
    assert page.status_code == 400 and not page.history
    assert "not one registered" in page.text
    assert len(provider.authorize_requests) == before


def test_oidc_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs GPTACTIONS_OIDC_CLIENT_ID"):
        Settings(oidc_issuer="https://accounts.example")
    with pytest.raises(ValueError, match="must be an https URL"):
        Settings(oidc_issuer="http://idp.example", oidc_client_id="x")
    with pytest.raises(ValueError, match="must include openid"):
        Settings(oidc_scopes="email profile")
    settings = Settings(
        oidc_issuer="https://accounts.example/", oidc_client_id="x", oidc_allowed_domains="A.com"
    )
    assert settings.oidc_issuer == "https://accounts.example"
    assert settings.oidc_allowed_domains == ["a.com"]


async def test_an_unreachable_provider_is_an_error_page_and_starts_are_limited(
    tmp_path: Path,
) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'test.db'}",
        api_key=API_KEY,
        oidc_issuer=f"http://127.0.0.1:{free_port()}",
        oidc_client_id="gptactions",
        login_rate_limit="2/minute",
    )
    async with running_app(settings, FakeBackend()) as api:
        client = await api.runtime.oauth.create_client("GPT", (GPT_CALLBACK,))
        params = {
            "response_type": "code",
            "client_id": client.info.id,
            "redirect_uri": GPT_CALLBACK,
            "state": "s",
        }
        login = await api.http.get("/oauth/authorize", params=params)
        assert "Sign in with 127.0.0.1" in login.text
        page = await api.http.get("/oauth/oidc/start", params=params)
        again = await api.http.get("/oauth/oidc/start", params=params)
        limited = await api.http.get("/oauth/oidc/start", params=params)
        privacy = await api.http.get("/privacy")
    assert page.status_code == again.status_code == 502
    assert "127.0.0.1 could not be reached" in page.text
    assert "location" not in page.headers
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 0
    assert "too many sign-in attempts" in limited.text
    assert "If you sign in with 127.0.0.1" in privacy.text


async def test_without_a_provider_there_is_no_provider_sign_in(api: ApiClient) -> None:
    client = await api.runtime.oauth.create_client("GPT", (GPT_CALLBACK,))
    params = {"response_type": "code", "client_id": client.info.id}
    params |= {"redirect_uri": GPT_CALLBACK, "state": "s"}
    login = await api.http.get("/oauth/authorize", params=params)
    assert login.status_code == 200 and "Sign in with" not in login.text
    for path in ("/oauth/oidc/start", "/oauth/oidc/callback"):
        page = await api.http.get(path, params=params)
        assert page.status_code == 404
        assert "not configured" in page.text


async def test_provider_users_are_linked_by_issuer_and_subject(app_factory: Any) -> None:
    async with app_factory() as api:
        users = api.runtime.users
        await users.create("erin@example.com", "a long password")
        first = await users.sign_in_external("https://idp.one", "s-1", "erin@example.com")
        assert first.username.startswith("erin@example.com-")  # the local erin keeps her name
        again = await users.sign_in_external("https://idp.one", "s-1", "renamed@example.com")
        assert again.id == first.id
        other_issuer = await users.sign_in_external("https://idp.two", "s-1", None)
        assert other_issuer.id != first.id and other_issuer.username.startswith("user-")
        assert await users.sign_in("erin@example.com", "a long password", address="a")
        await users.disable(first.username)
        with pytest.raises(UserDisabled):
            await users.sign_in_external("https://idp.one", "s-1", "erin@example.com")
        await users.delete(first.username)
        recreated = await users.sign_in_external("https://idp.one", "s-1", "erin@example.com")
        assert recreated.id != first.id and recreated.disabled_at is None
