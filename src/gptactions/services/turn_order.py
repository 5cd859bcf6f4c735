"""One turn at a time per conversation, in the order they arrive, so each sees the one before.

Two `/respond` calls for one conversation at once both read its history before either reply was
stored: the second turn's prompt lacked the first, and two `/respond` calls without a
conversationId, for a user who had none, started two conversations. Here a turn that continues a
conversation waits for the one in progress; one without a conversationId holds its user's turns
while it finds (or starts) their latest conversation, and until its own turn is stored.

The order holds within a process. Across workers or replicas two turns may still overlap (a lock
in the database for every turn would cost the request path far more than it saves them).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from gptactions.llm.base import DEADLINE_RETRY_AFTER, DeadlineReached

Release = Callable[[], None]
"""Lets the next turn go; idempotent."""


@dataclass
class _Queue:
    lock: asyncio.Lock
    holders: int = 0
    """Turns holding or waiting for the lock: the queue is dropped when none is left."""


class TurnOrder:
    """Per-key FIFO locks (a conversation's id, or a user's) that are dropped once unused."""

    def __init__(self) -> None:
        self._queues: dict[Hashable, _Queue] = {}

    async def enter(self, key: Hashable, deadline: float | None) -> Release:
        """Wait for the turn before this one under `key` (until `deadline`, loop time)."""
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = _Queue(asyncio.Lock())
        queue.holders += 1
        try:
            async with asyncio.timeout_at(deadline):
                await queue.lock.acquire()
        except BaseException as error:
            self._leave(key, queue)
            if isinstance(error, TimeoutError):
                raise DeadlineReached(
                    "an earlier turn of this conversation was still being answered at the "
                    "request's deadline; try again shortly",
                    retry_after=DEADLINE_RETRY_AFTER,
                ) from None
            raise
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                queue.lock.release()
                self._leave(key, queue)

        return release

    def _leave(self, key: Hashable, queue: _Queue) -> None:
        queue.holders -= 1
        if queue.holders == 0 and self._queues.get(key) is queue:
            del self._queues[key]

    def __len__(self) -> int:
        """How many keys have a turn in progress or waiting (for tests)."""
        return len(self._queues)
