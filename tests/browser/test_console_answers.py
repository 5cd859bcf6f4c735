"""Where and how the console shows an answer: OpenAI's streams as text, the answer brought into
view, each operation's own answer, what a reload keeps, and what the browser would not send."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from tests.browser.conftest import Console

pytestmark = pytest.mark.browser

# Every text an element shows, in order (its child nodes are replaced as it changes).
RECORD = """([selector, name]) => {
  window[name] = [];
  new MutationObserver((records) => {
    for (const r of records) for (const n of r.addedNodes) window[name].push(n.textContent);
  }).observe(document.querySelector(selector), { childList: true });
}"""


def test_an_openai_stream_reads_as_text_as_it_arrives(console: Console) -> None:
    page = console.open().page
    console.choose("POST /v1/chat/completions")
    stream = page.get_by_label("Stream")
    assert stream.is_visible() and not stream.is_checked()
    stream.check()  # the body says whether to stream: the box writes it there
    payload = json.loads(page.get_by_label("Request Payload", exact=True).input_value())
    assert payload["stream"] is True
    console.payload(json.dumps({**payload, "max_tokens": 12}))
    page.evaluate(RECORD, ["#response-meta", "metaSeen"])
    page.evaluate(RECORD, ["#stream-progress", "progressSeen"])
    assert console.send().startswith("200")

    body = page.locator("#body-pretty")
    streamed = body.locator(".streamed").inner_text().strip()
    assert streamed, "the chunks' text is shown"
    assert "then data: [DONE]" in body.inner_text()
    check = page.locator("#schema-check").inner_text()
    assert check.startswith("✓") and "data: [DONE]" in check
    assert "without a done event" not in check
    # The count of tokens went on outside the live region: a screen reader hears the start
    # ("Streaming…") and the end, not every token.
    assert "Streaming… 1 token so far" in page.evaluate("() => window.progressSeen")
    meta_seen = page.evaluate("() => window.metaSeen")
    assert meta_seen[:2] == ["Waiting for the answer…", "Streaming…"] and len(meta_seen) == 3
    assert page.locator("#stream-progress").evaluate("el => el.closest('[aria-live]')") is None
    assert page.locator("#stream-progress").is_hidden()
    console.shot("17-openai-stream")

    stream.uncheck()
    assert "stream" not in json.loads(
        page.get_by_label("Request Payload", exact=True).input_value()
    )


def test_the_answer_comes_into_view_and_a_reload_keeps_the_conversation(console: Console) -> None:
    page = console.page
    page.set_viewport_size({"width": 1280, "height": 800})
    console.open()
    console.choose("POST /api/v1/gpt/conversations")
    typed = json.dumps({"userId": "browser-reload", "message": "Say hi.", "maxTokens": 4})
    console.payload(typed)
    page.get_by_role("button", name="Send", exact=True).scroll_into_view_if_needed()
    status_top = "() => document.querySelector('#response-summary').getBoundingClientRect().top"
    assert page.evaluate(status_top) < 0, "the status starts above the view"
    assert console.send().startswith("200")
    page.wait_for_function(
        "() => { const r = document.querySelector('#response-summary').getBoundingClientRect();"
        " return r.top >= -1 && r.bottom <= innerHeight + 1; }",
        timeout=5_000,
    )
    assert page.evaluate("() => document.activeElement.id") == "send"  # the focus stays put
    conversation = page.locator("#transcript-id").inner_text()
    assert conversation.startswith("conv")

    page.reload()
    page.wait_for_selector("html[data-ready=true]")
    assert page.locator("#transcript-id").inner_text() == conversation
    assert "Say hi." in page.locator("#transcript-turns").inner_text()
    assert (
        page.get_by_label("Endpoint", exact=True).input_value() == "post /api/v1/gpt/conversations"
    )
    assert page.get_by_label("Request Payload", exact=True).input_value() == typed
    console.choose("POST /api/v1/gpt/respond")
    follow_up = json.loads(page.get_by_label("Request Payload", exact=True).input_value())
    assert follow_up["conversationId"] == conversation and follow_up["userId"] == "browser-reload"
    session = page.evaluate("() => sessionStorage.getItem('gptactions.session')")
    assert conversation in session and console.server.key not in session  # the key has its slot


def test_another_endpoint_does_not_show_the_last_answer(console: Console) -> None:
    page = console.open().page
    console.choose("GET /api/v1/gpt/status")
    assert console.send().startswith("200")
    console.choose("POST /api/v1/gpt/actions")
    assert page.locator("#status-code").inner_text() == "—"
    assert page.locator("#schema-check").is_hidden() and page.locator("#failure").is_hidden()
    assert "POST /api/v1/gpt/actions appears here" in page.locator("#body-pretty").inner_text()
    assert page.locator("#doc-responses .received").count() == 0
    # Back on GET /status, its own answer is shown again, as such.
    console.choose("GET /api/v1/gpt/status")
    assert page.locator("#status-code").inner_text() == "200 OK"
    assert "Answer of " in page.locator("#response-meta").inner_text()
    assert "GET /api/v1/gpt/status" in page.locator("#schema-check").inner_text()


def test_history_is_bounded_and_never_crowds_out_the_key(console: Console) -> None:
    page = console.open().page
    # What an earlier console kept: whole payloads, 4.8 M characters of the ~5 M the browser
    # stores for a page. The next request's entry could not be stored, and nothing said so.
    page.evaluate(
        """() => localStorage.setItem("gptactions.history", JSON.stringify(
          Array.from({ length: 4 }, (_, i) => ({ id: `old${i}`, at: new Date().toISOString(),
            server: location.origin, opKey: "post /api/v1/gpt/conversations", method: "POST",
            path: "/api/v1/gpt/conversations", params: {}, status: 413, ms: 5, stream: false,
            payload: JSON.stringify({ userId: "old", message: "x".repeat(1_200_000) }) }))))"""
    )
    page.reload()
    page.wait_for_selector("html[data-ready=true]")
    page.get_by_label("remember on this device").check()
    console.choose("POST /api/v1/gpt/conversations")
    # Under the server's body limit (so it answers at once), over its message limit: a 400.
    big = json.dumps({"userId": "browser-big", "message": "x" * 950_000, "maxTokens": 0})
    page.get_by_label("Request Payload", exact=True).evaluate(
        "(el, text) => { el.value = text; el.dispatchEvent(new Event('input')); }", big
    )
    assert console.send().startswith("400")
    stored = page.evaluate("() => localStorage.getItem('gptactions.history')")
    entries = json.loads(stored)
    assert len(entries) == 5 and len(stored) < 300_000
    assert all(entry["payload"] == "" and entry["payloadOmitted"] > 950_000 for entry in entries)
    page.get_by_role("tab", name="History").click()
    assert "(payload of 927.8 kB not kept)" in page.locator("#history-list").inner_text()
    assert page.locator("#history-note").is_hidden()
    assert page.evaluate("() => localStorage.getItem('gptactions.apiKey')") == console.server.key

    # Storage filled by something else: the History tab says the history is not all kept.
    page.evaluate(
        """() => { let i = 0;
          for (let size = 512 * 1024; size >= 1; size = Math.floor(size / 8)) {
            try { for (;;) localStorage.setItem(`junk${i++}`, "j".repeat(size)); } catch {}
          } }"""
    )
    console.payload(json.dumps({"userId": "browser-big", "message": "hi", "maxTokens": 0}))
    assert console.send().startswith("400")
    assert "storage for the page is full" in page.locator("#history-note").inner_text()
    page.evaluate("() => localStorage.clear()")


def test_a_failed_log_search_leaves_no_rows_of_the_last_one(console: Console) -> None:
    user = f"browser-stale-{uuid.uuid4().hex[:8]}"
    httpx.post(
        f"{console.server.url}/api/v1/gpt/conversations",
        json={"userId": user, "message": "Hello", "maxTokens": 0},
        headers={"Authorization": f"Bearer {console.server.key}"},
        timeout=30,
    )
    page = console.open().page
    page.get_by_role("tab", name="Logs").click()
    form = page.locator("#logs-form")
    form.get_by_label("userId").fill(user)
    page.get_by_role("button", name="Load logs").click()
    table = page.locator("#logs-table")
    table.locator("tbody tr").first.wait_for()
    page.get_by_label("API key", exact=True).fill("gpta_not_a_key_of_this_server_000000000000")
    page.get_by_role("button", name="Load logs").click()
    page.locator("#logs-message").get_by_text("401").wait_for()
    assert table.is_hidden() and table.locator("tbody tr").count() == 0
    assert page.locator("#logs-page").inner_text() == ""


def test_what_the_browser_would_not_send_is_said_so(console: Console) -> None:
    page = console.open(key=False).page
    key_field = page.get_by_label("API key", exact=True)
    note = page.locator("#key-note")
    # "Bearer gpta_…" pasted whole: the console adds "Bearer " itself.
    key_field.fill(f"Bearer {console.server.key}")
    assert key_field.input_value() == console.server.key
    assert "Bearer" in note.inner_text()
    console.choose("GET /api/v1/gpt/status")
    assert console.send().startswith("200")

    # A character no header can carry: said at once, and the request is not sent.
    key_field.fill("gpta_ключ")
    assert "cannot send in a header" in note.inner_text()
    before = len(console.requests)
    assert console.send() == "Not sent"
    assert "cannot send in a header" in page.locator("#response-meta").inner_text()
    assert not [url for url in console.requests[before:] if "/api/v1/gpt/status" in url]

    # Another server over plain http: this page's policy blocks it, which is what is said.
    key_field.fill(console.server.key)
    page.locator("#server").evaluate(
        "el => { el.append(new Option('elsewhere', 'http://127.0.0.2:9')); el.value = 'http://127.0.0.2:9'; }"
    )
    assert console.send() == "Not sent"
    failure = page.locator("#failure").inner_text()
    assert "security policy" in failure and "CORS" not in failure


def test_readiness_with_a_wrong_key_and_small_accessibility_fixes(console: Console) -> None:
    page = console.open(key=False).page
    page.get_by_label("API key", exact=True).fill("gpta_not_a_key_of_this_server_000000000000")
    page.get_by_role("tab", name="GPT Actions readiness").click()
    page.wait_for_function(
        "() => document.querySelector('#readiness').textContent.includes('Checked without the API key')"
    )
    assert "Could not check" not in page.locator("#readiness").inner_text()

    # A tab list holds tabs only; every focusable code block has a name.
    roles = page.locator("[role=tablist] > *").evaluate_all(
        "els => els.map((e) => e.getAttribute('role'))"
    )
    assert set(roles) == {"tab"}
    console.choose("GET /api/v1/gpt/status")
    page.locator("#doc-responses details").first.evaluate("el => (el.open = true)")
    unnamed = page.locator("pre[tabindex]").evaluate_all(
        "els => els.filter((e) => !e.getAttribute('aria-label')).map((e) => e.id || e.className)"
    )
    assert unnamed == []
    # JSON punctuation and null read at 4.5:1 or more in the light theme.
    page.emulate_media(color_scheme="light")
    ratios = page.evaluate(
        """() => {
          const rgb = (c) => c.match(/\\d+/g).slice(0, 3).map(Number);
          const lum = (c) => { const [r, g, b] = rgb(c).map((v) => { v /= 255;
            return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
            return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
          const pre = document.querySelector("#body-pretty");
          const back = getComputedStyle(pre).backgroundColor;
          return ["t-punct", "t-null"].map((cls) => {
            const span = document.createElement("span"); span.className = cls; pre.append(span);
            const [a, b] = [lum(getComputedStyle(span).color), lum(back)].sort((x, y) => y - x);
            span.remove();
            return (a + 0.05) / (b + 0.05);
          });
        }"""
    )
    assert min(ratios) >= 4.5, ratios
