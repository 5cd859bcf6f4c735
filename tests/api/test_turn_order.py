"""Concurrent turns of one conversation are answered one at a time, each seeing the one before."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gptactions.config import Settings
from gptactions.llm.base import DeadlineReached
from gptactions.llm.fake import FakeBackend
from gptactions.services.turn_order import TurnOrder
from tests.conftest import ADMIN_KEY, running_app

API = "/api/v1/gpt"
SSE = {"Accept": "text/event-stream"}


def _user_turns(fake: FakeBackend) -> list[int]:
    """How many user messages each prompt the model was shown held, in the order shown."""
    return [sum(m.role == "user" for m in r.messages) for r in fake.requests]


@pytest.fixture
async def slow(settings: Settings) -> Any:
    """The app with a fake model that takes 50 ms a reply, so that turns overlap."""
    fake = FakeBackend(delay=0.05)
    async with running_app(settings, fake) as client:
        yield client, fake


async def test_concurrent_turns_of_a_conversation_each_see_the_one_before(slow: Any) -> None:
    api, fake = slow
    started = await api.post(f"{API}/conversations", {"userId": "u", "message": "m0"})
    conversation = started.json()["conversationId"]
    body = {"userId": "u", "conversationId": conversation}
    answers = await asyncio.gather(
        *(api.post(f"{API}/respond", {**body, "message": f"m{i}"}) for i in range(1, 5)),
        api.post(f"{API}/respond", {**body, "message": "m5"}, headers=SSE),
    )
    assert [a.status_code for a in answers] == [200] * 5
    # Each prompt holds every turn stored before it: 2, 3, ... user messages, none twice.
    assert _user_turns(fake) == [1, 2, 3, 4, 5, 6]
    logs = (await api.get(f"{API}/logs?conversationId={conversation}")).json()
    assert len(logs) == 6
    assert len(api.runtime.conversations._order) == 0  # nothing left held


async def test_concurrent_first_turns_of_a_new_user_make_one_conversation(slow: Any) -> None:
    api, fake = slow
    answers = await asyncio.gather(
        *(api.post(f"{API}/respond", {"userId": "newcomer", "message": f"m{i}"}) for i in range(4))
    )
    assert [a.status_code for a in answers] == [200] * 4
    assert len({a.json()["conversationId"] for a in answers}) == 1
    assert _user_turns(fake) == [1, 2, 3, 4]
    assert len(api.runtime.conversations._order) == 0


async def test_a_turn_that_fails_or_is_refused_lets_the_next_one_go(
    settings: Settings,
) -> None:
    fake = FakeBackend(delay=0.05)
    async with running_app(settings, fake) as api:
        started = await api.post(f"{API}/conversations", {"userId": "u", "message": "m0"})
        conversation = started.json()["conversationId"]
        body = {"userId": "u", "conversationId": conversation}
        fake.replies.append(DeadlineReached("no"))  # the first /respond's backend fails
        too_long = {**body, "message": "word " * 3000}  # refused once its turn comes: 400
        answers = await asyncio.gather(
            api.post(f"{API}/respond", {**body, "message": "fails"}),
            api.post(f"{API}/respond", too_long),
            api.post(f"{API}/respond", {**body, "message": "works"}),
        )
        assert [a.status_code for a in answers] == [503, 400, 200]
        assert len(api.runtime.conversations._order) == 0


async def test_a_stream_its_client_left_lets_the_next_turn_go(slow: Any) -> None:
    api, _ = slow
    started = await api.post(f"{API}/conversations", {"userId": "u", "message": "m0"})
    body = {"userId": "u", "conversationId": started.json()["conversationId"]}
    async with api.http.stream(
        "POST",
        f"{API}/respond",
        json={**body, "message": "a long one " * 20},
        headers={**SSE, "Authorization": f"Bearer {ADMIN_KEY}"},
    ) as streamed:
        assert streamed.status_code == 200
        async for _ in streamed.aiter_bytes():
            break  # the client leaves after the first event
    after = await asyncio.wait_for(api.post(f"{API}/respond", {**body, "message": "next"}), 5)
    assert after.status_code == 200
    assert len(api.runtime.conversations._order) == 0


async def test_waiting_past_the_deadline_is_a_503_that_leaves_the_queue() -> None:
    order = TurnOrder()
    loop = asyncio.get_running_loop()
    release = await order.enter("c", None)
    with pytest.raises(DeadlineReached):
        await order.enter("c", loop.time() + 0.01)
    assert len(order) == 1
    release()
    release()  # idempotent
    assert len(order) == 0
    again = await order.enter("c", loop.time() + 1)
    again()
    assert len(order) == 0
