"""What the console shows of the document beside a request, as Swagger UI does: the payload's
schema, the documented responses; long schema lines that wrap; the logs on a phone."""

from __future__ import annotations

import copy
import uuid
from typing import Any

import httpx
import pytest

from tests.browser.conftest import Console
from tests.browser.test_console_panels import load_logs, serve_document, served_document

pytestmark = pytest.mark.browser

CONVERSATIONS = "/api/v1/gpt/conversations"
NAMES = "els => els.map(el => el.dataset.name)"


def fits(locator: Any) -> bool:
    """Whether the element shows all its content without scrolling sideways."""
    return bool(locator.evaluate("el => el.scrollWidth <= el.clientWidth"))


def test_payload_schema_lists_the_body_fields(console: Console) -> None:
    page = console.open().page
    document = served_document(console)
    request = document["components"]["schemas"]["ConversationRequest"]
    console.choose(f"POST {CONVERSATIONS}")
    schema = page.locator("#body-schema")
    assert schema.is_visible() and schema.evaluate("el => el.open")
    assert "application/json · required" in schema.locator("summary").inner_text()
    tree = page.locator("#body-schema-tree .schema-tree")
    assert tree.locator(".st-root").inner_text() == "ConversationRequest"
    fields = tree.locator(":scope > .st-children > .st-props > li")
    assert fields.evaluate_all(NAMES) == list(request["properties"])
    required = tree.locator(":scope > .st-children > .st-props > li.required")
    assert (
        sorted(required.evaluate_all(NAMES))
        == sorted(request["required"])
        == [
            "message",
            "userId",
        ]
    )
    # Each field says its type, whether it is required, its limits and its description.
    message = fields.and_(page.locator('[data-name="message"]'))
    text = message.inner_text()
    spec = request["properties"]["message"]
    assert "string" in text and "REQUIRED" in text.upper()
    assert f"{spec.get('minLength', 1)} to {spec['maxLength']} characters" in text
    assert spec["description"].split("`")[0].strip() in text
    optional = fields.and_(page.locator(":not(.required)")).first
    assert "required" not in optional.locator(".st-line").inner_text()
    # Enums and numeric bounds are spelled out.
    bounded = [
        (name, spec)
        for name, spec in request["properties"].items()
        if "maximum" in spec and "minimum" in spec
    ]
    assert bounded, "ConversationRequest has no bounded number any more: pick another field"
    name, spec = bounded[0]
    line = fields.and_(page.locator(f'[data-name="{name}"]')).inner_text()
    assert f"{spec['minimum']} to {spec['maximum']}" in line
    console.shot("20-payload-schema")

    # An operation without a body has no payload schema; the next one with a body shows its own.
    console.choose("GET /api/v1/gpt/status")
    assert schema.is_hidden()
    console.choose("POST /api/v1/gpt/actions")
    assert page.locator("#body-schema-tree .st-root").inner_text() == "ActionRequest"
    top = page.locator("#body-schema-tree .schema-tree > .st-children")
    action = top.locator(':scope > .st-props > li[data-name="action"]')
    assert "one of" in action.inner_text() and "summarize" in action.inner_text()
    # Each action's parameters are a variant of the body, chosen by the action's name.
    assert "chosen by action" in top.inner_text()
    variant = top.locator(".st-options > li").filter(has_text="ActionRequest_summarize")
    variant.locator("summary").first.click()
    assert variant.locator('li[data-name="text"]').first.is_visible()


