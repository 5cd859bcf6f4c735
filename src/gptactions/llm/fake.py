"""A fake backend for logic tests: canned replies, or an echo of the last user message."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Iterable

from gptactions.llm.base import (
    BackendError,
    BackendState,
    ChatMessage,
    Chunk,
    Generation,
    GenerationRequest,
    Usage,
)


class FakeBackend:
    """Answers from a queue of canned replies; when the queue is empty, echoes the last user turn.

    Every request it receives is kept in `requests`, so tests can check what the model was shown.
    A reply that is an exception instance is raised instead of answered.
    """

    kind = "fake"

    def __init__(
        self,
        replies: Iterable[str | BaseException] = (),
        *,
        name: str = "fake",
        model: str = "fake-model",
        context_window: int = 2048,
        delay: float = 0.0,
    ) -> None:
        self.name = name
        self.model = model
        self.context_window = context_window
        self.replies: deque[str | BaseException] = deque(replies)
        self.requests: list[GenerationRequest] = []
        self.delay = delay

    async def start(self) -> None:
        """Nothing to load."""

    async def close(self) -> None:
        """Nothing to release."""

    def _next_reply(self, request: GenerationRequest) -> str:
        self.requests.append(request)
        if self.replies:
            reply = self.replies.popleft()
            if isinstance(reply, BaseException):
                raise reply
            return reply
        last_user = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
        return f"echo: {last_user}"

    async def generate(self, request: GenerationRequest) -> Generation:
        """The next canned reply."""
        if self.delay:
            await asyncio.sleep(self.delay)
        text = self._next_reply(request)
        return Generation(
            text=text,
            usage=Usage(await self.count_tokens(request.messages), len(text.split())),
            backend=self.name,
            model=self.model,
        )

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        """The next canned reply, a word at a time (a canned failure after `delay`)."""
        if self.delay and self.replies and isinstance(self.replies[0], BaseException):
            await asyncio.sleep(self.delay)
        text = self._next_reply(request)
        words = text.split(" ")
        for index, word in enumerate(words):
            if self.delay:
                await asyncio.sleep(self.delay / max(len(words), 1))
            yield Chunk(text=word if index == 0 else " " + word)
        yield Chunk(
            text="",
            done=True,
            usage=Usage(await self.count_tokens(request.messages), len(words)),
            finish_reason="stop",
        )

    async def count_tokens(self, messages: tuple[ChatMessage, ...]) -> int:
        """One token per word, plus a few per message."""
        return sum(len(m.content.split()) + 4 for m in messages)

    async def state(self) -> BackendState:
        """Always reachable."""
        return BackendState(name=self.name, kind=self.kind, model=self.model, reachable=True)


__all__ = ["BackendError", "FakeBackend"]
