"""At 375 px, keys in the console's code views (the OpenAPI Schema panel, response bodies) and
in the schema trees are never cut mid-word: only values wrap, and nothing scrolls sideways."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.browser.conftest import Console

pytestmark = pytest.mark.browser

# The elements under `root` matching `selector` whose boxes lie on more than one row (an inline
# element has a box per row it is on, and one per child).
BROKEN = """([root, selector]) => [...document.querySelector(root).querySelectorAll(selector)]
  .filter((el) => {
    const bottoms = [...el.getClientRects()].map((r) => r.bottom);
    return Math.max(...bottoms) - Math.min(...bottoms) > 10; // a row is 20 px high
  })
  .map((el) => el.textContent)"""


def broken(page: Any, root: str, selector: str) -> list[str]:
    """The texts of the elements that wrap (an empty list when none does)."""
    found: list[str] = page.evaluate(BROKEN, [root, selector])
    return found


def rows(locator: Any) -> float:
    """How many lines of text the element's box is tall."""
    height, line = locator.evaluate(
        "el => [el.getBoundingClientRect().height, parseFloat(getComputedStyle(el).lineHeight)]"
    )
    return float(height) / float(line)


def fits(locator: Any) -> bool:
    """Whether the element shows all its content without scrolling sideways."""
    return bool(locator.evaluate("el => el.scrollWidth <= el.clientWidth"))


def test_schema_panel_keys_stay_whole_at_375_px(console: Console) -> None:
    page = console.page
    page.set_viewport_size({"width": 375, "height": 800})
    console.open()
    view = page.locator("#schema-view")

    # The audit's case: a folded operation's key, its "…" and its summary on one line.
    head = view.locator('details[data-op="post /api/v1/gpt/respond"] > summary')
    assert head.locator(".t-key").inner_text() == "post"
    assert rows(head.locator(".t-key")) < 1.5  # an inline box: its text's height, under a line
    assert rows(head.locator(".ln")) == pytest.approx(1, abs=0.1)
    assert head.locator(".fold-hint").is_visible()
    assert broken(page, "#schema-view", "details[data-op] > summary") == []
    assert broken(page, "#schema-view", ".t-key") == []
    console.shot("31-schema-keys-375px")

    # Every key of the document, in both formats, fully open: whole, and no sideways scrolling.
    for format_name in ("YAML", "JSON"):
        page.get_by_role("button", name=format_name, exact=True).click()
        page.get_by_role("button", name="Expand all").click()
        assert broken(page, "#schema-view", ".t-key") == [], format_name
        assert broken(page, "#schema-view", ".lead") == [], format_name
        assert fits(view), f"the {format_name} view scrolls sideways"
    # Long values still wrap, under their own start.
    text = view.locator(".ln", has_text="OpenAI's Chat Completions and Models API").first
    assert rows(text) > 1.5


def test_response_body_and_schema_tree_keys_stay_whole_at_375_px(console: Console) -> None:
    # Seven levels deep, the key's indentation and the key are wider than a phone's line.
    deep: dict[str, Any] = {"description": "a value that goes on " * 8, "finishReason": "stop"}
    deep = {"x-openai-isConsequential": deep}
    for _ in range(6):
        deep = {"nested": deep}
    console.page.route(
        "**/api/v1/gpt/status",
        lambda route: route.fulfill(
            status=200, content_type="application/json", body=json.dumps(deep)
        ),
    )
    page = console.page
    page.set_viewport_size({"width": 375, "height": 800})
    console.open()
    console.choose("GET /api/v1/gpt/status")
    assert console.send().startswith("200")
    body = page.locator("#body-pretty")
    assert body.locator(".t-key", has_text="x-openai-isConsequential").count() == 1
    assert broken(page, "#body-pretty", ".t-key") == []
    assert fits(body)
    assert rows(body.locator(".ln", has_text="a value that goes on").first) > 1.5

    # The payload schema and the documented responses (their trees and examples).
    console.choose("POST /v1/chat/completions")
    page.evaluate(
        "() => document.querySelectorAll('#request-panel details, #doc-responses details').forEach(d => d.open = true)"
    )
    for root in ("#body-schema-tree", "#doc-responses-list"):
        assert broken(page, root, ".st-name") == [], root
        assert broken(page, root, ".t-key") == [], root
        assert fits(page.locator(root)), root
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 375
