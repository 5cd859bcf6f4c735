"""The console calls every operation of the real server (embedded model) and shows the answers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from typing import Any

import pytest

from tests.browser.conftest import Console

pytestmark = pytest.mark.browser

SHORT = ', "maxTokens": 12'


def test_page_has_the_seed_labels_and_loads_nothing_from_elsewhere(console: Console) -> None:
    page = console.open(key=False).page
    assert page.title() == "GPT API Interface"
    assert page.get_by_role("heading", name="GPT API Interface").is_visible()
    assert page.get_by_text(
        "Interact with the GPT API and review the OpenAPI schema directly in this interface"
    ).is_visible()
    for heading in ("API Request Details", "API Response"):
        assert page.get_by_role("heading", name=heading).is_visible()
    for label in ("Endpoint", "HTTP Method", "Request Payload", "Status Code", "API key"):
        assert page.get_by_label(label, exact=True).count() == 1, label
    assert page.get_by_role("button", name="Send", exact=True).is_visible()
    assert page.get_by_role("tab", name="OpenAPI Schema").is_visible()
    assert page.get_by_role("tabpanel", name="OpenAPI Schema").is_visible()
    assert page.locator("#response-panel [aria-live]").count() >= 1
    # The endpoints come from the served document, each with its summary.
    options = page.get_by_label("Endpoint", exact=True).locator("option").all_text_contents()
    assert "POST /api/v1/gpt/conversations — Start a new GPT conversation." in options
    assert len(options) >= 5
    # Two versions, each named: the API's (the seed's info.version) and this server's.
    from gptactions import __version__

    doc_status = page.locator("#doc-status").inner_text()
    assert "API v1.0.0" in doc_status and f"server {__version__}" in doc_status, doc_status
    # Every control has an accessible name.
    unnamed = page.evaluate(
        """() => [...document.querySelectorAll('input, select, textarea, button')]
          .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
            && !el.getAttribute('aria-labelledby') && !(el.tagName === 'BUTTON' && el.textContent.trim()))
          .map((el) => el.outerHTML.slice(0, 100))"""
    )
    assert unnamed == []
    # The keyboard reaches the request's controls in reading order.
    order: list[str] = []
    for _ in range(40):
        page.keyboard.press("Tab")
        focused = page.evaluate("() => document.activeElement.id")
        if focused:
            order.append(focused)
        if focused == "send":
            break
    wanted = ["server", "api-key", "endpoint", "method", "payload", "send"]
    assert [name for name in order if name in wanted] == wanted, order
    # Offline by design: every request the page made went to the server itself.
    assert all(
        url.startswith(console.server.url) or url.startswith("data:") for url in console.requests
    ), console.requests
    console.shot("01-start")


def test_status_with_keyboard_shortcut_and_history(console: Console) -> None:
    page = console.open().page
    console.choose("GET /api/v1/gpt/status")
    assert page.get_by_label("HTTP Method", exact=True).input_value() == "GET"
    assert page.get_by_label("Request Payload", exact=True).is_hidden()
    status = console.send(keyboard=True)
    assert status.startswith("200")
    assert "status-2xx" in str(page.locator("#status-code").get_attribute("class"))
    body = json.loads(console.body())
    assert {"status", "uptime", "version", "model"} <= body.keys()
    assert "Matches the schema documented for 200" in page.locator("#schema-check").inner_text()
    assert " ms" in page.locator("#response-meta").inner_text()
    page.get_by_role("tab", name="Headers").click()
    assert "content-type" in page.locator("#headers-table").inner_text()
    page.get_by_role("tab", name="Raw").click()
    assert page.locator("#body-raw").is_visible()
    console.shot("02-status")

    # The request is in the history, and one click opens it again.
    console.choose("POST /api/v1/gpt/conversations")
    page.get_by_role("tab", name="History").click()
    page.locator(".history-item").first.click()
    assert page.get_by_label("Endpoint", exact=True).input_value() == "get /api/v1/gpt/status"
    stored = page.evaluate("() => localStorage.getItem('gptactions.history')")
    assert console.server.key not in stored


def test_conversation_flow_with_transcript(console: Console) -> None:
    page = console.open().page
    console.choose("POST /api/v1/gpt/conversations")
    example = json.loads(page.get_by_label("Request Payload", exact=True).input_value())
    assert {"userId", "message"} <= example.keys()
    console.payload(f'{{"userId": "browser-flow", "message": "Hello! Who are you?"{SHORT}}}')
    assert console.send().startswith("200")
    first = json.loads(console.body())
    assert first["conversationId"] and first["reply"]
    assert page.locator("#transcript-turns .bubble").count() == 2
    assert first["conversationId"] in page.locator("#conversation-offer").inner_text()

    # The id is offered for /respond, which continues the same conversation.
    page.get_by_role("button", name="Reply with /respond →").click()
    assert page.get_by_label("Endpoint", exact=True).input_value() == "post /api/v1/gpt/respond"
    payload = json.loads(page.get_by_label("Request Payload", exact=True).input_value())
    assert payload["conversationId"] == first["conversationId"]
    assert payload["userId"] == "browser-flow"
    payload["maxTokens"] = 12
    console.payload(json.dumps(payload, indent=2))
    assert console.send().startswith("200")
    second = json.loads(console.body())
    assert second["conversationId"] == first["conversationId"]
    assert page.locator("#transcript-turns .bubble").count() == 4
    assert "Continuing conversation" in page.locator("#conversation-offer").inner_text()
    console.shot("03-conversation")

    page.get_by_role("button", name="New conversation").click()
    assert page.locator("#transcript").is_hidden()
    assert "conversationId" not in json.loads(
        page.get_by_label("Request Payload", exact=True).input_value()
    )


def test_action_and_logs_endpoints(console: Console) -> None:
    page = console.open().page
    console.choose("POST /api/v1/gpt/actions")
    console.payload(
        json.dumps(
            {"action": "summarize", "parameters": {"text": "The cat sat on the mat. It was warm."}}
        )
    )
    assert console.send().startswith("200")
    answer = json.loads(console.body())
    assert answer["success"] is True and answer["result"]
    console.shot("04-action")

    console.choose("GET /api/v1/gpt/logs")
    fields = page.locator("#params-fields")
    for name in ("userId", "conversationId", "since", "until", "limit"):
        assert fields.get_by_label(name).count() == 1, name
    fields.get_by_label("limit").fill("1")
    assert console.send().startswith("200")
    rows = json.loads(console.body())
    assert len(rows) == 1 and "timestamp" in rows[0]
    assert "limit=1" in page.locator("#response-meta").inner_text()


def test_failures_read_as_sentences(console: Console) -> None:
    def with_another_server(route: Any) -> None:
        document = route.fetch().json()
        document["servers"].append({"url": "https://api.unreachable.example"})
        route.fulfill(status=200, content_type="application/json", body=json.dumps(document))

    console.page.route("**/openapi.json", with_another_server)
    page = console.open(key=False).page
    console.choose("GET /api/v1/gpt/status")
    assert console.send().startswith("401")
    failure = page.locator("#failure")
    assert "API key" in failure.inner_text()
    assert "needs a key" in page.locator("#key-note").inner_text()
    assert "status-4xx" in str(page.locator("#status-code").get_attribute("class"))
    console.shot("05-error-401")

    page.get_by_label("API key", exact=True).fill(console.server.key)
    console.choose("POST /api/v1/gpt/conversations")
    console.payload('{"userId": "browser-400"}')
    assert "message" in page.locator("#payload-help").inner_text()  # warned before sending
    # Hints say in words what the document's limits mean, not its regular expressions.
    for message, said in (
        ('""', "/message must not be empty"),
        ('"   "', "/message must not be blank"),
    ):
        console.payload(f'{{"userId": "browser-400", "message": {message}}}')
        hint = page.locator("#payload-help").inner_text()
        assert said in hint and "pattern" not in hint and "characters" not in hint, hint
    assert console.send().startswith("400")
    assert "/message" in failure.inner_text()
    # The hint comes after the list of fields, and says where they are.
    assert failure.locator("ul.failure-details").is_visible()
    assert "listed above" in failure.locator(".failure-hint").inner_text()
    console.shot("06-error-400")

    # A syntax error is shown inline and nothing is sent.
    before = len(console.requests)
    console.payload('{"userId": "x",, }')
    assert "Line 1, column" in page.locator("#payload-error").inner_text()
    assert page.get_by_label("Request Payload", exact=True).get_attribute("aria-invalid") == "true"
    assert console.send() == "Not sent"
    # Nothing went to the operation (the readiness panel may check the document meanwhile).
    sent = [url for url in console.requests[before:] if "/api/v1/gpt/" in url]
    assert sent == [], sent

    # The method menu offers only what the document has for the path: no 405 on offer.
    method = page.get_by_label("HTTP Method", exact=True)
    assert method.locator("option").all_inner_texts() == ["POST"]
    console.choose("GET /api/v1/gpt/actions")
    assert sorted(method.locator("option").all_inner_texts()) == ["GET", "POST"]
    assert "not documented" not in page.locator("#request-panel").inner_text()

    # A 500 from the server and a server that cannot be reached.
    page.route(
        "**/api/v1/gpt/status",
        lambda route: route.fulfill(
            status=500,
            content_type="application/json",
            body=json.dumps(
                {"error": {"code": "internal", "message": "Something broke.", "details": []}}
            ),
        ),
    )
    console.choose("GET /api/v1/gpt/status")
    assert console.send().startswith("500")
    assert "Something broke." in failure.inner_text()
    assert "status-5xx" in str(page.locator("#status-code").get_attribute("class"))
    page.route("https://api.unreachable.example/**", lambda route: route.abort("connectionrefused"))
    page.get_by_role("combobox", name="Server").select_option("https://api.unreachable.example")
    assert console.send() == "No response"
    assert "Could not reach the server" in failure.inner_text()
    assert "null" not in failure.inner_text()
    console.shot("07-unreachable")


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_snippets_run_and_mask_the_key(console: Console) -> None:
    page = console.open().page
    console.choose("POST /api/v1/gpt/conversations")
    console.payload(f'{{"userId": "browser-snippet", "message": "Say hello."{SHORT}}}')
    assert console.send().startswith("200")
    in_page = json.loads(console.body())

    page.get_by_text("Code snippets").click()
    code = page.locator("#snippet-code")
    curl = code.inner_text()
    assert curl.startswith("curl ") and console.server.key not in curl
    assert "$GPTACTIONS_API_KEY" in curl
    env = {**os.environ, "GPTACTIONS_API_KEY": console.server.key}
    ran = subprocess.run(
        ["bash", "-c", curl], capture_output=True, text=True, env=env, timeout=120, check=True
    )
    from_curl = json.loads(ran.stdout)
    assert from_curl.keys() == in_page.keys()

    page.get_by_label("Reveal key").check()
    assert console.server.key in code.inner_text()
    page.get_by_role("button", name="Python").click()
    python = code.inner_text()
    assert "import httpx" in python and console.server.key in python
    ran = subprocess.run(
        [sys.executable, "-c", python], capture_output=True, text=True, timeout=120, check=True
    )
    assert ran.stdout.splitlines()[0] == "200"
    page.get_by_label("Reveal key").uncheck()
    page.get_by_role("button", name="JavaScript").click()
    js = code.inner_text()
    assert "await fetch(" in js and console.server.key not in js
    if shutil.which("node"):
        script = f"(async () => {{\n{js}}})();\n"
        ran = subprocess.run(
            ["node", "-e", script], capture_output=True, text=True, env=env, timeout=120, check=True
        )
        assert ran.stdout.startswith("200 ")
    console.shot("08-snippets")

    # Query parameters go into each snippet too.
    console.choose("GET /api/v1/gpt/logs")
    page.locator("#params-fields").get_by_label("limit").fill("1")
    page.get_by_role("button", name="Python").click()
    ran = subprocess.run(
        [sys.executable, "-c", code.inner_text()],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    assert ran.stdout.splitlines()[0] == "200"
    page.get_by_role("button", name="curl").click()
    assert "limit=1" in code.inner_text()
    ran = subprocess.run(
        ["bash", "-c", code.inner_text()], capture_output=True, text=True, env=env, timeout=120
    )
    assert len(json.loads(ran.stdout)) == 1


def test_key_is_kept_for_the_tab_unless_remembered(console: Console) -> None:
    page = console.open().page
    key = console.server.key
    assert page.evaluate("() => sessionStorage.getItem('gptactions.apiKey')") == key
    assert page.evaluate("() => localStorage.getItem('gptactions.apiKey')") is None
    page.get_by_label("remember on this device").check()
    assert page.evaluate("() => localStorage.getItem('gptactions.apiKey')") == key
    page.reload()
    page.wait_for_selector("html[data-ready=true]")
    assert page.get_by_label("API key", exact=True).input_value() == key
    page.get_by_role("button", name="Forget").click()
    assert page.get_by_label("API key", exact=True).input_value() == ""
    assert page.evaluate(
        "() => [localStorage.getItem('gptactions.apiKey'), sessionStorage.getItem('gptactions.apiKey')]"
    ) == [None, None]


def test_streamed_reply_appears_as_it_arrives(console: Console) -> None:
    page = console.open().page
    events = [
        ("token", {"text": "Hel"}),
        ("token", {"text": "lo there"}),
        (
            "done",
            {
                "conversationId": "conv_stream_1",
                "reply": "Hello there",
                "usage": {"promptTokens": 3, "completionTokens": 2},
            },
        ),
    ]
    stream = "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events)
    seen: dict[str, str] = {}

    def fulfil(route: object) -> None:
        seen["accept"] = route.request.headers.get("accept", "")  # type: ignore[attr-defined]
        route.fulfill(status=200, content_type="text/event-stream", body=stream)  # type: ignore[attr-defined]

    page.route("**/api/v1/gpt/conversations", fulfil)
    console.choose("POST /api/v1/gpt/conversations")
    page.get_by_label("Stream").check()
    # Every text the status line and the token counter show while the answer arrives, in order.
    page.evaluate(
        """() => {
          for (const [id, name] of [["response-meta", "metaSeen"], ["stream-progress", "countSeen"]]) {
            window[name] = [];
            new MutationObserver((records) => {
              for (const r of records) for (const n of r.addedNodes) window[name].push(n.textContent);
            }).observe(document.getElementById(id), { childList: true });
          }
        }"""
    )
    assert console.send().startswith("200")
    seen_meta = page.evaluate("() => window.metaSeen")
    assert seen_meta[:2] == ["Waiting for the answer…", "Streaming…"]
    seen_count = page.evaluate("() => window.countSeen")
    assert "Streaming… 1 token so far" in seen_count
    assert "Streaming… 2 tokens so far" in seen_count
    assert seen["accept"] == "text/event-stream"
    assert "Hello there" in page.locator("#body-pretty").inner_text()
    assert "streamed 3 events" in page.locator("#response-meta").inner_text()
    assert "conv_stream_1" in page.locator("#transcript").inner_text()
    assert "Hello there" in page.locator("#transcript-turns").inner_text()

    # An error event after some tokens is shown as a failure, with the text that arrived.
    broken = 'event: token\ndata: {"text": "Par"}\n\nevent: error\ndata: {"error": {"code": "backend_failed", "message": "The model stopped.", "details": []}}\n\n'
    page.unroute("**/api/v1/gpt/conversations")
    page.route(
        "**/api/v1/gpt/conversations",
        lambda route: route.fulfill(status=200, content_type="text/event-stream", body=broken),
    )
    assert console.send().startswith("200")
    failure = page.locator("#failure")
    assert "The stream ended with an error" in failure.inner_text()
    assert "The model stopped." in failure.inner_text()
    assert "Par" in page.locator("#body-pretty").inner_text()
    console.shot("14-stream-error")


def test_page_runs_under_a_strict_content_security_policy(console: Console) -> None:
    policy = (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self' https:; frame-ancestors 'none'; base-uri 'none'"
    )
    page = console.page
    violations: list[str] = []
    page.on(
        "console",
        lambda message: (
            violations.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )

    def with_policy(route: Any) -> None:
        response = route.fetch()
        route.fulfill(
            response=response,
            headers={**response.headers, "content-security-policy": policy},
        )

    page.route(console.server.url + "/", with_policy)
    console.open()
    console.choose("GET /api/v1/gpt/status")
    assert console.send().startswith("200")
    page.get_by_role("tab", name="GPT Actions readiness").click()
    assert violations == []


def test_the_openai_compatible_operations_can_be_sent(console: Console) -> None:
    page = console.open().page
    options = page.get_by_label("Endpoint", exact=True).locator("option").all_text_contents()
    assert "GET /v1/models — List the models (OpenAI-compatible)." in options
    console.choose("GET /v1/models")
    assert console.send().startswith("200")
    assert json.loads(console.body())["data"][0]["id"] == "local"
    console.choose("POST /v1/chat/completions")
    # The payload is prefilled with the document's example, which the model answers as it is.
    prefilled = json.loads(page.get_by_label("Request Payload", exact=True).input_value())
    assert prefilled["messages"][0]["role"] == "user"
    console.payload(json.dumps({**prefilled, "max_tokens": 12}))
    assert console.send().startswith("200")
    body = json.loads(console.body())
    assert body["object"] == "chat.completion" and body["choices"][0]["message"]["content"]
    assert "Matches the schema documented for 200" in page.locator("#schema-check").inner_text()
    console.shot("12-openai-chat-completion")
    # Errors under /v1 are OpenAI's, as documented, and the console reads them as such.
    console.payload(json.dumps({**prefilled, "n": 2}))
    assert console.send().startswith("400")
    assert json.loads(console.body())["error"]["type"] == "invalid_request_error"
    assert "Matches the schema documented for 400" in page.locator("#schema-check").inner_text()
    # Their part of the document passes the GPT Actions readiness checks.
    page.get_by_role("tab", name="GPT Actions readiness").click()
    page.wait_for_function("() => Number(document.querySelector('#readiness').dataset.checked) > 0")
    findings = " ".join(page.locator("#readiness .finding").all_inner_texts())
    assert " /v1/" not in findings and "/paths/~1v1~1" not in findings, findings


def test_what_was_not_sent_or_was_cancelled_says_so(console: Console) -> None:
    page = console.open().page
    failure = page.locator("#failure")
    console.choose("POST /api/v1/gpt/conversations")
    console.payload('{"userId": "", "message": ""}')
    assert console.send().startswith("400")
    assert failure.is_visible()

    # Not sent: the previous answer is cleared, not left on screen as if it were this one's.
    console.payload('{"userId": "a", "message": "hi",}')
    assert console.send() == "Not sent"
    assert failure.is_hidden()
    assert page.locator("#schema-check").is_hidden()
    assert page.locator("#body-pretty").inner_text() == "Not sent."
    assert "JSON syntax error" in page.locator("#response-meta").inner_text()

    # A path parameter left empty is asked for, not sent as its template.
    before = len(console.requests)
    console.choose("GET /v1/models/{model}")
    assert console.send() == "Not sent"
    assert "path parameter model" in page.locator("#response-meta").inner_text()
    assert page.evaluate("() => document.activeElement.dataset.name") == "model"
    assert not [url for url in console.requests[before:] if "/v1/models/" in url]

    # A conversation that is not there: the path exists, the id is what is wrong.
    console.choose("POST /api/v1/gpt/respond")
    console.payload('{"userId": "browser-404", "message": "Hi", "conversationId": "conv_nope"}')
    assert console.send().startswith("404")
    assert "does not exist for this user" in failure.inner_text()
    hint = failure.locator(".failure-hint").inner_text()
    assert "conversationId" in hint and "Endpoint" not in hint and "model" not in hint

    # Cancelled by the user: said as such, not as a server that cannot be reached.
    page.route("**/api/v1/gpt/status", lambda route: None)  # held: never answered
    console.choose("GET /api/v1/gpt/status")
    shown = console.shown()
    page.get_by_role("button", name="Send", exact=True).click()
    page.get_by_role("button", name="Cancel").click()
    page.wait_for_function(
        f"() => Number(document.querySelector('#response-panel').dataset.shown || 0) > {shown}"
    )
    assert page.locator("#status-code").inner_text() == "Cancelled"
    assert "status-error" not in str(page.locator("#status-code").get_attribute("class"))
    assert "was cancelled" in failure.inner_text()
    assert "Could not reach" not in failure.inner_text()
    assert "CORS" not in failure.inner_text()
