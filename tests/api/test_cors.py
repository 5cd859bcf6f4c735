"""CORS: pages of the configured origins may call the API from a browser; nobody else's."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from gptactions.config import Settings
from gptactions.llm.fake import FakeBackend
from tests.conftest import ADMIN_KEY, ApiClient, running_app

API = "/api/v1/gpt"
APP = "https://app.example.com"
PREFLIGHT = {
    "Origin": APP,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type, x-request-id",
}


def _settings(tmp_path: Path, origins: str) -> Settings:
    return Settings(
        database_url=f"sqlite:///{tmp_path}/cors.db", api_key=ADMIN_KEY, cors_origins=origins
    )


async def test_a_listed_origin_may_call_and_read_the_answers(tmp_path: Path) -> None:
    async with running_app(
        _settings(tmp_path, f"{APP},http://localhost:5173"), FakeBackend()
    ) as api:
        preflight = await api.http.options(f"{API}/conversations", headers=PREFLIGHT)
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == APP
        assert "POST" in preflight.headers["access-control-allow-methods"]
        assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
        assert "access-control-allow-credentials" not in preflight.headers
        body = {"userId": "u", "message": "hi"}
        answer = await api.post(f"{API}/conversations", body, headers={"Origin": APP})
        assert answer.status_code == 200
        assert answer.headers["access-control-allow-origin"] == APP
        # Errors too, so the page can read what went wrong.
        refused = await api.post(f"{API}/conversations", body, key=None, headers={"Origin": APP})
        assert refused.status_code == 401
        assert refused.headers["access-control-allow-origin"] == APP
        assert "WWW-Authenticate" in refused.headers["access-control-expose-headers"]
        other = await api.post(
            f"{API}/conversations", body, headers={"Origin": "https://evil.example"}
        )
        assert "access-control-allow-origin" not in other.headers
        evil = await api.http.options(
            f"{API}/conversations", headers={**PREFLIGHT, "Origin": "https://evil.example"}
        )
        assert evil.status_code == 400
        assert "access-control-allow-origin" not in evil.headers


async def test_without_the_setting_no_cors_headers_are_sent(api: ApiClient) -> None:
    preflight = await api.http.options(f"{API}/conversations", headers=PREFLIGHT)
    assert preflight.status_code == 405
    assert "access-control-allow-origin" not in preflight.headers
    answer = await api.get(f"{API}/status", headers={"Origin": APP})
    assert "access-control-allow-origin" not in answer.headers


@pytest.mark.parametrize("origin", ["app.example.com", "https://app.example.com/path", "ftp://x"])
def test_an_origin_that_is_not_one_is_refused_at_start(tmp_path: Path, origin: str) -> None:
    with pytest.raises(ValidationError, match="is not an origin"):
        _settings(tmp_path, origin)
