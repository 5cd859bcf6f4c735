"""The console's Server tab: the main figures of /metrics, and the parsing behind them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.browser.conftest import Console, open_console
from tests.serving import Server

pytestmark = pytest.mark.browser


def test_the_server_tab_shows_the_main_figures(console: Console) -> None:
    console.open()
    console.page.get_by_role("tab", name="Server").click()
    figures = console.page.locator("#server-figures .figure")
    figures.first.wait_for()
    assert figures.count() == 12
    requests = console.page.locator("[data-figure=requests] dd").text_content()
    assert int(str(requests).replace(",", "")) > 0
    before = int(str(requests).replace(",", ""))
    console.page.get_by_role("button", name="Refresh", exact=True).click()
    console.page.wait_for_function(
        "n => Number(document.querySelector('[data-figure=requests] dd')"
        ".textContent.replaceAll(',', '')) > n",
        arg=before,
    )
    console.shot("console-server-tab")


@pytest.fixture
def module_console(browser: Any, server: Server) -> Iterator[Console]:
    """The console with its security policy bypassed, to evaluate its modules in the page."""
    with open_console(browser, server, bypass_csp=True) as opened:
        yield opened.open(key=False)


def test_the_page_is_read_as_prometheus_reads_it(module_console: Console, server: Server) -> None:
    headers = {"Authorization": f"Bearer {server.key}"}
    for _ in range(3):
        httpx.get(f"{server.url}/api/v1/gpt/status", headers=headers, timeout=30)
    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    parsed = module_console.page.evaluate(
        "async (text) => { const m = await import('/console/server.js');"
        " const samples = m.parseMetrics(text);"
        " return { samples, figures: m.summarize(samples),"
        " median: m.quantile(samples, 'gptactions_http_request_duration_seconds', 0.5) }; }",
        text,
    )
    expected = [
        (s.name, s.labels, s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("gptactions_")
    ]
    got = [
        (s["name"], s["labels"], s["value"])
        for s in parsed["samples"]
        if s["name"].startswith("gptactions_")
    ]
    assert got == expected
    requests = sum(v for n, _, v in expected if n == "gptactions_http_requests_total")
    assert parsed["figures"]["requests"] == requests
    assert 0 < parsed["median"] < 120
