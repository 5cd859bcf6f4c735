"""Conversation turns: what the user sent, the turn made ready for the model, and its storage.

A turn is stored once, however it ends: `ok` with the reply, `error` with the backend's failure
and what was generated before it, `cancelled` when the client went away first.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace

from gptactions.llm.base import (
    DEADLINE_RETRY_AFTER,
    BackendError,
    DeadlineReached,
    Generation,
    GenerationRequest,
    Usage,
)
from gptactions.services.interactions import (
    FinishReason,
    InteractionKind,
    InteractionLog,
    InteractionStatus,
    NewConversation,
    NewInteraction,
)
from gptactions.services.keys import Principal
from gptactions.services.limits import Reservation
from gptactions.store.models import utcnow


@dataclass(frozen=True)
class Turn:
    """A user's message for a conversation, with the optional generation settings."""

    user_id: str
    message: str
    conversation_id: str | None = None
    max_tokens: int | None = None
    temperature: float = 0.0
    repeat_penalty: float | None = None
    model: str | None = None
    deadline: float | None = None
    """The loop time by which the reply must end (`GenerationRequest.deadline`)."""


@dataclass
class PreparedTurn:
    """A turn ready for the model: its conversation (maybe not stored yet) and the prompt."""

    principal: Principal
    turn: Turn
    conversation_id: str
    is_new: bool
    request: GenerationRequest
    started: float = field(default_factory=time.perf_counter)
    release: Callable[[], None] = field(default=lambda: None, repr=False)
    """Lets the conversation's next turn go (`TurnOrder`); called once the turn is stored."""
    reservation: Reservation | None = field(default=None, repr=False)
    """The turn's worst case held in the caller's token window (`InteractionLog.admit`), which
    storing the turn settles; None when the caller has no token limit."""

    def elapsed_ms(self) -> int:
        """Milliseconds since the turn was prepared."""
        return round((time.perf_counter() - self.started) * 1000)


@dataclass(frozen=True)
class Reply:
    """The model's reply to a turn, stored."""

    conversation_id: str
    reply: str
    interaction_id: int
    usage: Usage
    backend: str
    model: str
    latency_ms: int
    finish_reason: FinishReason = FinishReason.STOP


class TurnRecorder:
    """Stores turns in the interaction log (with their conversation when it is new)."""

    def __init__(self, log: InteractionLog) -> None:
        self._log = log

    async def complete(self, prepared: PreparedTurn, generation: Generation) -> Reply:
        """Store the finished turn; returns once committed. An empty reply is a BackendError."""
        reply = generation.text.strip()
        if not reply:
            error = BackendError("the model returned an empty reply")
            if generation.finish_reason == FinishReason.DEADLINE:
                error = DeadlineReached(
                    "the model had written nothing by the request's deadline; try again shortly",
                    retry_after=DEADLINE_RETRY_AFTER,
                )
            await self.fail(prepared, error)
            raise error
        latency = prepared.elapsed_ms()
        new, conversation = _interaction(prepared, replace(generation, text=reply), latency)
        try:
            interaction = await self._log.record(
                new, new_conversation=conversation, reservation=prepared.reservation
            )
        finally:
            prepared.release()
        return Reply(
            conversation_id=prepared.conversation_id,
            reply=reply,
            interaction_id=interaction,
            usage=generation.usage,
            backend=generation.backend,
            model=generation.model,
            latency_ms=latency,
            finish_reason=FinishReason.of(generation.finish_reason),
        )

    async def fail(
        self, prepared: PreparedTurn, error: BackendError, partial: Generation | None = None
    ) -> None:
        """Store a turn the backend failed, with whatever it generated before."""
        new, conversation = _interaction(prepared, partial or Generation(""), prepared.elapsed_ms())
        failed = replace(
            new, status=InteractionStatus.ERROR, error=error.message, finish_reason=None
        )
        try:
            await self._log.record(
                failed, new_conversation=conversation, reservation=prepared.reservation
            )
        finally:
            prepared.release()

    async def abandon(
        self,
        prepared: PreparedTurn,
        partial: Generation | None = None,
        *,
        close: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        """Store a turn its client abandoned, shielded from the cancellation; `close` first."""
        new, conversation = _interaction(prepared, partial or Generation(""), prepared.elapsed_ms())
        try:
            await self._log.record_abandoned(
                new,
                new_conversation=conversation,
                close=close,
                reservation=prepared.reservation,
            )
        finally:
            prepared.release()


def _interaction(
    prepared: PreparedTurn, generation: Generation, latency_ms: int
) -> tuple[NewInteraction, NewConversation | None]:
    """The turn as an `ok` interaction of the log, and its conversation when it is new."""
    now = utcnow()
    conversation = None
    if prepared.is_new:
        conversation = NewConversation(
            id=prepared.conversation_id,
            tenant=prepared.principal.tenant,
            user_id=prepared.turn.user_id,
            created_at=now,
            updated_at=now,
        )
    new = NewInteraction(
        principal=prepared.principal,
        kind=InteractionKind.CONVERSATION,
        user_id=prepared.turn.user_id,
        message=prepared.turn.message,
        reply=generation.text,
        conversation_id=prepared.conversation_id,
        backend=generation.backend or None,
        model=generation.model or None,
        latency_ms=latency_ms,
        usage=generation.usage,
        at=now,
        finish_reason=FinishReason.of(generation.finish_reason),
    )
    return new, conversation
