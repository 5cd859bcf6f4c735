"""The console's pickers never disagree with what it sends: the HTTP Method menu switches to
that method's operation of the path (payload, schema, responses, check), and the action picker
follows the payload's `action` as it is edited."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.browser.conftest import Console

pytestmark = pytest.mark.browser

ACTIONS = "/api/v1/gpt/actions"


def shown_operation(page: Any) -> dict[str, Any]:
    """What the page shows of the chosen operation."""
    return {
        "endpoint": page.get_by_label("Endpoint", exact=True).input_value(),
        "method": page.get_by_label("HTTP Method", exact=True).input_value(),
        "payload": page.locator("#payload-field").is_visible(),
        "payload schema": page.locator("#body-schema").is_visible(),
        "responses of": page.locator("#doc-responses-op").inner_text(),
        "action picker": page.locator("#action-picker").is_visible(),
    }


def test_the_method_menu_switches_to_that_methods_operation(console: Console) -> None:
    page = console.open().page
    method = page.get_by_label("HTTP Method", exact=True)
    console.choose(f"POST {ACTIONS}")
    page.wait_for_selector("#action-picker:not([hidden])")

    # POST's operation, then GET: the page shows (and checks) listActions, not triggerAction.
    method.select_option("GET")
    assert shown_operation(page) == {
        "endpoint": f"get {ACTIONS}",
        "method": "GET",
        "payload": False,
        "payload schema": False,
        "responses of": f"GET {ACTIONS}",
        "action picker": False,
    }
    assert "2 operations" in page.locator("#method-help").inner_text()
    assert console.send().startswith("200")
    assert "actions" in json.loads(console.body())
    assert f"GET {ACTIONS}" in page.locator("#response-meta").inner_text()
    check = page.locator("#schema-check")
    assert "good" in str(check.get_attribute("class")), check.inner_text()
    assert f"documented for 200 (GET {ACTIONS})" in check.inner_text()
    received = page.locator("#doc-responses-list details.received")
    assert received.count() == 1 and received.get_attribute("data-status") == "200"
    snippet = str(page.locator("#snippet-code").text_content())
    assert snippet.startswith(f"curl -sS '{console.server.url}{ACTIONS}'"), snippet
    assert "--data-raw" not in snippet, snippet

    # And back: POST brings its payload (the picker's action, ready to send) and its check.
    method.select_option("POST")
    assert shown_operation(page) == {
        "endpoint": f"post {ACTIONS}",
        "method": "POST",
        "payload": True,
        "payload schema": True,
        "responses of": f"POST {ACTIONS}",
        "action picker": True,
    }
    assert "action" in page.locator("#body-schema-tree").inner_text()
    page.get_by_label("Action", exact=True).select_option("sentiment")
    payload = json.loads(page.get_by_label("Request Payload", exact=True).input_value())
    assert payload["action"] == "sentiment" and payload["parameters"]["text"]
    assert console.send().startswith("200")
    assert json.loads(console.body())["success"] is True
    assert f"POST {ACTIONS}" in page.locator("#response-meta").inner_text()
    assert "good" in str(check.get_attribute("class")), check.inner_text()
    assert f"documented for 200 (POST {ACTIONS})" in check.inner_text()

    # History holds what was sent, and opens each again as its own operation.
    page.get_by_role("tab", name="History").click()
    page.get_by_role("button", name=f"Open again: GET {ACTIONS}").click()
    assert shown_operation(page)["endpoint"] == f"get {ACTIONS}"
    console.shot("30-method-switches-operation")


def test_history_from_before_opens_the_operation_that_was_sent(console: Console) -> None:
    # An entry recorded while the menus could disagree: POST's key, GET sent.
    entry = {
        "id": "old-1",
        "at": "2024-01-01T00:00:00Z",
        "server": console.server.url,
        "opKey": f"post {ACTIONS}",
        "method": "GET",
        "path": ACTIONS,
        "params": {},
        "payload": "",
        "status": 200,
        "ms": 5,
        "stream": False,
    }
    console.page.add_init_script(
        f"localStorage.setItem('gptactions.history', {json.dumps(json.dumps([entry]))})"
    )
    page = console.open().page
    page.get_by_role("tab", name="History").click()
    page.get_by_role("button", name=f"Open again: GET {ACTIONS}").click()
    shown = shown_operation(page)
    assert (shown["endpoint"], shown["method"], shown["responses of"]) == (
        f"get {ACTIONS}",
        "GET",
        f"GET {ACTIONS}",
    )


def test_the_action_picker_follows_the_payload(console: Console) -> None:
    page = console.open().page
    console.choose(f"POST {ACTIONS}")
    picker = page.get_by_label("Action", exact=True)
    page.wait_for_selector("#action-picker:not([hidden])")
    console.payload('{"action": "translate", "parameters": {"text": "Bonjour"}}')
    assert picker.input_value() == "translate"
    assert "ranslat" in page.locator("#action-help").inner_text()
    console.payload('{"action": "fly", "parameters": {}}')
    assert picker.input_value() == ""
    assert '"fly" is not in the server' in page.locator("#action-help").inner_text()
    # Coming back to the operation keeps the edit, and the picker still says what it names.
    page.get_by_label("HTTP Method", exact=True).select_option("GET")
    page.get_by_label("HTTP Method", exact=True).select_option("POST")
    page.wait_for_selector("#action-picker:not([hidden])")
    assert '"fly"' in page.get_by_label("Request Payload", exact=True).input_value()
    page.wait_for_function("() => document.querySelector('#action-help').textContent !== ''")
    assert picker.input_value() == ""
    assert '"fly" is not in the server' in page.locator("#action-help").inner_text()
