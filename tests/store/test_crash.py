"""A reply the server has sent is stored: it survives the server being killed (SIGKILL)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from gptactions.config import Settings
from gptactions.llm.fake import FakeBackend
from tests.conftest import ADMIN_KEY, running_app
from tests.serving import children, ended_within, serve
from tests.upstream.faulty import FaultyUpstream


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


CLIENTS = 32
KILL_AFTER = 64
"""Replies acknowledged before the kill: about two seconds of load on this machine, with the
other clients' requests in flight (an event to wait for, not a time)."""


@pytest.mark.upstream
@pytest.mark.parametrize("run", range(5))
async def test_replies_sent_under_load_survive_the_server_being_killed(
    database_url: str, tmp_path: Path, run: int
) -> None:
    upstream = FaultyUpstream().start()
    acknowledged: list[str] = []
    enough = asyncio.Event()
    environment = {
        "GPTACTIONS_DATABASE_URL": database_url,
        "GPTACTIONS_BACKENDS": json.dumps([{"name": "up", "url": upstream.url("ok")}]),
        "GPTACTIONS_FALLBACK": "none",
    }

    async def client(http: httpx.AsyncClient, n: int) -> None:
        body = {"userId": f"load{n}", "message": "hello"}
        while True:
            try:
                response = await http.post("/api/v1/gpt/conversations", json=body)
            except httpx.TransportError:
                return  # the server is gone
            assert response.status_code == 200, response.text
            acknowledged.append(response.json()["conversationId"])
            if len(acknowledged) >= KILL_AFTER:
                enough.set()

    try:
        with serve(tmp_path, key=ADMIN_KEY, env=environment) as server:
            headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
            limits = httpx.Limits(max_connections=CLIENTS)
            async with httpx.AsyncClient(
                base_url=server.url, headers=headers, timeout=60, limits=limits
            ) as http:
                clients = [asyncio.create_task(client(http, n)) for n in range(CLIENTS)]
                await enough.wait()
                writers = children(server.process.pid)  # its SQLite writer's process
                server.process.kill()  # mid-load: no shutdown, only what was committed remains
                await asyncio.gather(*clients)
            server.process.wait(timeout=30)
            # The writer's process ends with its server (its input closed), never left behind.
            if database_url.startswith("sqlite"):
                assert writers
            assert all(ended_within(pid, 30) for pid in writers)
    finally:
        upstream.stop()

    settings = Settings(database_url=database_url, api_key=ADMIN_KEY)
    async with running_app(settings, FakeBackend()) as api:
        stored: set[str] = set()
        url: str | None = "/api/v1/gpt/logs?limit=1000"
        while url:  # every page, following the Link header
            page = await api.get(url)
            assert page.status_code == 200, page.text
            stored.update(row["conversationId"] for row in page.json())
            url = page.links.get("next", {}).get("url")
    assert len(acknowledged) >= KILL_AFTER
    assert set(acknowledged) <= stored
