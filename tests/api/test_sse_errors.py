"""A stream whose turn cannot be stored ends with the API's `database_unavailable`, as a JSON
answer's 503 does, and without a traceback per stream (the outage log says it once)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gptactions.api.sse import reply_events
from gptactions.store.outage import DatabaseUnavailable


class Unstorable:
    """A reply stream that sends a piece, then finds the database gone as it stores the turn."""

    reply = None

    async def pieces(self) -> AsyncIterator[str]:
        yield "Hel"
        raise DatabaseUnavailable("the database", OSError("disk full"))


async def test_a_stream_that_cannot_be_stored_says_the_database_is_unavailable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stream: Any = Unstorable()
    with caplog.at_level(logging.ERROR):
        events = [e.decode() async for e in reply_events(stream, lambda reply: {})]
    assert events[0].startswith("event: token")
    name, data = events[-1].split("\n")[:2]
    assert name == "event: error"
    error = json.loads(data.removeprefix("data: "))["error"]
    assert error["code"] == "database_unavailable" and "retry shortly" in error["message"]
    assert not caplog.records  # no traceback: the outage log has said it
