"""The console's panels: the OpenAPI Schema view, GPT Actions readiness, logs, narrow and dark."""

from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.browser.conftest import Console

pytestmark = pytest.mark.browser


def served_document(console: Console) -> dict[str, Any]:
    """The document the server serves at /openapi.json."""
    document: dict[str, Any] = httpx.get(f"{console.server.url}/openapi.json", timeout=30).json()
    return document


def serve_document(console: Console, document: dict[str, Any]) -> None:
    """Make the page see `document` at /openapi.json instead of the server's own."""
    console.page.route(
        "**/openapi.json",
        lambda route: route.fulfill(
            status=200, content_type="application/json", body=json.dumps(document)
        ),
    )


def test_schema_panel_yaml_json_download_and_choosing_an_endpoint(console: Console) -> None:
    page = console.open().page
    document = served_document(console)
    view = page.locator("#schema-view")
    assert "openapi: 3.0.3" in view.inner_text()

    # The YAML and JSON downloads are the served document, exactly.
    with page.expect_download() as download:
        page.get_by_role("button", name="Download").click()
    assert download.value.suggested_filename == "openapi.yaml"
    assert yaml.safe_load(Path(download.value.path()).read_text(encoding="utf-8")) == document

    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.get_by_role("button", name="Copy", exact=True).click()
    assert yaml.safe_load(page.evaluate("() => navigator.clipboard.readText()")) == document

    page.get_by_role("button", name="JSON", exact=True).click()
    assert '"openapi": "3.0.3"' in view.inner_text()
    with page.expect_download() as download:
        page.get_by_role("button", name="Download").click()
    assert json.loads(Path(download.value.path()).read_text(encoding="utf-8")) == document
    page.get_by_role("button", name="YAML", exact=True).click()

    # Operations and schemas fold; each operation offers itself as the endpoint.
    operation = view.locator('details[data-op="get /api/v1/gpt/status"]')
    assert not operation.evaluate("el => el.open")
    operation.locator("summary").click()
    assert operation.evaluate("el => el.open")
    assert "operationId: getStatus" in operation.inner_text()
    assert view.locator("details[data-schema]").count() >= 4
    page.get_by_role("button", name="Use GET /api/v1/gpt/logs in the request").click()
    assert page.get_by_label("Endpoint", exact=True).input_value() == "get /api/v1/gpt/logs"
    assert "current" in str(
        view.locator('details[data-op="get /api/v1/gpt/logs"]').get_attribute("class")
    )
    page.get_by_role("button", name="Expand all").click()
    assert view.locator("details:not([open])").count() == 0
    console.shot("09-schema-panel")


def test_readiness_lists_what_to_fix_in_a_broken_document(console: Console) -> None:
    document = copy.deepcopy(served_document(console))
    document["servers"] = [{"url": "http://127.0.0.1:8000"}, {"url": "http://localhost:8000"}]
    operations = document["paths"]
    status = operations["/api/v1/gpt/status"]["get"]
    status["operationId"] = operations["/api/v1/gpt/logs"]["get"]["operationId"]
    status["summary"] = "Very long summary. " * 20
    del operations["/api/v1/gpt/conversations"]["post"]["x-openai-isConsequential"]
    logs = operations["/api/v1/gpt/logs"]["get"]
    logs["parameters"].append(
        {
            "name": "kinds",
            "in": "query",
            "schema": {"type": "array", "items": {"type": "string"}},
            "description": "x" * 701,
        }
    )
    document["components"]["schemas"]["Loose"] = {"type": "object", "description": "no properties"}
    serve_document(console, document)
    page = console.open().page
    page.get_by_role("tab", name="GPT Actions readiness").click()
    pane = page.locator("#readiness")
    checked(page)
    for rule in ("operationId", "servers", "lengths", "properties", "explode", "consequential"):
        assert "good" not in str(pane.locator(f'[data-rule="{rule}"]').get_attribute("class")), rule
    text = pane.inner_text()
    assert 'operationId "getLogs" is used by' in text
    assert "No https server URL" in text
    assert "380 characters" in text and "701 characters" in text
    assert "/components/schemas/Loose" in text
    assert 'Query parameter "kinds" is an exploded array' in text
    assert "POST /api/v1/gpt/conversations does not state x-openai-isConsequential" in text
    assert "to fix" in page.locator("#readiness-chip").inner_text()
    console.shot("10-readiness-problems")


