"""The console's Usage tab: requests and tokens per key and per user, from GET /usage."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.browser.conftest import Console

pytestmark = pytest.mark.browser


def test_the_usage_tab_lists_keys_and_users(console: Console) -> None:
    user = f"usage-{uuid.uuid4().hex[:8]}"
    answer = httpx.post(
        f"{console.server.url}/api/v1/gpt/conversations",
        json={"userId": user, "message": "Hi", "maxTokens": 4},
        headers={"Authorization": f"Bearer {console.server.key}"},
        timeout=300,
    )
    assert answer.status_code == 200, answer.text
    usage = answer.json()["usage"]
    tokens = usage["promptTokens"] + usage["completionTokens"]

    console.open()
    console.page.get_by_role("tab", name="Usage").click()
    row = console.page.locator("#usage-tables table", has_text="Per user").locator(
        "tr", has_text=user
    )
    row.wait_for()

    cells = [str(text).strip() for text in row.locator("td").all_text_contents()]
    sums = [1, 0, usage["promptTokens"], usage["completionTokens"], tokens]
    assert cells == [user, "default", *(f"{n:,}" for n in sums)]
    keys = console.page.locator("#usage-tables table", has_text="Per key")
    assert keys.locator("tbody tr").count() >= 1
    assert "request" in str(console.page.locator("#usage-message").text_content())

    console.page.locator("#usage-window").select_option("1h")
    console.page.get_by_role("button", name="Load usage").click()
    row.wait_for()
    console.shot("console-usage-tab")
