"""A reply the server has sent is stored: it survives the server being killed (SIGKILL)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from gptactions.config import Settings
from gptactions.llm.fake import FakeBackend
from tests.conftest import ADMIN_KEY, running_app
from tests.serving import serve


@pytest.mark.model
async def test_replies_sent_survive_the_server_being_killed(
    database_url: str, tmp_path: Path
) -> None:
    sent = []
    environment = {"GPTACTIONS_DATABASE_URL": database_url, "GPTACTIONS_MODEL_THREADS": "1"}
    with serve(tmp_path, key=ADMIN_KEY, env=environment) as server:
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=120) as client:
            for n in range(3):
                body = {"userId": "crash", "message": f"Say hello {n}", "maxTokens": 8}
                response = await client.post("/api/v1/gpt/conversations", json=body)
                assert response.status_code == 200, response.text
                sent.append((response.json()["conversationId"], response.json()["reply"]))
        server.process.kill()  # no shutdown, no lifespan exit: only what was committed remains
        server.process.wait(timeout=30)

    settings = Settings(database_url=database_url, api_key=ADMIN_KEY)
    async with running_app(settings, FakeBackend()) as api:
        rows = (await api.get("/api/v1/gpt/logs", params={"userId": "crash"})).json()
    assert [(row["conversationId"], row["reply"]) for row in reversed(rows)] == sent
