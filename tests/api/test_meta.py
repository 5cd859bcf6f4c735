"""The routes around the API: health for load balancers, the document, the console."""

from __future__ import annotations

from pathlib import Path

import pytest

from gptactions.config import Settings
from gptactions.llm.fake import FakeBackend
from gptactions.services.keys import NoKeys
from tests.conftest import ADMIN_KEY, ApiClient, running_app


async def test_health_answers_get_and_head(api: ApiClient) -> None:
    got = await api.http.get("/healthz")
    assert got.status_code == 200
    assert got.json() == {"status": "ok", "database": "ok"}
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


async def test_action_user_ids_follow_the_configured_limit(tmp_path: Path) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'limits.db'}",
        api_key=ADMIN_KEY,
        max_user_id_length=8,
    )
    async with running_app(settings, FakeBackend()) as api:
        body = {"action": "summarize", "parameters": {"text": "x"}, "userId": "u" * 9}
        response = await api.post("/api/v1/gpt/actions", body)
        assert response.status_code == 400
        assert response.json()["error"]["details"][0]["pointer"] == "/userId"
        document = (await api.http.get("/openapi.json")).json()
        action_request = document["components"]["schemas"]["ActionRequest"]
        assert action_request["properties"]["userId"]["maxLength"] == 8