def test_documented_responses_of_the_chosen_operation(console: Console) -> None:
    page = console.open().page
    document = served_document(console)
    console.choose(f"POST {CONVERSATIONS}")
    documented = sorted(document["paths"][CONVERSATIONS]["post"]["responses"], key=int)
    assert {"200", "400", "401", "429", "503"} <= set(documented)
    section = page.locator("#doc-responses")
    items = section.locator("details.doc-response")
    assert items.evaluate_all("els => els.map(el => el.dataset.status)") == documented
    assert section.locator("#doc-responses-count").inner_text() == str(len(documented))
    assert f"POST {CONVERSATIONS}" in section.inner_text()
    # Collapsed until opened; then the schema of the body and an example.
    ok = section.locator('details[data-status="200"]')
    assert not ok.evaluate("el => el.open")
    assert "GPT's reply" in ok.locator(":scope > summary").inner_text()
    ok.locator(":scope > summary").click()
    tree = ok.locator(".schema-tree").first
    assert tree.locator(".st-root").inner_text() == "ConversationResponse"
    assert {"conversationId", "reply"} <= set(
        tree.locator(":scope > .st-children > .st-props > li").evaluate_all(NAMES)
    )
    assert "text/event-stream" in ok.inner_text()
    ok.get_by_text("Example value").first.click()
    assert '"conversationId"' in ok.locator("pre.st-example-code").first.inner_text()
    # An error's schema is the one error shape, nested fields folded open one level.
    limited = section.locator('details[data-status="429"]')
    limited.locator(":scope > summary").click()
    assert "rate" in limited.locator(":scope > summary").inner_text()
    error = limited.locator('li[data-name="error"]')
    assert {"code", "message", "details"} <= set(error.locator("li").evaluate_all(NAMES))

    # The answer just received is marked in the list.
    console.choose("GET /api/v1/gpt/status")
    assert console.send().startswith("200")
    received = section.locator("details.doc-response.received")
    assert received.count() == 1 and received.get_attribute("data-status") == "200"
    assert received.locator(".received-flag").is_visible()
    console.shot("21-documented-responses")


def test_schema_text_is_never_markup(console: Console) -> None:
    document = copy.deepcopy(served_document(console))
    request = document["components"]["schemas"]["ConversationRequest"]
    request["properties"]["message"]["description"] = "<img src=x id=injected> `<b>code</b>`"
    request["properties"]["tags"] = {
        "type": "array",
        "items": {"type": "string", "enum": ["<i>a</i>"], "maxLength": 9},
        "description": "Tags.\n\n```\n<script>alert(1)</script>\n```",
    }
    serve_document(console, document)
    page = console.open().page
    console.choose(f"POST {CONVERSATIONS}")
    tree = page.locator("#body-schema-tree")
    assert page.locator("#injected").count() == 0
    assert tree.locator("img, b, i, script").count() == 0
    text = tree.inner_text()
    assert "<img src=x id=injected>" in text and "<b>code</b>" in text
    assert '"<i>a</i>"' in text and "each item: at most 9 characters" in text
    assert tree.locator("pre.st-pre").inner_text() == "<script>alert(1)</script>"


def test_long_schema_lines_wrap(console: Console) -> None:
    document = copy.deepcopy(served_document(console))
    long_words = "A description that goes on and on, " * 12
    unbroken = "x" * 300
    status = document["paths"]["/api/v1/gpt/status"]["get"]
    status["description"] = long_words + unbroken
    request = document["components"]["schemas"]["ConversationRequest"]
    request["properties"]["message"]["pattern"] = "^" + "[a-z]" * 80 + "$"
    serve_document(console, document)
    page = console.page
    page.set_viewport_size({"width": 900, "height": 900})
    console.open()
    view = page.locator("#schema-view")
    for format_name in ("YAML", "JSON"):
        page.get_by_role("button", name=format_name, exact=True).click()
        page.get_by_role("button", name="Expand all").click()
        assert fits(view), f"the {format_name} view scrolls sideways"
        line = view.locator(".ln", has_text=unbroken[:50]).first
        # It wraps onto several rows, the later ones indented further than the line's start.
        height, row = line.evaluate(
            "el => [el.getBoundingClientRect().height, parseFloat(getComputedStyle(el).lineHeight)]"
        )
        assert height > 3 * row
        indent = line.evaluate("el => parseFloat(getComputedStyle(el).paddingLeft)")
        assert indent > 40, "the wrapped rows do not hang under the line's start"
    # The payload schema and the documented responses wrap too.
    console.choose(f"POST {CONVERSATIONS}")
    assert fits(page.locator("#body-schema-tree"))
    assert fits(page.locator("#response-panel"))
    copied = page.evaluate("() => window.gptConsole.schemaPanel.text()")
    assert unbroken in copied  # wrapping is the view's only: the text stays one line
    console.shot("22-long-lines-wrap")


