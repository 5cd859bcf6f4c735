"""A conversation reply delivered piece by piece, and stored however it ends."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncGenerator

import anyio

from gptactions.llm.base import BackendError, BackendTimeout, Chunk, Generation, Usage
from gptactions.llm.router import RoutedStream
from gptactions.services.interactions import FinishReason
from gptactions.services.turns import PreparedTurn, Reply, TurnRecorder


class ReplyStream:
    """A reply on its way: `pieces()` yields its text; then `reply` is the stored turn.

    However the stream ends, the turn is stored exactly once: `ok` when the reply is complete
    or the request's deadline came first (finish reason `deadline`, with what was generated),
    `error` (with the error and what was generated) when the backend fails midway, and
    `cancelled` (with what was generated) when `aclose()` comes first, as it does when the client
    goes away. Closing also stops the backend's generation.
    """

    def __init__(
        self,
        turns: TurnRecorder,
        prepared: PreparedTurn,
        chunks: RoutedStream,
        first: Chunk,
    ) -> None:
        self._turns = turns
        self._prepared = prepared
        self._chunks = chunks
        self._first = first
        self._parts: list[str] = []
        self._usage: Usage | None = None
        self._finish: str | None = None
        self._ended = False
        self.reply: Reply | None = None
        # The turn lets the conversation's next one go when it is stored; should this stream be
        # dropped unended (its response never ran), when it is collected.
        weakref.finalize(self, prepared.release)

    @property
    def conversation_id(self) -> str:
        """The conversation the reply belongs to."""
        return self._prepared.conversation_id

    @property
    def backend(self) -> str:
        """The backend that is answering (a fallback, perhaps)."""
        return self._chunks.backend

    @property
    def model(self) -> str:
        """The model that is answering."""
        return self._chunks.model

    async def pieces(self) -> AsyncGenerator[str, None]:
        """The reply's text as it is generated; raises `BackendError` if it fails midway."""
        chunk = self._first
        while True:
            if chunk.text:
                self._parts.append(chunk.text)
                yield chunk.text
            if chunk.done:
                self._usage = chunk.usage or Usage()
                self._finish = chunk.finish_reason
                break
            try:
                async with asyncio.timeout_at(self._prepared.request.deadline):
                    chunk = await anext(self._chunks)
            except TimeoutError:
                self._finish = FinishReason.DEADLINE
                break
            except BackendTimeout:
                # The upstream's own time limit ended the reply under way: as at the deadline,
                # what came is the answer (a first chunk was there, so there is something).
                self._finish = FinishReason.DEADLINE
                break
            except StopAsyncIteration:
                await self._end(BackendError("the model's reply ended without its last piece"))
            except BackendError as error:
                await self._end(error)
        self._ended = True
        await self._chunks.aclose()
        # Stores the turn (an empty reply is stored as an error and raised); the whole reply is
        # in, so it is stored even if the client leaves meanwhile.
        with anyio.CancelScope(shield=True):
            self.reply = await self._turns.complete(self._prepared, await self._generated())

    async def _end(self, error: BackendError) -> None:
        """Store the failed turn with what was generated, then raise the error."""
        self._ended = True
        with anyio.CancelScope(shield=True):
            await self._chunks.aclose()
            await self._turns.fail(self._prepared, error, await self._generated())
        raise error

    async def aclose(self) -> None:
        """Stop the generation; unless the stream ended, store the turn as `cancelled`."""
        if self._ended:
            return
        self._ended = True
        with anyio.CancelScope(shield=True):  # a client that left must not lose the row
            generated = await self._generated()
        await self._turns.abandon(self._prepared, generated, close=self._chunks.aclose)

    async def _generated(self) -> Generation:
        """What the backend has generated so far."""
        return Generation(
            text="".join(self._parts),
            usage=self._usage or await self._chunks.usage_so_far(len(self._parts)),
            finish_reason=self._finish or "stop",
            backend=self.backend,
            model=self.model,
        )
