"""Behind a proxy's path prefix (`/gpt`): every URL the API hands out starts with it, as the
document's `servers` does, and the console's page names no absolute path of its own."""

from __future__ import annotations

import re
from ipaddress import ip_network
from typing import Any
from urllib.parse import urlsplit

import pytest

from gptactions.api.meta import CONSOLE
from gptactions.config import Settings
from gptactions.llm.fake import FakeBackend
from tests.conftest import running_app

API = "/api/v1/gpt"
TRUSTED = {"trusted_proxies": [ip_network("127.0.0.1/32")]}


@pytest.mark.parametrize(
    ("update", "headers", "prefix"),
    [
        ({"public_url": "https://gpt.example.com/gpt"}, {}, "/gpt"),
        (TRUSTED, {"X-Forwarded-Prefix": "/gpt"}, "/gpt"),
        ({}, {"X-Forwarded-Prefix": "/gpt"}, ""),  # from a peer nobody trusts: ignored
    ],
)
async def test_links_and_redirects_carry_the_prefix(
    settings: Settings, update: dict[str, Any], headers: dict[str, str], prefix: str
) -> None:
    async with running_app(settings.model_copy(update=update), FakeBackend()) as api:
        api.http.headers.update(headers)
        for number in range(3):
            body = {"userId": "paged", "message": f"m{number}"}
            assert (await api.post(f"{API}/conversations", body)).status_code == 200
        logs = await api.get(f"{API}/logs", params={"userId": "paged", "limit": 2})
        link = re.fullmatch(r'<([^>]+)>; rel="next"', logs.headers["link"])
        # Absolute, at the host the request came to (which the caller can reach).
        origin = str(api.http.base_url).rstrip("/")
        assert link and link.group(1).startswith(
            f"{origin}{prefix}{API}/logs?userId=paged&limit=2&cursor="
        )
        servers = (await api.http.get("/openapi.json")).json()["servers"]
        assert urlsplit(servers[0]["url"]).path == prefix
        docs = await api.http.get("/docs")
        assert docs.status_code == 307 and docs.headers["location"] == f"{prefix}/"


def test_the_console_page_uses_relative_urls_only() -> None:
    """Its files, its links and its scripts' requests resolve under the page's own path."""
    absolute = re.compile(r"""(?:href|src)="/|fetch\(\s*["'`]/|url:\s*["'`]/|here\(\s*["'`][^/]""")
    pages = [CONSOLE / "index.html", *sorted(CONSOLE.glob("*.js"))]
    found = [
        f"{page.name}: {m.group()}" for page in pages for m in absolute.finditer(page.read_text())
    ]
    assert found == []
