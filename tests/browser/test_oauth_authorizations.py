"""A GPT's user follows the consent page's link, signs in, and revokes the GPT, in Chromium."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

from tests.browser.conftest import SCREENSHOTS, chatgpt_tab
from tests.serving import Server, run_cli

CALLBACK = "https://chat.openai.com/aip/g-0a1b2c3d4e5f6a7b/oauth/callback"
PASSWORD = "a long enough password"


def test_a_user_revokes_a_gpt_from_the_page_the_consent_page_links_to(
    browser: Any, server: Server
) -> None:
    run_cli(server, "users", "create", "--username", "dora", stdin=PASSWORD + "\n")
    out = run_cli(
        server, "oauth", "clients", "create", "--name", "Recipe GPT",
        "--redirect-uri", CALLBACK, "--scope", "chat", "--scope", "actions",
    ).splitlines()  # fmt: skip
    client_id = out[-2].removeprefix("client_id=")
    secret = out[-1].removeprefix("client_secret=")
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": CALLBACK,
        "scope": "chat actions",
        "state": "s-1",
    }
    with chatgpt_tab(browser) as tab:
        page = tab.page
        page.goto(f"{server.url}/oauth/authorize?{urlencode(params)}")
        page.get_by_label("Username", exact=True).fill("dora")
        page.get_by_label("Password", exact=True).fill(PASSWORD)
        page.get_by_role("button", name="Sign in", exact=True).click()
        link = page.get_by_role("link", name="your applications page")
        assert link.get_attribute("href") == "/oauth/authorizations"
        page.get_by_role("button", name="Allow", exact=True).click()
        page.wait_for_url(CALLBACK + "?**")
        code = parse_qs(urlsplit(tab.landed[0]).query)["code"][0]
        token = httpx.post(
            f"{server.url}/oauth/token",
            data={"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK},
            auth=(client_id, secret),
        ).json()["access_token"]
        bearer = {"Authorization": f"Bearer {token}"}
        assert httpx.get(f"{server.url}/api/v1/gpt/me", headers=bearer).status_code == 200

        page.goto(f"{server.url}/oauth/authorizations")
        page.get_by_label("Username", exact=True).fill("dora")
        page.get_by_label("Password", exact=True).fill(PASSWORD)
        page.get_by_role("button", name="Sign in", exact=True).click()
        page.get_by_role("heading", name="Recipe GPT").wait_for()
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "oauth-authorizations.png"), full_page=True)
        page.get_by_role("button", name="Revoke", exact=True).click()
        page.get_by_role("status").wait_for()
        assert (
            "Recipe GPT can no longer use this server as you."
            in page.get_by_role("status").inner_text()
        )
        assert page.get_by_text("No application may use this server as you.").is_visible()
    assert tab.problems == [], tab.problems
    assert httpx.get(f"{server.url}/api/v1/gpt/me", headers=bearer).status_code == 401
