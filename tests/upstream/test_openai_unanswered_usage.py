"""An upstream's tokens on the paths that used to drop them, with the fault-injecting upstream
over real HTTP: a streamed reply whose client hangs up before the first piece is charged the
prompt's estimate (as a whole reply is), and so is an upstream that began answering (200) and then
broke its answer before a fallback answered. One refused with a status generated nothing known."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from gptactions.config import Settings
from gptactions.llm.base import ChatMessage
from gptactions.llm.fake import FakeBackend
from gptactions.llm.openai import OpenAIBackend
from gptactions.llm.openai_wire import estimated_prompt_tokens
from gptactions.llm.router import BackendRouter
from tests.conftest import ADMIN_KEY

from .faulty import FaultyUpstream
from .test_openai_compat_faults import latest_log
from .test_streaming_api import served

pytestmark = pytest.mark.upstream

AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
CHAT = "/v1/chat/completions"
PROMPT = "Write a long story about a cat."
HELLO: dict[str, Any] = {"messages": [{"role": "user", "content": PROMPT}]}
ESTIMATE = estimated_prompt_tokens((ChatMessage("user", PROMPT),))


@pytest.mark.parametrize("path", ["v1", "conversations"])
async def test_a_stream_left_before_its_first_piece_counts_the_prompts_estimate(
    settings: Settings, faulty: FaultyUpstream, path: str
) -> None:
    upstream = OpenAIBackend(name="upstream", base_url=faulty.url("hang-30"), model="m")
    if path == "v1":
        url, body, headers = CHAT, {**HELLO, "stream": True}, AUTH
    else:
        url, body = "/api/v1/gpt/conversations", {"userId": "u", "message": PROMPT}
        headers = {**AUTH, "Accept": "text/event-stream"}
    async with served(settings, BackendRouter([upstream])) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post(url, json=body, headers=headers, timeout=0.5)
        assert await asyncio.to_thread(faulty.wait_for_disconnects, 1)
        entry = await latest_log(client)
    # The messages the upstream was given (a conversation's have a system prompt first).
    (asked,) = [r for r in faulty.requests if r.path.endswith("/chat/completions")]
    given = tuple(ChatMessage(m["role"], m["content"]) for m in asked.body["messages"])
    assert entry["status"] == "cancelled" and entry["reply"] == ""
    assert (entry["promptTokens"], entry["completionTokens"]) == (
        estimated_prompt_tokens(given),
        0,
    )


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("mode", "charged"), [("malformed", ESTIMATE), ("500", 0)])
async def test_a_fallbacks_reply_counts_what_the_upstream_was_given(
    settings: Settings, faulty: FaultyUpstream, stream: bool, mode: str, charged: int
) -> None:
    upstream = OpenAIBackend(name="upstream", base_url=faulty.url(mode), model="m", max_retries=0)
    spare = FakeBackend(["The end."], name="spare")
    router = BackendRouter([upstream, spare], default="upstream", fallbacks=["spare"])
    async with served(settings, router) as client:
        response = await client.post(CHAT, json={**HELLO, "stream": stream}, headers=AUTH)
        assert response.status_code == 200, response.text
        entry = await latest_log(client)
    answered = await spare.count_tokens(spare.requests[0].messages)
    assert entry["status"] == "ok" and entry["reply"] == "The end."
    assert entry["promptTokens"] == charged + answered
    if not stream:
        assert response.json()["usage"]["prompt_tokens"] == charged + answered
