"""The console signs in with OAuth (authorization code + PKCE against its own server) and sends
requests as the signed-in user."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from tests.browser.conftest import Console
from tests.browser.test_oauth_flow import PASSWORD
from tests.serving import Server, run_cli

pytestmark = pytest.mark.browser

USER = "carol-console"


@pytest.fixture(scope="module")
def console_client(server: Server) -> str:
    """A user and the console's public client, registered with the CLI as the docs say."""
    run_cli(server, "users", "create", "--username", USER, stdin=PASSWORD + "\n")
    out = run_cli(
        server,
        "oauth", "clients", "create", "--name", "Console", "--public",
        "--redirect-uri", server.url + "/",
    ).splitlines()  # fmt: skip
    assert out[-1].startswith("client_id=")  # and no secret: a public client has none
    return out[-1].removeprefix("client_id=")


def sign_in(console: Console, console_client: str) -> str:
    """Sign in from the console as a user would; the access token it then uses."""
    page = console.open(key=False).page
    page.get_by_text("Sign in with OAuth").click()
    assert console.server.url + "/" in page.locator("#oauth-client-help").inner_text()
    page.get_by_label("OAuth client ID", exact=True).fill(console_client)
    page.get_by_role("button", name="Sign in", exact=True).click()

    # The server's own sign-in and consent pages, then back to the console with a code.
    page.wait_for_url(f"{console.server.url}/oauth/authorize?**")
    assert "code_challenge_method=S256" in page.url and "code_challenge=" in page.url
    page.get_by_label("Username", exact=True).fill(USER)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.get_by_role("button", name="Allow", exact=True).click()
    page.wait_for_selector("html[data-ready=true]")
    page.get_by_text(f"Signed in as {USER}").wait_for()
    assert "code=" not in page.url  # the single-use code is kept out of the history
    token: str = page.get_by_label("API key", exact=True).input_value()
    assert token.startswith("gpto_")
    return token


def as_user(server: Server, token: str) -> httpx.Response:
    """`GET /me` with `token`."""
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.get(f"{server.url}/api/v1/gpt/me", headers=headers, timeout=30)


def test_the_console_signs_in_with_oauth_and_acts_as_the_user(
    console: Console, console_client: str
) -> None:
    token = sign_in(console, console_client)
    page = console.page

    # Requests go with the user's token: /me names the user, the conversation is theirs.
    console.choose("GET /api/v1/gpt/me")
    assert console.send().startswith("200")
    me = json.loads(console.body())
    assert me["userId"] == USER and me["authentication"] == "oauth"
    # The example and the check follow the document a signed-in user's token reads
    # (/openapi.json?auth=oauth): no userId, which the token fills in (another one is a 403).
    console.choose("POST /api/v1/gpt/conversations")
    page.get_by_role("button", name="Reset to example").click()
    example = json.loads(page.get_by_label("Request Payload", exact=True).input_value())
    assert "userId" not in example
    console.payload(json.dumps({**example, "message": "Say hi.", "maxTokens": 8}))
    assert "Not what the document asks for" not in page.locator("#payload-help").inner_text()
    assert console.send().startswith("200")
    logs = httpx.get(
        f"{console.server.url}/api/v1/gpt/logs",
        params={"userId": USER},
        headers={"Authorization": f"Bearer {console.server.key}"},
        timeout=30,
    ).json()
    assert [item["message"] for item in logs] == ["Say hi."]
    console.shot("14-console-signed-in")

    # Signing out revokes the token.
    page.get_by_role("button", name="Sign out", exact=True).click()
    page.get_by_text("Signed out").wait_for()
    assert page.get_by_label("API key", exact=True).input_value() == ""
    assert as_user(console.server, token).status_code == 401


def test_a_tab_left_open_stays_signed_in_with_the_refresh_token(
    console: Console, console_client: str
) -> None:
    """A minute before the access token expires, the console trades its refresh token (kept in
    the tab's sessionStorage only) for a new pair; the old pair stops working (rotation)."""
    page = console.page
    page.clock.install()  # the page's timers, moved forward below instead of waited for
    first = sign_in(console, console_client)
    slot = "gptactions.oauthRefresh"
    assert page.evaluate(f"localStorage.getItem('{slot}')") is None
    assert page.evaluate(f"JSON.parse(sessionStorage.getItem('{slot}')).accessToken") == first

    page.clock.fast_forward("59:05")  # the access token lives an hour: past its refresh time
    page.wait_for_function(
        "old => document.getElementById('api-key').value !== old", arg=first, timeout=30_000
    )
    second = page.get_by_label("API key", exact=True).input_value()
    assert second.startswith("gpto_")
    assert as_user(console.server, second).json()["userId"] == USER
    assert as_user(console.server, first).status_code == 401  # the old pair is revoked
    assert page.evaluate(f"JSON.parse(sessionStorage.getItem('{slot}')).accessToken") == second

    # A reload of the tab keeps the sign-in; signing out revokes it and forgets the refresh token.
    page.reload()
    page.wait_for_selector("html[data-ready=true]")
    page.get_by_text(f"Signed in as {USER}").wait_for()
    page.get_by_role("button", name="Sign out", exact=True).click()
    page.get_by_text("Signed out").wait_for()
    assert page.evaluate(f"sessionStorage.getItem('{slot}')") is None
    assert as_user(console.server, second).status_code == 401


