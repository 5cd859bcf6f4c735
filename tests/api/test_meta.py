"""The routes around the API: health for load balancers, the document, the console."""

from __future__ import annotations

from pathlib import Path

import pytest

from gptactions.config import Settings
from gptactions.llm.fake import FakeBackend
from gptactions.services.keys import NoKeys
from tests.conftest import ApiClient, running_app


async def test_health_answers_get_and_head(api: ApiClient) -> None:
    got = await api.http.get("/healthz")
    assert got.status_code == 200
    assert got.json() == {"status": "ok"}
    head = await api.http.head("/healthz")
    assert head.status_code == 200


async def test_health_needs_no_key_and_is_not_in_the_document(api: ApiClient) -> None:
    document = (await api.http.get("/openapi.json")).json()
    assert "/healthz" not in document["paths"]
    assert (await api.http.get("/docs")).headers["location"] == "/"


async def test_an_app_without_any_key_refuses_to_start(tmp_path: Path) -> None:
    # Outside `gptactions serve` a generated key could not be shown, so none is generated.
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(NoKeys, match="GPTACTIONS_API_KEY"):
        async with running_app(settings, FakeBackend()):
            pass