def test_readiness_passes_a_clean_document(console: Console) -> None:
    document = {
        "openapi": "3.1.0",
        "info": {"title": "Clean", "version": "1"},
        "servers": [{"url": "https://api.example.com"}],
        "paths": {
            "/things": {
                "get": {
                    "operationId": "listThings",
                    "summary": "List things.",
                    "parameters": [
                        {
                            "name": "tags",
                            "in": "query",
                            "explode": False,
                            "schema": {"type": "array", "items": {"type": "string"}},
                        }
                    ],
                    "responses": {"200": {"description": "ok"}},
                },
                "post": {
                    "operationId": "addThing",
                    "summary": "Add a thing.",
                    "x-openai-isConsequential": False,
                    "requestBody": {
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {"name": {"type": "string"}},
                                }
                            }
                        }
                    },
                    "responses": {"200": {"description": "ok"}},
                },
            }
        },
    }
    serve_document(console, document)
    page = console.open().page
    page.get_by_role("tab", name="GPT Actions readiness").click()
    checked(page)
    # The document passes; what is left is the server's own setting (no privacy contact).
    pane = page.locator("#readiness")
    for rule in ("operationId", "servers", "lengths", "properties", "explode", "consequential"):
        assert "good" in str(pane.locator(f'[data-rule="{rule}"]').get_attribute("class")), rule
    for rule in ("timeouts", "size"):
        assert "good" in str(pane.locator(f'[data-rule="{rule}"]').get_attribute("class")), rule
    assert "GPTACTIONS_PRIVACY_CONTACT" in pane.locator('[data-rule="privacy"]').inner_text()
    # The example payload follows the schema of whatever document is served.
    console.choose("POST /things")
    assert json.loads(page.get_by_label("Request Payload", exact=True).input_value()) == {}


def test_readiness_passes_the_servers_own_document_with_an_https_url(console: Console) -> None:
    document: dict[str, Any] = httpx.get(
        f"{console.server.url}/openapi.json", params={"scopes": "chat,actions"}, timeout=30
    ).json()
    # What the server serves for a GPT when GPTACTIONS_PUBLIC_URL is an https URL.
    document["servers"] = [{"url": "https://gpt.example.com", "description": "This server"}]
    serve_document(console, document)
    page = console.open().page
    page.get_by_role("tab", name="GPT Actions readiness").click()
    checked(page)
    pane = page.locator("#readiness")
    bad = [r for r in ("operationId", "servers", "lengths", "properties", "explode",
                       "consequential", "logs", "timeouts", "size")
           if "good" not in str(pane.locator(f'[data-rule="{r}"]').get_attribute("class"))]  # fmt: skip
    assert bad == [], pane.inner_text()


def test_readiness_warns_about_logs_and_explains_the_oauth_form(console: Console) -> None:
    page = console.open().page  # the served document, whole, with the admin key
    page.get_by_role("tab", name="GPT Actions readiness").click()
    checked(page, at_least=2)  # once without the key, once with it
    pane = page.locator("#readiness")
    logs = pane.locator('[data-rule="logs"]').inner_text()
    assert "GET /api/v1/gpt/logs" in logs and "scopes=chat,actions" in logs
    # The server's own document names the URL it was fetched from, which is plain http here.
    assert f"No https server URL (found {console.server.url})" in pane.inner_text()
    form = page.get_by_role("table", name="ChatGPT's OAuth form")
    text = form.inner_text()
    for label in ("Client ID", "Client Secret", "Authorization URL", "Token URL", "Scope",
                  "Token Exchange Method"):  # fmt: skip
        assert label in text, label
    assert f"{console.server.url}/oauth/authorize" in text
    assert f"{console.server.url}/oauth/token" in text
    assert "chat actions" in text and "Default (POST request)" in text
    assert f"{console.server.url}/openapi.json?scopes=chat,actions" in pane.inner_text()
    # An OAuth GPT's document also offers its users their own data.
    assert f"{console.server.url}/openapi.json?scopes=chat,actions&auth=oauth" in pane.inner_text()
    console.shot("10b-readiness-oauth-guide")


def checked(page: Any, at_least: int = 1) -> None:
    """Wait until the readiness pane shows the server's answer (`at_least` times)."""
    page.wait_for_function(
        "n => Number(document.querySelector('#readiness').dataset.checked || 0) >= n", arg=at_least
    )


def load_logs(console: Console, **filters: str) -> Any:
    """Open the Logs tab at 1280 px, fill in the filters, load, and wait for the table's rows."""
    page = console.page
    page.set_viewport_size({"width": 1280, "height": 900})
    console.open()
    page.get_by_role("tab", name="Logs").click()
    form = page.locator("#logs-form")
    for name, value in filters.items():
        field = form.get_by_label(name)
        if field.evaluate("el => el.tagName") == "SELECT":
            field.select_option(value)
        else:
            field.fill(value)
    page.get_by_role("button", name="Load logs").click()
    table = page.locator("#logs-table")
    table.locator("tbody tr").first.wait_for()
    return table


