"""The sign-in pages behind a proxy's path prefix: every link and form starts with it."""

from __future__ import annotations

import re
from ipaddress import ip_network

import pytest

from gptactions.config import Settings
from gptactions.llm.fake import FakeBackend
from tests.api.test_oauth import PASSWORD, authorize_params, hidden_fields, make_client
from tests.conftest import running_app


def local_urls(html: str) -> list[str]:
    """Every form action and link of a page that points at this server."""
    return [u for u in re.findall(r'(?:action|href)="([^"]*)"', html) if u.startswith("/")]


@pytest.mark.parametrize(
    ("update", "headers"),
    [
        ({"public_url": "https://gpt.example.com/gpt"}, {}),
        ({"trusted_proxies": [ip_network("127.0.0.1/32")]}, {"X-Forwarded-Prefix": "/gpt"}),
    ],
)
async def test_every_page_links_under_the_prefix(
    settings: Settings, update: dict[str, object], headers: dict[str, str]
) -> None:
    async with running_app(settings.model_copy(update=update), FakeBackend()) as api:
        api.http.headers.update(headers)
        await api.runtime.users.create("alice", PASSWORD)
        client = await make_client(api)
        login = await api.http.get("/oauth/authorize", params=authorize_params(client))
        assert login.status_code == 200, login.text
        form = hidden_fields(login.text) | {"username": "alice", "password": PASSWORD}
        consent = await api.http.post("/oauth/authorize", data=form)
        assert consent.status_code == 200, consent.text
        applications = await api.http.get("/oauth/authorizations")
        broken = await api.http.get("/oauth/authorize", params={"client_id": "nobody"})
        pages = [login.text, consent.text, applications.text, broken.text]
    # Each page names its icon, so that a browser does not ask for /favicon.ico (a 404).
    assert all('<link rel="icon" href="data:' in html for html in pages)
    urls = [url for html in pages for url in local_urls(html)]
    assert "/gpt/oauth/authorize" in urls and "/gpt/oauth/authorizations" in urls
    assert "/gpt/console/oauth/oauth.css" in urls
    assert [url for url in urls if not url.startswith("/gpt/")] == []
