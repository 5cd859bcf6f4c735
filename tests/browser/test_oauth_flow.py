"""The OAuth authorization code flow in Chromium, as ChatGPT runs it for a GPT's user."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from tests.browser.conftest import chatgpt_tab
from tests.serving import Server, run_cli

GPT_CALLBACK = "https://chat.openai.com/aip/g-5f1c2e9a0b7d4e3f/oauth/callback"
PASSWORD = "a long enough password"


@pytest.fixture(scope="module")
def gpt_client(server: Server) -> tuple[str, str]:
    """A user, alice, and a client registered with the CLI as a GPT's builder would."""
    run_cli(server, "users", "create", "--username", "alice", stdin=PASSWORD + "\n")
    out = run_cli(
        server,
        "oauth", "clients", "create", "--name", "Trip planner GPT",
        "--redirect-uri", GPT_CALLBACK, "--scope", "chat", "--scope", "logs",
    ).splitlines()  # fmt: skip
    client_id = out[-2].removeprefix("client_id=")
    secret = out[-1].removeprefix("client_secret=")
    assert out[-2].startswith("client_id=") and secret.startswith("gptcs_")
    return client_id, secret


def sign_in_and_allow(browser: Any, server: Server, client_id: str, state: str) -> str:
    """ChatGPT sends the user to /oauth/authorize; the user signs in and allows; the code."""
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": GPT_CALLBACK,
        "scope": "chat logs",
        "state": state,
    }
    with chatgpt_tab(browser) as tab:
        page = tab.page
        page.goto(f"{server.url}/oauth/authorize?{urlencode(params)}")
        page.get_by_label("Username", exact=True).fill("alice")
        page.get_by_label("Password", exact=True).fill(PASSWORD)
        page.get_by_role("button", name="Sign in", exact=True).click()
        page.get_by_text("Trip planner GPT").wait_for()
        assert page.get_by_role("button", name="Deny", exact=True).is_visible()
        page.get_by_role("button", name="Allow", exact=True).click()
        page.wait_for_url(GPT_CALLBACK + "?**")
    problems, landed = tab.problems, tab.landed
    assert problems == [], problems
    assert len(landed) == 1 and landed[0].startswith(GPT_CALLBACK + "?")
    query = parse_qs(urlsplit(landed[0]).query)
    assert query["state"] == [state]
    return query["code"][0]


def test_a_gpt_user_signs_in_and_the_gpt_gets_tokens(
    browser: Any, server: Server, gpt_client: tuple[str, str]
) -> None:
    client_id, secret = gpt_client
    meta = httpx.get(f"{server.url}/.well-known/oauth-authorization-server").json()
    token_url = meta["token_endpoint"]

    # client_secret_post
    code = sign_in_and_allow(browser, server, client_id, "state-one")
    exchange = {"grant_type": "authorization_code", "code": code, "redirect_uri": GPT_CALLBACK}
    posted = httpx.post(
        token_url, data=exchange | {"client_id": client_id, "client_secret": secret}
    )
    assert posted.status_code == 200, posted.text
    # The code is single-use.
    assert (
        httpx.post(
            token_url, data=exchange | {"client_id": client_id, "client_secret": secret}
        ).json()["error"]
        == "invalid_grant"
    )

    # client_secret_basic
    code = sign_in_and_allow(browser, server, client_id, "state-two")
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    auth = {"Authorization": f"Basic {basic}"}
    tokens = httpx.post(token_url, data=exchange | {"code": code}, headers=auth).json()
    assert tokens["scope"] == "chat logs"

    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    reply = httpx.post(
        f"{server.url}/api/v1/gpt/conversations",
        json={"message": "Say hi", "maxTokens": 8},
        headers=bearer,
        timeout=120,
    )
    assert reply.status_code == 200, reply.text
    logs = httpx.get(f"{server.url}/api/v1/gpt/logs", headers=bearer).json()
    assert {item["userId"] for item in logs} == {"alice"}

    refreshed = httpx.post(
        token_url,
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        headers=auth,
    )
    assert refreshed.status_code == 200, refreshed.text
    fresh = refreshed.json()
    assert fresh["access_token"] != tokens["access_token"]

    revoked = httpx.post(
        meta["revocation_endpoint"],
        data={"token": fresh["access_token"], "client_id": client_id, "client_secret": secret},
    )
    assert revoked.status_code == 200
    status = httpx.get(
        f"{server.url}/api/v1/gpt/status",
        headers={"Authorization": f"Bearer {fresh['access_token']}"},
    )
    assert status.status_code == 401


def test_an_unregistered_redirect_uri_is_an_error_page_in_the_browser(
    browser: Any, server: Server, gpt_client: tuple[str, str]
) -> None:
    client_id, _ = gpt_client
    context = browser.new_context()
    page = context.new_page()
    left: list[str] = []
    page.route("https://**", lambda route: (left.append(route.request.url), route.abort()))
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": "https://attacker.example/callback",
        "state": "s",
    }
    try:
        answer = page.goto(f"{server.url}/oauth/authorize?{urlencode(params)}")
        assert answer is not None and answer.status == 400
        assert page.get_by_role("heading", name="Cannot sign in").is_visible()
    finally:
        context.close()
    assert left == []
