"""Signing in through an OpenID Connect provider in Chromium, as a GPT's user does."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from tests.browser.conftest import chatgpt_tab
from tests.oidc_provider import Identity, LocalProvider, serve_provider
from tests.serving import Server, run_cli, serve

GPT_CALLBACK = "https://chat.openai.com/aip/g-0c1d2e3f4a5b6c7d/oauth/callback"
KEY = "gpta_browser_oidc_key_0123456789abcdefghijkl"


@pytest.fixture(scope="module")
def provider() -> Iterator[LocalProvider]:
    """The provider, on a local port."""
    with serve_provider(LocalProvider("gptactions-browser", "browser-secret", "")) as running:
        yield running


@pytest.fixture(scope="module")
def oidc_server(
    provider: LocalProvider, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A server that lets users sign in with the provider."""
    env = {
        "GPTACTIONS_OIDC_ISSUER": provider.url,
        "GPTACTIONS_OIDC_CLIENT_ID": provider.client_id,
        "GPTACTIONS_OIDC_CLIENT_SECRET": provider.client_secret,
        "GPTACTIONS_OIDC_NAME": "Example ID",
    }
    with serve(tmp_path_factory.mktemp("oidc-browser"), key=KEY, env=env, timeout=180) as up:
        provider.redirect_uri = f"{up.url}/oauth/oidc/callback"
        yield up


def test_a_gpt_user_signs_in_with_the_provider(
    browser: Any, oidc_server: Server, provider: LocalProvider
) -> None:
    out = run_cli(
        oidc_server, "oauth", "clients", "create", "--name", "Recipes GPT",
        "--redirect-uri", GPT_CALLBACK, "--scope", "chat",
    ).splitlines()  # fmt: skip
    client_id = out[-2].removeprefix("client_id=")
    secret = out[-1].removeprefix("client_secret=")
    provider.identity = Identity("browser-subject", "dana@example.com")

    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": GPT_CALLBACK,
        "scope": "chat",
        "state": "browser-state",
    }
    with chatgpt_tab(browser) as tab:
        page = tab.page
        page.goto(f"{oidc_server.url}/oauth/authorize?{urlencode(params)}")
        page.get_by_role("button", name="Sign in with Example ID", exact=True).click()
        page.get_by_text("Signed in as").wait_for()
        assert page.get_by_text("dana@example.com").is_visible()
        page.get_by_role("button", name="Allow", exact=True).click()
        page.wait_for_url(GPT_CALLBACK + "?**")
    problems, landed = tab.problems, tab.landed
    assert problems == [], problems
    assert provider.refusals == []
    query = parse_qs(urlsplit(landed[0]).query)
    assert query["state"] == ["browser-state"]

    tokens = httpx.post(
        f"{oidc_server.url}/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": query["code"][0],
            "redirect_uri": GPT_CALLBACK,
            "client_id": client_id,
            "client_secret": secret,
        },
    )
    assert tokens.status_code == 200, tokens.text
    bearer = {"Authorization": f"Bearer {tokens.json()['access_token']}"}
    me = httpx.get(f"{oidc_server.url}/api/v1/gpt/me", headers=bearer)
    assert me.json()["userId"] == "dana@example.com"
