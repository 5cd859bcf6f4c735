"""Fixes found by an audit of the console: a cancelled stream, the logs pager's focus, links to
an operation, DELETE asked first, the logs search box and its errors, 404 hints, the key field's
Enter and paths that wrap at their slashes."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest

from tests.browser.conftest import Console

pytestmark = pytest.mark.browser

ERASE = "DELETE /api/v1/gpt/me/data"


def wait_shown(console: Console, shown: int) -> str:
    """Wait for the answer after the `shown`th one; its Status Code."""
    console.page.wait_for_function(
        f"() => Number(document.querySelector('#response-panel').dataset.shown || 0) > {shown}"
    )
    return str(console.page.locator("#status-code").inner_text()).strip()


def post_conversations(console: Console, user: str, count: int) -> None:
    """`count` short conversations of `user`, straight to the API."""
    for number in range(count):
        answer = httpx.post(
            f"{console.server.url}/api/v1/gpt/conversations",
            json={"userId": user, "message": f"Say {number}.", "maxTokens": 2},
            headers={"Authorization": f"Bearer {console.server.key}"},
            timeout=120,
        )
        assert answer.status_code == 200


def open_at(console: Console, fragment: str) -> Any:
    """Load the console at `fragment` (a deep link) with the key pasted; the page."""
    page = console.page
    page.goto(f"{console.server.url}/{fragment}")
    page.wait_for_selector("html[data-ready=true]")
    page.get_by_label("API key", exact=True).fill(console.server.key)
    return page


def test_a_cancelled_stream_is_cancelled_and_keeps_what_arrived(console: Console) -> None:
    page = console.open().page
    console.choose("POST /api/v1/gpt/conversations")
    page.get_by_label("Stream").check()
    user = f"browser-cancel-{uuid.uuid4().hex[:8]}"
    console.payload(json.dumps({"userId": user, "message": "Say hi.", "maxTokens": 3}))
    assert console.send().startswith("200")
    opened = page.locator("#transcript-id").inner_text()
    assert opened.startswith("conv")

    essay = "Write a long essay about rivers."
    console.payload(json.dumps({"userId": user, "message": essay, "maxTokens": 400}))
    shown = console.shown()
    page.get_by_role("button", name="Send", exact=True).click()
    # A start's reply belongs to a new conversation, not to the one shown before.
    page.locator("#stream-progress").wait_for()
    assert page.locator("#transcript-id").inner_text() == "new"
    page.get_by_role("button", name="Cancel").click()
    assert wait_shown(console, shown) == "Cancelled"

    failure = page.locator("#failure")
    assert "cancelled; what arrived is shown" in failure.inner_text()
    assert "ended with an error" not in failure.inner_text()
    assert "aborted" not in failure.inner_text()
    assert page.locator("#schema-check").is_hidden()  # no "ended without a done event"
    assert "status-none" in str(page.locator("#status-code").get_attribute("class"))
    arrived = page.locator("#body-pretty .streamed").inner_text().strip()
    assert arrived
    # The chat shows the cancelled turn, marked so, instead of the conversation before it.
    assert page.locator("#transcript-id").inner_text() == "new"
    turns = page.locator("#transcript-turns")
    assert essay in turns.inner_text() and "Say hi." not in turns.inner_text()
    last = turns.locator(".bubble.assistant").last
    assert "cancelled" in str(last.get_attribute("class"))
    assert arrived[:20] in last.inner_text()
    assert page.evaluate("() => window.gptConsole.history.entries()[0].status") == 0
    console.shot("fix-01-stream-cancelled")


def test_the_logs_pager_keeps_the_keyboard_focus(console: Console) -> None:
    user = f"browser-pager-{uuid.uuid4().hex[:8]}"
    post_conversations(console, user, 3)
    page = console.open().page
    page.get_by_role("tab", name="Logs").click()
    form = page.locator("#logs-form")
    form.get_by_label("userId").fill(user)
    form.get_by_label("limit").fill("1")
    page.get_by_role("button", name="Load logs").click()
    page.wait_for_function(
        "() => document.querySelector('#logs-page').textContent.includes('more after this')"
    )
    pager = page.get_by_role("button", name="Next page →")
    pager.focus()
    for number in (2, 3):
        page.keyboard.press("Enter")
        page.wait_for_function(
            f"() => document.querySelector('#logs-page').textContent.startsWith('Page {number}')"
        )
        assert page.evaluate("() => document.activeElement.id") == "logs-next"
    # On the last page it is unavailable, yet keeps the focus; Enter there does nothing.
    assert pager.is_disabled()
    page.keyboard.press("Enter")
    page.wait_for_timeout(300)
    assert page.locator("#logs-page").inner_text().startswith("Page 3")
    page.keyboard.press("Shift+Tab")
    assert page.evaluate("() => document.activeElement.id") == "logs-prev"
    page.keyboard.press("Enter")
    page.wait_for_function(
        "() => document.querySelector('#logs-page').textContent.startsWith('Page 2')"
    )
    assert page.evaluate("() => document.activeElement.id") == "logs-prev"


def test_an_operation_has_a_link_and_back_goes_to_the_last_one(console: Console) -> None:
    page = open_at(console, "#/getStatus")
    endpoint = page.get_by_label("Endpoint", exact=True)
    assert endpoint.input_value() == "get /api/v1/gpt/status"
    console.choose("GET /api/v1/gpt/logs")
    assert page.evaluate("() => location.hash") == "#/getLogs"
    console.choose("POST /v1/chat/completions")
    assert page.evaluate("() => location.hash") == "#/createChatCompletion"
    page.go_back()
    page.wait_for_function("() => document.querySelector('#endpoint').value.endsWith('/logs')")
    page.go_back()
    page.wait_for_function("() => document.querySelector('#endpoint').value.endsWith('/status')")
    page.go_forward()
    page.wait_for_function("() => document.querySelector('#endpoint').value.endsWith('/logs')")
    # Swagger UI's form (#/tag/operationId) is read too; a hash naming no operation is not.
    page.goto(f"{console.server.url}/#/OpenAI-compatible/listModels")
    page.wait_for_function("() => document.querySelector('#endpoint').value === 'get /v1/models'")
    page.goto(f"{console.server.url}/#endpoint")  # the skip link's
    page.wait_for_timeout(200)
    assert endpoint.input_value() == "get /v1/models"

    # A reload keeps the operation of the link, and the logs' filters of the last load.
    page.get_by_role("tab", name="Logs").click()
    page.locator("#logs-form").get_by_label("userId").fill("browser-link")
    page.get_by_role("button", name="Load logs").click()
    page.locator("#logs-message").get_by_text("No interactions").wait_for()
    page.reload()
    page.wait_for_selector("html[data-ready=true]")
    assert endpoint.input_value() == "get /v1/models"
    assert page.locator("#logs-form").get_by_label("userId").input_value() == "browser-link"


def test_a_delete_is_asked_first_and_has_no_payload_editor(console: Console) -> None:
    page = console.open().page
    console.choose(ERASE)
    assert page.locator("#payload-field").is_hidden()
    user = f"browser-erase-{uuid.uuid4().hex[:8]}"
    page.locator("#params-fields").get_by_label("userId").fill(user)
    asked: list[str] = []

    def answer(dialog: Any, accept: bool) -> None:
        asked.append(dialog.message)
        if accept:
            dialog.accept()
        else:
            dialog.dismiss()

    before = len(console.requests)
    page.once("dialog", lambda dialog: answer(dialog, False))
    assert console.send() == "Not sent"
    assert len(asked) == 1 and f"userId “{user}”" in asked[0]
    assert "cannot be undone" in asked[0]
    assert "not confirmed" in page.locator("#response-meta").inner_text()
    assert not [url for url in console.requests[before:] if "/me/data" in url]
    console.shot("fix-04-delete-not-confirmed")

    page.once("dialog", lambda dialog: answer(dialog, True))
    assert console.send().startswith("200")
    assert len(asked) == 2
    assert "--data-raw" not in str(page.locator("#snippet-code").text_content())


def test_the_logs_search_box_is_styled_and_a_blocked_load_clears_the_error(
    console: Console,
) -> None:
    page = console.open().page
    page.get_by_role("tab", name="Logs").click()
    form = page.locator("#logs-form")
    box = "el => { const s = getComputedStyle(el); return [el.offsetHeight, s.borderRadius]; }"
    search = form.get_by_label("Search messages and replies")
    assert search.evaluate(box) == form.get_by_label("userId").evaluate(box)

    form.get_by_label("since").fill("yesterday")
    page.get_by_role("button", name="Load logs").click()
    message = page.locator("#logs-message")
    message.get_by_text("400").wait_for()
    form.get_by_label("since").fill("")
    form.get_by_label("limit").fill("0")
    page.get_by_role("button", name="Load logs").click()  # the browser blocks it: limit < 1
    message.get_by_text("Not loaded").wait_for()
    assert "400" not in message.inner_text() and "since" not in message.inner_text()
    assert "limit" in message.inner_text()
    console.shot("fix-06-logs-blocked")


def test_a_404_hint_fits_what_was_not_found(console: Console) -> None:
    page = console.open().page
    console.choose("POST /v1/chat/completions")
    console.payload(json.dumps({"model": "nope", "messages": [{"role": "user", "content": "Hi"}]}))
    assert console.send().startswith("404")
    hint = page.locator("#failure .failure-hint").inner_text()
    assert "/v1/models" in hint and "conversation" not in hint


def test_enter_in_the_key_field_applies_it(console: Console) -> None:
    page = console.open(key=False).page
    field = page.get_by_label("API key", exact=True)
    field.fill(console.server.key)
    field.press("Enter")
    assert page.evaluate("() => document.activeElement.id") == "send"
    page.locator("#toast").get_by_text("Key applied").wait_for()
    # A key no server could take keeps the focus where the fix is.
    field.fill("gpta_é")
    field.press("Enter")
    assert page.evaluate("() => document.activeElement.id") == "api-key"


# Each path segment's characters, and on which line (their top) each of them is.
SEGMENT_LINES = """() => {
  const el = document.querySelector('#response-meta');
  const text = el.textContent;
  const start = text.indexOf('/api/');
  const tops = [];
  const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
  let at = 0;
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    for (let i = 0; i < node.data.length; i++, at++) {
      if (at < start) continue;
      const range = document.createRange();
      range.setStart(node, i);
      range.setEnd(node, i + 1);
      tops.push([node.data[i], Math.round(range.getBoundingClientRect().top)]);
    }
  }
  return tops;
}"""


def test_a_path_wraps_at_its_slashes_on_a_phone(console: Console) -> None:
    page = console.page
    page.set_viewport_size({"width": 375, "height": 740})
    console.open()
    console.choose("POST /api/v1/gpt/conversations")
    console.payload(json.dumps({"userId": "browser-narrow", "message": "Hi", "maxTokens": 2}))
    assert console.send().startswith("200")
    segments: list[set[int]] = [set()]
    for char, top in page.evaluate(SEGMENT_LINES):
        if char == "/":
            segments.append(set())
        else:
            segments[-1].add(top)
    assert len(segments) == 5, segments  # /api/v1/gpt/conversations
    assert all(len(tops) == 1 for tops in segments[1:]), segments
    console.shot("fix-08-narrow")
