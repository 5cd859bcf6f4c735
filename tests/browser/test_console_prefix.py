"""The console behind nginx under a path prefix (`location /gpt/ { proxy_pass …/; }` with
`X-Forwarded-Prefix`): the page, its files, its requests and the pages the server links all stay
under the prefix."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.browser.conftest import open_console
from tests.cluster.nginx import REQUIRED_VARIABLE, nginx_binary, run_prefixed
from tests.serving import Server

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def prefixed(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """nginx in front of the shared server, under /gpt; its base URL."""
    binary = nginx_binary()
    if binary is None:
        if os.environ.get(REQUIRED_VARIABLE):
            pytest.fail("nginx is required here (Debian's nginx package)")
        pytest.skip("nginx is not installed (Debian's nginx package)")
    upstream = server.url.removeprefix("http://")
    with run_prefixed(binary, tmp_path_factory.mktemp("nginx-prefix"), upstream, "/gpt") as base:
        yield base


def test_the_console_works_under_a_path_prefix(browser: Any, server: Server, prefixed: str) -> None:
    user = f"browser-prefix-{uuid.uuid4().hex[:8]}"
    for _ in range(2):  # two rejected requests: two log rows, one page each
        httpx.post(
            f"{server.url}/api/v1/gpt/conversations",
            json={"userId": user, "message": "Hello", "maxTokens": 0},
            headers={"Authorization": f"Bearer {server.key}"},
            timeout=30,
        )
    with open_console(browser, server) as console:
        page = console.page
        page.goto(prefixed + "/")
        page.wait_for_selector("html[data-ready=true]")  # its script and the document loaded
        assert page.locator(".topbar").evaluate("el => getComputedStyle(el).display") == "flex"
        page.get_by_label("API key", exact=True).fill(server.key)
        assert page.locator("#server").input_value() == prefixed
        console.choose("GET /api/v1/gpt/status")
        assert console.send().startswith("200")

        page.get_by_role("tab", name="GPT Actions readiness").click()
        page.wait_for_function(
            "() => Number(document.querySelector('#readiness').dataset.checked) > 0"
        )
        assert "Could not check" not in page.locator("#readiness").inner_text()
        assert (
            f"{prefixed}/openapi.json?scopes=chat,actions"
            in page.locator("#readiness").inner_text()
        )

        # The server's Link header carries the prefix: the next page is read through nginx too.
        page.get_by_role("tab", name="Logs").click()
        form = page.locator("#logs-form")
        form.get_by_label("userId").fill(user)
        form.get_by_label("limit").fill("1")
        form.get_by_label("kind").select_option("rejected")
        page.get_by_role("button", name="Load logs").click()
        page.locator("#logs-table tbody tr").first.wait_for()
        page.get_by_role("button", name="Next page →").click()
        page.wait_for_function(
            "() => document.querySelector('#logs-page').textContent.startsWith('Page 2 · 1 row')"
        )

        footer = page.locator("footer a").evaluate_all("links => links.map((a) => a.href)")
        assert footer == [f"{prefixed}/openapi.json", f"{prefixed}/openapi.yaml"]
        origin = prefixed.removesuffix("/gpt")
        stray = [u for u in console.requests if u.startswith(origin) and not u.startswith(prefixed)]
        assert stray == []
        console.shot("16-under-a-prefix")
