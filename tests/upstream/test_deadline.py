"""The request deadline against a slow upstream, through a real HTTP server."""

from __future__ import annotations

import json
import time

import pytest

from gptactions.config import Settings
from gptactions.llm.openai import OpenAIBackend
from gptactions.llm.router import BackendRouter
from tests.conftest import ADMIN_KEY

from .faulty import REPLY, FaultyUpstream
from .test_streaming_api import SSE, events, served

API = "/api/v1/gpt"
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}


def quick(settings: Settings, seconds: float = 2.0) -> Settings:
    return settings.model_copy(update={"request_deadline": seconds})


@pytest.mark.upstream
async def test_a_slow_upstream_reply_is_cut_at_the_deadline(
    settings: Settings, faulty: FaultyUpstream
) -> None:
    # One word a second: the reply (five words) is far from done when the deadline comes.
    upstream = OpenAIBackend(name="upstream", base_url=faulty.url("drip-1.0"), model="m")
    async with served(quick(settings, 3.0), BackendRouter([upstream])) as client:
        answer = await client.post(
            f"{API}/conversations", json={"userId": "u", "message": "hi"}, headers=AUTH
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["finishReason"] == "deadline" and body["truncated"] is True
        assert body["reply"] and REPLY.startswith(body["reply"]) and body["reply"] != REPLY
        assert faulty.wait_for_disconnects(1)  # the upstream request was closed
        (entry, *_) = (await client.get(f"{API}/logs", headers=AUTH)).json()
        assert entry["status"] == "ok" and entry["finishReason"] == "deadline"

        streamed = await client.post(
            f"{API}/conversations",
            json={"userId": "u", "message": "hi"},
            headers={**AUTH, **SSE},
        )
        received = events(streamed.text)
        assert received[-1][0] == "done" and received[-1][1]["finishReason"] == "deadline"


@pytest.mark.upstream
async def test_a_reply_the_upstreams_own_time_limit_cuts_is_answered_with_what_came(
    settings: Settings, faulty: FaultyUpstream
) -> None:
    """GPTACTIONS_UPSTREAM_TIMEOUT (35 s) is below the request's deadline (40 s): a reply still
    coming when it passes is answered as at the deadline, not thrown away for a 504."""
    upstream = OpenAIBackend(
        name="upstream", base_url=faulty.url("drip-0.5"), model="m", total_timeout=1.6
    )
    async with served(quick(settings, 10.0), BackendRouter([upstream])) as client:
        answer = await client.post(
            f"{API}/conversations", json={"userId": "u", "message": "hi"}, headers=AUTH
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["finishReason"] == "deadline" and body["truncated"] is True
        assert body["reply"] and REPLY.startswith(body["reply"]) and body["reply"] != REPLY
        streamed = await client.post(
            f"{API}/conversations",
            json={"userId": "u", "message": "hi"},
            headers={**AUTH, **SSE},
        )
        received = events(streamed.text)
        assert received[-1][0] == "done" and received[-1][1]["finishReason"] == "deadline"


@pytest.mark.upstream
async def test_an_upstream_that_never_answers_is_a_503_before_the_deadline(
    settings: Settings, faulty: FaultyUpstream
) -> None:
    upstream = OpenAIBackend(name="upstream", base_url=faulty.url("hang-30"), model="m")
    async with served(quick(settings), BackendRouter([upstream])) as client:
        for headers in (AUTH, {**AUTH, **SSE}):
            began = time.monotonic()
            answer = await client.post(
                f"{API}/conversations", json={"userId": "u", "message": "hi"}, headers=headers
            )
            # Long before the upstream would have answered (30 s), and not a timeout.
            assert time.monotonic() - began < 30
            assert answer.status_code == 503, answer.text
            assert int(answer.headers["retry-after"]) >= 1
            assert json.loads(answer.text)["error"]["code"] == "deadline_exceeded"
        action = await client.post(
            f"{API}/actions",
            json={"action": "answer", "parameters": {"question": "?"}},
            headers=AUTH,
        )
        assert action.status_code == 503 and "retry-after" in action.headers


def test_upstream_timeouts_default_below_the_deadline() -> None:
    settings = Settings()
    assert settings.upstream_timeout < settings.request_deadline <= 45