def test_a_short_lived_access_token_is_refreshed_once_per_lifetime_not_in_a_loop(
    console: Console, console_client: str
) -> None:
    """With access tokens of a minute (the shortest GPTACTIONS_OAUTH_ACCESS_TOKEN_LIFETIME), the
    console refreshes when three quarters of each token's life are gone: once per token, not
    again and again because the token lives no longer than "a minute ahead"."""
    page = console.page
    page.clock.install()
    refreshes: list[str] = []

    def a_minute(route: Any) -> None:
        answer = route.fetch()  # the server's real answer, told to expire in 60 s
        tokens = answer.json()
        if "grant_type=refresh_token" in (route.request.post_data or ""):
            refreshes.append(tokens["access_token"])
        route.fulfill(response=answer, json={**tokens, "expires_in": 60})

    def refreshed(count: int) -> bool:
        """Whether `count` refreshes were made, after giving the page up to 5 s to make them."""
        for _ in range(50):
            if len(refreshes) >= count:
                break
            page.wait_for_timeout(100)
        return len(refreshes) == count

    page.route("**/oauth/token", a_minute)
    sign_in(console, console_client)
    # The page's time stops a second from now and moves only when told: an installed clock
    # otherwise flows with real time, and on a busy machine that ate the one second of margin
    # a fixed 44 s left before the refresh. (A second ahead: pausing in the past is an error.)
    now = page.evaluate("Date.now()")
    refresh_at = page.evaluate(
        "JSON.parse(sessionStorage.getItem('gptactions.oauthRefresh')).refreshAt"
    )
    page.clock.pause_at(datetime.fromtimestamp((now + 1000) / 1000, UTC))
    page.clock.run_for(refresh_at - (now + 1000) - 1000)  # a second short of 3/4 of the minute
    page.wait_for_timeout(300)
    assert refreshes == []
    page.clock.run_for(2_000)
    assert refreshed(1)
    page.clock.run_for(30_000)  # the new token is 30 s old: not yet
    page.wait_for_timeout(300)
    assert len(refreshes) == 1
    page.clock.run_for(20_000)  # 50 s old: its turn
    assert refreshed(2)
    assert page.get_by_label("API key", exact=True).input_value() == refreshes[-1]


def test_signing_out_clears_the_history_of_the_user(console: Console, console_client: str) -> None:
    """On a shared browser the next person must not find the signed-out user's messages."""
    sign_in(console, console_client)
    page = console.page
    message = "A question only the signed-in user should see again."
    console.choose("POST /api/v1/gpt/conversations")
    console.payload(json.dumps({"message": message, "maxTokens": 4}))
    assert console.send().startswith("200")
    page.get_by_role("tab", name="History").click()
    history = page.locator("#history-list")
    assert message in history.inner_text()
    assert message in page.evaluate("localStorage.getItem('gptactions.history')")

    page.get_by_role("button", name="Sign out", exact=True).click()
    page.get_by_text("Signed out").wait_for()
    assert "history" in page.locator("#signin-status").inner_text()
    assert history.locator(".history-item").count() == 0

    page.reload()
    page.wait_for_selector("html[data-ready=true]")
    page.get_by_role("tab", name="History").click()
    assert history.locator(".history-item").count() == 0
    assert page.evaluate("localStorage.getItem('gptactions.history')") is None
    assert message not in (page.evaluate("sessionStorage.getItem('gptactions.session')") or "")
    assert page.locator("#transcript").is_hidden()


def test_a_sign_in_answer_not_started_here_is_refused(console: Console) -> None:
    page = console.page
    page.goto(f"{console.server.url}/?code=stolen&state=forged")
    page.wait_for_selector("html[data-ready=true]")
    page.get_by_text("does not match a sign-in started here").wait_for()
    assert "stolen" not in page.url
    assert page.get_by_label("API key", exact=True).input_value() == ""
