"""Forgetting the key forgets what the console kept of its user: on a shared browser the next
person must not find the previous one's messages (history, conversation, drafts, log filters)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.browser.conftest import Console

pytestmark = pytest.mark.browser

USER = "browser-forget"
MESSAGE = "My private question, not for the next person at this browser."


def kept(page: Any) -> dict[str, str | None]:
    """What the page keeps of a user in the browser's storage, by slot."""
    return dict(
        page.evaluate(
            """() => ({
              history: localStorage.getItem("gptactions.history"),
              session: sessionStorage.getItem("gptactions.session"),
              logsFilters: sessionStorage.getItem("gptactions.logsFilters"),
            })"""
        )
    )


def test_forgetting_the_key_clears_the_history_and_what_the_tab_kept(console: Console) -> None:
    page = console.open().page
    console.choose("POST /api/v1/gpt/conversations")
    console.payload(json.dumps({"userId": USER, "message": MESSAGE, "maxTokens": 4}))
    assert console.send().startswith("200")
    # The logs of that user, their filter kept for the tab.
    page.get_by_role("tab", name="Logs").click()
    page.locator("#logs-form").get_by_label("userId").fill(USER)
    page.get_by_role("button", name="Load logs").click()
    page.locator("#logs-table tbody tr").first.wait_for()
    page.get_by_role("tab", name="History").click()
    history = page.locator("#history-list")
    assert history.locator(".history-item").count() == 1
    assert MESSAGE in history.inner_text()
    before = kept(page)
    assert MESSAGE in str(before["history"]) and MESSAGE in str(before["session"])
    assert USER in str(before["logsFilters"])

    page.get_by_role("button", name="Forget").click()
    assert "Key forgotten" in page.locator("#key-note").inner_text()
    assert "history" in page.locator("#key-note").inner_text()
    assert history.locator(".history-item").count() == 0
    assert page.locator("#transcript").is_hidden()
    assert MESSAGE not in page.get_by_label("Request Payload", exact=True).input_value()
    assert page.locator("#logs-table tbody tr").count() == 0

    page.reload()
    page.wait_for_selector("html[data-ready=true]")
    page.get_by_role("tab", name="History").click()
    assert history.locator(".history-item").count() == 0
    assert "Nothing sent yet" in history.inner_text()
    assert page.locator("#transcript").is_hidden()
    assert MESSAGE not in page.get_by_label("Request Payload", exact=True).input_value()
    assert page.locator("#logs-form").get_by_label("userId").input_value() == ""
    after = kept(page)
    assert after["history"] is None and after["logsFilters"] is None
    assert MESSAGE not in str(after["session"]) and USER not in str(after["session"])
    # A neutral preference stays: the endpoint chosen.
    assert (
        page.get_by_label("Endpoint", exact=True).input_value() == "post /api/v1/gpt/conversations"
    )