def test_logs_read_as_cards_on_a_phone(console: Console) -> None:
    user = f"browser-phone-{uuid.uuid4().hex[:8]}"
    message = "A rather long question about invoices, refunds and a parcel that never came. " * 3
    answer = httpx.post(
        f"{console.server.url}/api/v1/gpt/conversations",
        json={"userId": user, "message": message, "maxTokens": 4},
        headers={"Authorization": f"Bearer {console.server.key}"},
        timeout=120,
    )
    assert answer.status_code == 200
    page = console.page
    table = load_logs(console, userId=user)
    page.set_viewport_size({"width": 375, "height": 800})
    page.wait_for_function("() => document.documentElement.scrollWidth <= 375")
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 375
    # Nothing to scroll sideways inside the pane either: each row is a card of labelled values.
    assert fits(page.locator("#logs-wrap"))
    assert page.locator("#logs-scroll-cue").is_hidden()
    row = table.locator("tbody tr").first
    box = row.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 375
    cell = row.locator('td[data-label="Message"]')
    label = cell.evaluate("el => getComputedStyle(el, '::before').content")
    assert "Message" in label
    assert cell.is_visible() and cell.bounding_box()["width"] < 375  # type: ignore[index]
    # The column names are still the table's for screen readers.
    assert table.get_by_role("columnheader", name="Message").count() == 1
    assert table.get_by_role("cell").first.is_visible()
    console.shot("23-logs-375px")


TRICKY_SCHEMAS: dict[str, Any] = {
    "Base": {
        "type": "object",
        "required": ["id"],
        "properties": {"id": {"type": "string", "format": "uuid"}},
    },
    "Pet": {
        "allOf": [
            {"$ref": "#/components/schemas/Base"},
            {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"anyOf": [{"type": "string", "maxLength": 5}, {"type": "null"}]},
                    "weight": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                    "scores": {"type": "object", "additionalProperties": {"type": "integer"}},
                    "friends": {"type": "array", "items": {"$ref": "#/components/schemas/Pet"}},
                },
            },
        ]
    },
}


def test_schema_tree_merges_allof_and_stops_at_cycles(console: Console) -> None:
    page = console.open(key=False).page
    lines = page.evaluate(
        """async (schemas) => {
          const { schemaTree } = await import('/console/schema-tree.js');
          const doc = { components: { schemas } };
          const tree = schemaTree(doc, { $ref: '#/components/schemas/Pet' });
          document.body.append(tree);
          const props = [...tree.querySelectorAll(':scope > .st-children > .st-props > li')];
          const out = props.map((li) => [li.dataset.name, li.classList.contains('required'),
            li.querySelector('.st-type').textContent, li.querySelector('.st-limits')?.textContent ?? '']);
          out.push(['root', false, tree.querySelector('.st-root').textContent, tree.innerText]);
          tree.remove();
          return out;
        }""",
        TRICKY_SCHEMAS,
    )
    *fields, (_, _, root, text) = lines
    assert root == "Pet"
    assert fields == [
        ["id", True, "string (uuid)", ""],
        ["name", True, "string or null", "at most 5 characters"],
        ["weight", False, "number", "> 0, ≤ 1"],
        ["scores", False, "map of integer", ""],
        ["friends", False, "array of Pet", ""],
    ]
    assert "Pet again (it contains itself; see above)." in text
