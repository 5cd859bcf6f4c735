"""The server as a user runs it, configured with environment variables alone.

Its default backend is llama-cpp-python's OpenAI-compatible server; the embedded model is the
fallback.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.serving import serve

from .conftest import free_port

pytestmark = [pytest.mark.upstream, pytest.mark.model]

ADMIN = "gpta_upstream_e2e_key_0123456789abcdefghijk"
UPSTREAM_KEY = "sk-e2e-UPSTREAM-SECRET-31337"
API = "/api/v1/gpt"
AUTH = {"Authorization": f"Bearer {ADMIN}"}


def test_replies_come_from_the_upstream_whole_and_streamed(
    llama_server: str, tmp_path: Path
) -> None:
    env = {
        "GPTACTIONS_UPSTREAM_URL": llama_server,
        "GPTACTIONS_UPSTREAM_API_KEY": UPSTREAM_KEY,
        "GPTACTIONS_UPSTREAM_TIMEOUT": "60",
    }
    with (
        serve(tmp_path, key=ADMIN, env=env) as server,
        httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as client,
    ):
        status = client.get(f"{API}/status").json()
        backends = {b["name"]: b for b in status["backends"]}
        assert list(backends) == ["upstream", "local"]
        assert backends["upstream"]["kind"] == "openai" and backends["upstream"]["reachable"]
        upstream_model = backends["upstream"]["model"]

        body = {"userId": "e2e", "message": "What is the capital of France?", "maxTokens": 16}
        whole = client.post(f"{API}/conversations", json=body).json()
        assert whole["reply"] and whole["model"] == upstream_model

        with client.stream(
            "POST", f"{API}/respond", json=body, headers={"Accept": "text/event-stream"}
        ) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            text = "".join(response.iter_text())
        events = [block.split("\n", 1) for block in text.strip().split("\n\n")]
        assert events[-1][0] == "event: done"
        done = json.loads(events[-1][1].removeprefix("data: "))
        tokens = [json.loads(data.removeprefix("data: "))["text"] for _, data in events[:-1]]
        assert len(tokens) > 1 and "".join(tokens).strip() == done["reply"]
        assert done["model"] == upstream_model
        assert done["conversationId"] == whole["conversationId"]

        named = client.post(f"{API}/respond", json={**body, "model": "local"}).json()
        assert named["model"] != upstream_model

        logs = client.get(f"{API}/logs").json()
        assert [entry["status"] for entry in logs] == ["ok", "ok", "ok"]
        status = client.get(f"{API}/status").text
    assert UPSTREAM_KEY not in status + server.log.read_text(errors="replace")


def test_a_down_upstream_falls_back_to_the_embedded_model(tmp_path: Path) -> None:
    env = {
        "GPTACTIONS_UPSTREAM_URL": f"http://127.0.0.1:{free_port()}/v1",
        "GPTACTIONS_UPSTREAM_MODEL": "big-model",
        "GPTACTIONS_UPSTREAM_API_KEY": UPSTREAM_KEY,
    }
    with (
        serve(tmp_path, key=ADMIN, env=env) as server,
        httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as client,
    ):
        body = {"userId": "e2e", "message": "Hello!", "maxTokens": 8}
        reply = client.post(f"{API}/conversations", json=body)
        assert reply.status_code == 200 and reply.json()["reply"]
        assert reply.json()["model"] != "big-model"
        backends = {b["name"]: b for b in client.get(f"{API}/status").json()["backends"]}
        assert backends["upstream"]["reachable"] is False
        assert "unreachable" in backends["upstream"]["lastError"]
        assert backends["local"]["reachable"] is True


def test_without_the_fallback_a_down_upstream_is_a_503(tmp_path: Path) -> None:
    env = {
        "GPTACTIONS_UPSTREAM_URL": f"http://127.0.0.1:{free_port()}/v1",
        "GPTACTIONS_UPSTREAM_MODEL": "big-model",
        "GPTACTIONS_FALLBACK": "none",
    }
    with (
        serve(tmp_path, key=ADMIN, env=env) as server,
        httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as client,
    ):
        body = {"userId": "e2e", "message": "Hello!"}
        for headers in ({}, {"Accept": "text/event-stream"}):
            response = client.post(f"{API}/conversations", json=body, headers=headers)
            assert response.status_code == 503
            assert response.headers["retry-after"]
            assert response.json()["error"]["code"] == "backend_unavailable"
        logs = client.get(f"{API}/logs").json()
        assert [entry["status"] for entry in logs] == ["error", "error"]
