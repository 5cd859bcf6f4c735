"""Conversation turns: what the user sent, the turn made ready for the model, and its storage.

A turn is stored once, however it ends: `ok` with the reply, `error` with the backend's failure
and what was generated before it, `cancelled` when the client went away first. A conversation
deleted while its turn ran (by the log's retention, or its user's data deletion) is a 404, as it
would have been a moment earlier, and the turn is not stored.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace

from sqlalchemy.exc import IntegrityError

from gptactions.llm.base import (
    DEADLINE_RETRY_AFTER,
    BackendError,
    DeadlineReached,
    Generation,
    GenerationRequest,
    Usage,
)
from gptactions.services.errors import ServiceError, not_found
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

log = logging.getLogger(__name__)


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
        with _storing(prepared):
            interaction = await self._log.record(
                new, new_conversation=conversation, reservation=prepared.reservation
            )
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
        with _storing(prepared):
            await self._log.record(
                failed, new_conversation=conversation, reservation=prepared.reservation
            )

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
            with _storing(prepared):
                await self._log.record_abandoned(
                    new,
                    new_conversation=conversation,
                    close=close,
                    reservation=prepared.reservation,
                )
        except ServiceError as error:  # nobody is left to tell: the client has gone
            log.info("an abandoned turn was not stored: %s", error.message)


@contextlib.contextmanager
def _storing(prepared: PreparedTurn) -> Iterator[None]:
    """Around storing `prepared`: the conversation's next turn may go afterwards, however it
    went. The only constraint a turn of a stored conversation can break is the conversation's
    own foreign key: the conversation was deleted after the turn found it."""
    try:
        yield
    except IntegrityError:
        if prepared.is_new:
            raise
        raise not_found(
            f"conversation {prepared.conversation_id!r} was deleted while this turn ran (the "
            "log's retention, or the user's data deleted); the turn was not stored"
        ) from None
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
