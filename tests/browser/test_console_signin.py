"""The console signs in with OAuth (authorization code + PKCE against its own server) and sends
requests as the signed-in user."""

from __future__ import annotations

import json

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
    assert out[-2].startswith("client_id=") and out[-1] == "client_secret="
    return out[-2].removeprefix("client_id=")


def test_the_console_signs_in_with_oauth_and_acts_as_the_user(
    console: Console, console_client: str
) -> None:
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
    token = page.get_by_label("API key", exact=True).input_value()
    assert token.startswith("gpto_")

    # Requests go with the user's token: /me names the user, the conversation is theirs.
    console.choose("GET /api/v1/gpt/me")
    assert console.send().startswith("200")
    me = json.loads(console.body())
    assert me["userId"] == USER and me["authentication"] == "oauth"
    console.choose("POST /api/v1/gpt/conversations")
    console.payload(json.dumps({"message": "Say hi.", "maxTokens": 8}))
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
    refused = httpx.get(
        f"{console.server.url}/api/v1/gpt/me",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert refused.status_code == 401


def test_a_sign_in_answer_not_started_here_is_refused(console: Console) -> None:
    page = console.page
    page.goto(f"{console.server.url}/?code=stolen&state=forged")
    page.wait_for_selector("html[data-ready=true]")
    page.get_by_text("does not match a sign-in started here").wait_for()
    assert "stolen" not in page.url
    assert page.get_by_label("API key", exact=True).input_value() == ""
