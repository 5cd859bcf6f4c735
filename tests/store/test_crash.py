"""A reply the server has sent is stored: it survives the server being killed (SIGKILL)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from gptactions.config import Settings
from gptactions.llm.fake import FakeBackend
from tests.conftest import ADMIN_KEY, running_app

AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def _server(database_url: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPTACTIONS_")}
    env.update(
        GPTACTIONS_DATABASE_URL=database_url,
        GPTACTIONS_API_KEY=ADMIN_KEY,
        GPTACTIONS_PORT=str(port),
        GPTACTIONS_MODEL_THREADS="1",
        GPTACTIONS_LOG_LEVEL="warning",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "gptactions", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield process, f"http://127.0.0.1:{port}"
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


async def _ready(client: httpx.AsyncClient, process: subprocess.Popen[bytes]) -> None:
    for _ in range(600):
        assert process.poll() is None, "the server exited during start-up"
        try:
            response = await client.get("/api/v1/gpt/status")
            if response.status_code == 200 and response.json()["status"] == "online":
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.1)
    pytest.fail("the server did not become ready in 60 s")


@pytest.mark.model
async def test_replies_sent_survive_the_server_being_killed(database_url: str) -> None:
    sent = []
    with _server(database_url) as (process, url):
        async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=120) as client:
            await _ready(client, process)
            for n in range(3):
                body = {"userId": "crash", "message": f"Say hello {n}", "maxTokens": 8}
                response = await client.post("/api/v1/gpt/conversations", json=body)
                assert response.status_code == 200, response.text
                sent.append((response.json()["conversationId"], response.json()["reply"]))
        process.kill()  # no shutdown, no lifespan exit: only what was committed remains
        process.wait(timeout=30)

    settings = Settings(database_url=database_url, api_key=ADMIN_KEY)
    async with running_app(settings, FakeBackend()) as api:
        rows = (await api.get("/api/v1/gpt/logs", params={"userId": "crash"})).json()
    assert [(row["conversationId"], row["reply"]) for row in reversed(rows)] == sent