def test_logs_table_filters_and_pages(console: Console) -> None:
    user = f"browser-logs-{uuid.uuid4().hex[:8]}"
    headers = {"Authorization": f"Bearer {console.server.key}"}
    for number in range(3):
        answer = httpx.post(
            f"{console.server.url}/api/v1/gpt/conversations",
            json={"userId": user, "message": f"Say the number {number}.", "maxTokens": 8},
            headers=headers,
            timeout=120,
        )
        assert answer.status_code == 200
    page = console.page
    table = load_logs(console, userId=user, limit="2")
    form = page.locator("#logs-form")
    assert table.locator("tbody tr").count() == 2
    assert "Page 1" in page.locator("#logs-page").inner_text()
    heads = table.locator("thead th").all_text_contents()
    assert {"Time", "User", "Conversation", "Message", "Reply"} <= set(heads)
    assert user in table.inner_text()
    # At 1280 px the last columns do not fit: a line above the table names them, and scrolls.
    wrap = page.locator("#logs-wrap")
    assert wrap.evaluate("el => el.scrollWidth > el.clientWidth")
    cue = page.locator("#logs-scroll-cue")
    assert cue.is_visible() and "Tokens in / out" in cue.inner_text()
    assert "more-right" in str(wrap.get_attribute("class"))
    console.shot("11-logs")
    cue.get_by_role("button").last.click()
    page.wait_for_function("() => document.querySelector('#logs-wrap').scrollLeft > 0")
    page.wait_for_function(
        "() => document.querySelector('#logs-scroll-cue').textContent.includes('← Time')"
    )
    console.shot("11-logs-scrolled")

    page.get_by_role("button", name="Next page →").click()
    page.wait_for_function(
        "() => document.querySelector('#logs-page').textContent.startsWith('Page 2')"
    )
    assert table.locator("tbody tr").count() == 1
    assert page.get_by_role("button", name="Next page →").is_disabled()
    page.get_by_role("button", name="← Previous").click()
    page.wait_for_function(
        "() => document.querySelector('#logs-page').textContent.startsWith('Page 1')"
    )

    # A conversation id in the table filters the logs to that conversation.
    table.locator("tbody tr").first.get_by_role("button").click()
    page.wait_for_function(
        "() => document.querySelector('#logs-page').textContent.includes('1 row')"
    )
    assert form.get_by_label("conversationId").input_value().startswith("conv")


def test_logs_search_box_with_filters_and_pages(console: Console) -> None:
    user = f"browser-search-{uuid.uuid4().hex[:8]}"
    word = f"zebra{uuid.uuid4().hex[:6]}"
    headers = {"Authorization": f"Bearer {console.server.key}"}
    for message in (f"First {word} question.", "Nothing to find here.", f"Second {word}?"):
        answer = httpx.post(
            f"{console.server.url}/api/v1/gpt/conversations",
            json={"userId": user, "message": message, "maxTokens": 4},
            headers=headers,
            timeout=120,
        )
        assert answer.status_code == 200
    page = console.page
    console.open()
    page.get_by_role("tab", name="Logs").click()
    form = page.locator("#logs-form")
    search = form.get_by_label("Search messages and replies")
    assert search.get_attribute("type") == "search"
    search.fill(word.upper())
    form.get_by_label("userId").fill(user)
    form.get_by_label("limit").fill("1")
    search.press("Enter")  # Enter in the box loads, as the button does
    table = page.locator("#logs-table")
    page.wait_for_function(
        "() => document.querySelector('#logs-page').textContent.includes('more after this')"
    )
    assert table.locator("tbody tr").count() == 1
    assert f"Second {word}?" in table.inner_text()
    page.get_by_role("button", name="Next page →").click()
    page.wait_for_function(
        "() => document.querySelector('#logs-page').textContent.startsWith('Page 2')"
    )
    assert f"First {word} question." in table.inner_text()
    assert page.get_by_role("button", name="Next page →").is_disabled()
    # A search without a word is the server's 400, shown in the pane.
    search.fill("!!!")
    page.get_by_role("button", name="Load logs").click()
    message = page.locator("#logs-message")
    message.get_by_text("400").wait_for()
    assert "at least one word" in message.inner_text()


