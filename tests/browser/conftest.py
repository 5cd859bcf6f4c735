"""Fixtures for the console's browser tests: the real server in a subprocess, headless Chromium."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.serving import Server, serve

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
API_KEY = "gpta_browser_test_key_0123456789abcdefghijkl"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-output" / "screenshots"


# Package scope: Playwright's sync API keeps an event loop running while it is open, so it must
# stop before the asyncio tests of other packages run.
@pytest.fixture(scope="package")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One real `gptactions serve` (embedded model, SQLite in a temp dir) for the browser tests."""
    if not CHROMIUM.exists():
        pytest.skip(
            f"{CHROMIUM} is missing: install Debian's chromium package to run browser tests"
        )
    # It trusts the loopback's proxy headers: the prefix test puts nginx in front of it
    # (tests/browser/test_console_prefix.py); the browser itself sends none.
    trusted = {"GPTACTIONS_TRUSTED_PROXIES": "127.0.0.1"}
    directory = tmp_path_factory.mktemp("console-server")
    with serve(directory, key=API_KEY, timeout=180, env=trusted) as running:
        # The console needs the document; wait for it as well as for /healthz.
        httpx.get(f"{running.url}/openapi.json", timeout=30).raise_for_status()
        yield running


@pytest.fixture(scope="package")
def browser(server: Server) -> Iterator[Any]:
    """Debian's Chromium, driven by Playwright (which cannot download its own browsers here)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@dataclass
class Console:
    """A page on the console, the server behind it, and what the page reported."""

    page: Any
    server: Server
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def open(self, *, key: bool = True) -> Console:
        """Load the console, wait until it has read the document, and paste the key."""
        self.page.goto(self.server.url + "/")
        self.page.wait_for_selector("html[data-ready=true]")
        if key:
            self.page.get_by_label("API key", exact=True).fill(self.server.key)
        return self

    def choose(self, endpoint: str) -> None:
        """Pick an endpoint by its "METHOD /path" prefix."""
        value = endpoint.split(" ")[0].lower() + " " + endpoint.split(" ", 1)[1]
        self.page.get_by_label("Endpoint", exact=True).select_option(value)

    def payload(self, text: str) -> None:
        """Replace the request payload."""
        self.page.get_by_label("Request Payload", exact=True).fill(text)

    def send(self, *, keyboard: bool = False) -> str:
        """Send (the button, or Ctrl+Enter) and return the Status Code once the answer is shown."""
        shown = self.shown()
        if keyboard:
            self.page.keyboard.press("Control+Enter")
        else:
            self.page.get_by_role("button", name="Send", exact=True).click()
        self.page.wait_for_function(
            f"() => Number(document.querySelector('#response-panel').dataset.shown || 0) > {shown}"
        )
        return str(self.page.locator("#status-code").text_content()).strip()

    def shown(self) -> int:
        """How many answers the page has shown so far."""
        return int(
            self.page.eval_on_selector("#response-panel", "el => Number(el.dataset.shown || 0)")
        )

    def body(self) -> str:
        """The raw response body."""
        return str(self.page.locator("#body-raw").text_content())

    def shot(self, name: str) -> Path:
        """Save a full-page screenshot under test-output/screenshots."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


@contextmanager
def open_console(browser: Any, server: Server, **options: Any) -> Iterator[Console]:
    """A fresh browser context (empty storage); fails the test on any page error."""
    context = browser.new_context(
        viewport={"width": 1400, "height": 1000}, accept_downloads=True, **options
    )
    page = context.new_page()
    page.set_default_timeout(60_000)
    result = Console(page, server)
    page.on("pageerror", lambda error: result.errors.append(str(error)))
    page.on("request", lambda request: result.requests.append(request.url))
    yield result
    context.close()
    assert result.errors == [], f"errors on the page: {result.errors}"


@pytest.fixture
def console(browser: Any, server: Server) -> Iterator[Console]:
    """The console in a fresh browser context, under the server's own security policy."""
    with open_console(browser, server) as opened:
        yield opened


@dataclass
class ChatGPTTab:
    """A browser tab where ChatGPT's OAuth callback is intercepted: the URLs it was sent to, and
    every page error and console error on the way."""

    page: Any
    landed: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


@contextmanager
def chatgpt_tab(browser: Any) -> Iterator[ChatGPTTab]:
    """A new tab whose visits to chat.openai.com are answered here and recorded; closed after."""
    context = browser.new_context()
    tab = ChatGPTTab(context.new_page())
    tab.page.set_default_timeout(60_000)
    tab.page.on("pageerror", lambda error: tab.problems.append(str(error)))
    tab.page.on(
        "console",
        lambda message: tab.problems.append(message.text) if message.type == "error" else None,
    )

    def back_in_chatgpt(route: Any) -> None:
        tab.landed.append(route.request.url)
        route.fulfill(status=200, content_type="text/html", body="<p>back in ChatGPT</p>")

    tab.page.route("https://chat.openai.com/**", back_in_chatgpt)
    try:
        yield tab
    finally:
        context.close()


def status_number(text: str) -> int:
    """200 from "200 OK"."""
    match = re.match(r"\d{3}", text)
    assert match, f"no status code in {text!r}"
    return int(match.group())