def test_logs_need_the_key(console: Console) -> None:
    page = console.open(key=False).page
    page.get_by_role("tab", name="Logs").click()
    page.get_by_role("button", name="Load logs").click()
    message = page.locator("#logs-message")
    message.get_by_text("401").wait_for()
    assert "API key" in message.inner_text()


def test_real_stream_shows_text_as_it_arrives(console: Console) -> None:
    page = console.open().page
    console.choose("POST /api/v1/gpt/conversations")
    console.payload(
        '{"userId": "browser-stream", "message": "Count from one to five.", "maxTokens": 24}'
    )
    page.get_by_label("Stream").check()
    assert console.send().startswith("200")
    meta = page.locator("#response-meta").inner_text()
    assert "streamed" in meta
    assert page.locator("#transcript-turns .bubble.assistant").inner_text().strip() != "Assistant"
    assert "Matches the schema" in page.locator("#schema-check").inner_text()
    console.shot("12-streamed")


def test_action_picker_prefills_a_valid_payload(console: Console) -> None:
    page = console.open(key=False).page
    console.choose("POST /api/v1/gpt/actions")
    # The actions and their parameters are the document's: no key needed, no request sent (a
    # request in the background would count against the key's rate limit).
    picker = page.get_by_label("Action", exact=True)
    picker.wait_for()
    assert page.locator("#action-note").is_hidden()
    picker.select_option("summarize")
    payload = json.loads(page.get_by_label("Request Payload", exact=True).input_value())
    assert payload["action"] == "summarize" and payload["parameters"]["text"]
    page.get_by_label("API key", exact=True).fill(console.server.key)
    assert console.send().startswith("200")
    assert json.loads(console.body())["success"] is True
    assert [url for url in console.requests if url.endswith("/api/v1/gpt/actions")] == [
        console.server.url + "/api/v1/gpt/actions"  # the one sent with Send, a POST
    ]
    # Empty parameters: the checker names the missing field of the action the payload names,
    # as the server does, not "matches 0 of the 9 oneOf options".
    console.payload('{"action": "summarize", "parameters": {}}')
    help_text = page.locator("#payload-help").inner_text()
    assert '/parameters/text missing required property "text"' in help_text
    assert "oneOf" not in help_text


@pytest.mark.parametrize(("width", "scheme"), [(375, "dark"), (375, "light"), (1400, "dark")])
def test_themes_and_narrow_screens(console: Console, width: int, scheme: str) -> None:
    page = console.page
    page.set_viewport_size({"width": width, "height": 900})
    page.emulate_media(color_scheme=scheme)
    console.open()
    console.choose("GET /api/v1/gpt/status")
    assert console.send().startswith("200")
    scroll_width = page.evaluate("() => document.documentElement.scrollWidth")
    assert scroll_width <= width, f"the page is {scroll_width}px wide at {width}px"
    assert page.get_by_role("button", name="Send", exact=True).is_visible()
    background = page.evaluate("() => getComputedStyle(document.body).backgroundColor")
    channels = [
        int(c) for c in background[background.index("(") + 1 : background.index(")")].split(",")[:3]
    ]
    assert (sum(channels) < 150) == (scheme == "dark"), background
    console.shot(f"13-{width}px-{scheme}")


def test_a_rejected_request_is_in_the_logs_and_can_be_sent_again(console: Console) -> None:
    user = f"browser-rejected-{uuid.uuid4().hex[:8]}"
    sent = {"userId": user, "message": "Hello", "maxTokens": 0}  # maxTokens must be >= 1
    answer = httpx.post(
        f"{console.server.url}/api/v1/gpt/conversations",
        json=sent,
        headers={"Authorization": f"Bearer {console.server.key}"},
        timeout=60,
    )
    assert answer.status_code == 400
    page = console.page
    table = load_logs(console, userId=user, kind="rejected")
    assert table.locator("tbody tr").count() == 1
    heads = table.locator("thead th").all_text_contents()
    assert {"HTTP", "Endpoint", "Error", "Id"} <= set(heads)
    assert not {"error", "id"} & set(heads)  # every column by its title, none by its raw key
    row = table.locator("tbody tr").first
    assert "400" in row.inner_text() and "POST /api/v1/gpt/conversations" in row.inner_text()
    console.shot("11-logs-rejected")
    row.get_by_role("button", name="Re-send this POST /api/v1/gpt/conversations request").click()
    endpoint = page.get_by_label("Endpoint", exact=True)
    assert endpoint.input_value() == "post /api/v1/gpt/conversations"
    payload = page.get_by_label("Request Payload", exact=True).input_value()
    assert json.loads(payload) == sent
