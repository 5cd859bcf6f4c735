"""Conversations: the prompt from the stored history, the model's reply, the turn stored."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field

import anyio

from gptactions.llm.base import BackendError, ChatMessage, Generation, GenerationRequest, Usage
from gptactions.llm.router import BackendRouter, UnknownModel
from gptactions.services.errors import (
    Problem,
    ServiceError,
    invalid,
    not_found,
    unknown_model,
)
from gptactions.services.interactions import InteractionRecorder, NewInteraction
from gptactions.services.keys import Principal
from gptactions.services.streams import ClientGone, ReplyStream
from gptactions.store import queries
from gptactions.store.db import Database
from gptactions.store.models import Conversation, utcnow


@dataclass(frozen=True)
class Turn:
    """A user's message for a conversation, with the optional generation settings."""

    user_id: str
    message: str
    conversation_id: str | None = None
    max_tokens: int | None = None
    temperature: float = 0.0
    model: str | None = None


@dataclass
class PreparedTurn:
    """A turn ready for the model: its conversation (maybe not stored yet) and the prompt."""

    principal: Principal
    turn: Turn
    conversation_id: str
    is_new: bool
    request: GenerationRequest
    history_turns: int
    started: float = field(default_factory=time.perf_counter)


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


class ConversationService:
    """Starts and continues conversations."""

    def __init__(
        self,
        database: Database,
        router: BackendRouter,
        recorder: InteractionRecorder,
        *,
        system_prompt: str,
        default_max_tokens: int,
    ) -> None:
        self._database = database
        self._router = router
        self._recorder = recorder
        self._system_prompt = system_prompt
        self._default_max_tokens = default_max_tokens

    async def start(self, principal: Principal, turn: Turn) -> Reply:
        """Start a new conversation with the turn's message."""
        prepared = await self.prepare(principal, turn, new=True)
        return await self._run(prepared)

    async def respond(self, principal: Principal, turn: Turn) -> Reply:
        """Continue the named conversation, else the user's latest, else a new one."""
        prepared = await self.prepare(principal, turn, new=False)
        return await self._run(prepared)

    async def open_stream(self, principal: Principal, turn: Turn, *, new: bool) -> ReplyStream:
        """Start a reply that is delivered piece by piece (`new`: start a conversation).

        Returns once the first piece is in, so a failure before any output (every backend down,
        say) is raised here, and recorded, like it is for a whole reply.
        """
        prepared = await self.prepare(principal, turn, new=new)
        chunks = self._router.stream(prepared.request, turn.model)
        try:
            first = await anext(chunks)
        except StopAsyncIteration:
            await chunks.aclose()
            error = BackendError("the model ended its reply before it began")
            await self.fail(prepared, error)
            raise error from None
        except BackendError as error:
            await chunks.aclose()
            await self.fail(prepared, error)
            raise
        except asyncio.CancelledError:
            with anyio.CancelScope(shield=True):
                await chunks.aclose()
                await self.fail(prepared, ClientGone(ClientGone.message), status="cancelled")
            raise
        except BaseException:
            await chunks.aclose()
            raise
        return ReplyStream(self, prepared, chunks, first)

    async def _run(self, prepared: PreparedTurn) -> Reply:
        try:
            generation = await self._router.generate(prepared.request, prepared.turn.model)
        except BackendError as error:
            await self.fail(prepared, error)
            raise
        except asyncio.CancelledError:
            # The client went away (or the server is stopping): record the abandoned turn.
            with anyio.CancelScope(shield=True):
                await self.fail(prepared, ClientGone(ClientGone.message), status="cancelled")
            raise
        return await self.complete(prepared, generation)

    async def prepare(self, principal: Principal, turn: Turn, *, new: bool) -> PreparedTurn:
        """Resolve the conversation and build the prompt that fits the model's context window."""
        try:
            backend = self._router.resolve(turn.model)
        except UnknownModel as error:
            raise unknown_model(error) from None
        max_tokens = turn.max_tokens or self._default_max_tokens
        if max_tokens >= backend.context_window:
            raise invalid(
                f"maxTokens must be below the model's context window ({backend.context_window})",
                Problem("/maxTokens", f"must be less than {backend.context_window}"),
            )
        conversation_id, is_new, history = await self._conversation(principal, turn, new=new)
        messages = await self._fit(
            history, turn.message, backend.context_window - max_tokens, turn.model
        )
        request = GenerationRequest(
            messages=messages, max_tokens=max_tokens, temperature=turn.temperature
        )
        return PreparedTurn(
            principal, turn, conversation_id, is_new, request, (len(messages) - 2) // 2
        )

    async def _conversation(
        self, principal: Principal, turn: Turn, *, new: bool
    ) -> tuple[str, bool, list[tuple[str, str]]]:
        if new:
            return _new_conversation_id(), True, []
        async with self._database.session() as session:
            if turn.conversation_id is not None:
                conversation = await queries.conversation_by_id(session, turn.conversation_id)
                # Another tenant's or user's conversation is indistinguishable from a missing one.
                if (
                    conversation is None
                    or conversation.tenant != principal.tenant
                    or conversation.user_id != turn.user_id
                ):
                    raise not_found(
                        f"conversation {turn.conversation_id!r} does not exist for this user"
                    )
            else:
                conversation = await queries.latest_conversation(
                    session, principal.tenant, turn.user_id
                )
                if conversation is None:
                    return _new_conversation_id(), True, []
            turns = await queries.conversation_turns(session, conversation.id)
        return conversation.id, False, [(t.message, t.reply) for t in turns]

    async def _fit(
        self, history: list[tuple[str, str]], message: str, budget: int, model: str | None
    ) -> tuple[ChatMessage, ...]:
        """The system prompt, as many recent turns as fit, and the message; oldest dropped first.

        Counting is exact (the model's tokenizer) and takes one call when everything fits, and
        a binary search over how many recent turns to keep when it does not.
        """
        system = ChatMessage("system", self._system_prompt)
        user = ChatMessage("user", message)

        def keep(turns: int) -> tuple[ChatMessage, ...]:
            recent = history[len(history) - turns :] if turns else []
            pairs = (
                m for q, a in recent for m in (ChatMessage("user", q), ChatMessage("assistant", a))
            )
            return (system, *pairs, user)

        async def fits(turns: int) -> bool:
            return await self._router.count_tokens(keep(turns), model) <= budget

        if await fits(len(history)):
            return keep(len(history))
        if not await fits(0):
            raise invalid(
                "the message is too long for the model's context window",
                Problem("/message", f"must fit in {budget} tokens with the system prompt"),
            )
        fitting, too_many = 0, len(history)
        while too_many - fitting > 1:
            middle = (fitting + too_many) // 2
            if await fits(middle):
                fitting = middle
            else:
                too_many = middle
        return keep(fitting)

    async def complete(self, prepared: PreparedTurn, generation: Generation) -> Reply:
        """Store the turn (and the conversation when it is new); returns once committed."""
        reply = generation.text.strip()
        if not reply:
            error = BackendError("the model returned an empty reply")
            await self.fail(prepared, error)
            raise error
        latency = _elapsed_ms(prepared)
        interaction = await self._store(prepared, reply, "ok", None, generation, latency)
        return Reply(
            conversation_id=prepared.conversation_id,
            reply=reply,
            interaction_id=interaction,
            usage=generation.usage,
            backend=generation.backend,
            model=generation.model,
            latency_ms=latency,
        )

    async def fail(
        self,
        prepared: PreparedTurn,
        error: Exception,
        *,
        partial: str = "",
        status: str = "error",
        usage: Usage | None = None,
        backend: str = "",
        model: str = "",
    ) -> None:
        """Store a turn that failed or was cut short, with whatever was generated."""
        generation = Generation(text=partial, usage=usage or Usage(), backend=backend, model=model)
        message = error.message if isinstance(error, (BackendError, ServiceError)) else str(error)
        await self._store(prepared, partial, status, message, generation, _elapsed_ms(prepared))

    async def _store(
        self,
        prepared: PreparedTurn,
        reply: str,
        status: str,
        error: str | None,
        generation: Generation,
        latency_ms: int,
    ) -> int:
        now = utcnow()
        conversation = None
        if prepared.is_new:
            conversation = Conversation(
                id=prepared.conversation_id,
                tenant=prepared.principal.tenant,
                user_id=prepared.turn.user_id,
                created_at=now,
                updated_at=now,
            )
        return await self._recorder.record(
            NewInteraction(
                principal=prepared.principal,
                kind="conversation",
                user_id=prepared.turn.user_id,
                message=prepared.turn.message,
                reply=reply,
                status=status,
                error=error,
                conversation_id=prepared.conversation_id,
                backend=generation.backend or None,
                model=generation.model or None,
                latency_ms=latency_ms,
                usage=generation.usage,
                at=now,
            ),
            new_conversation=conversation,
        )


def _new_conversation_id() -> str:
    return "conv_" + uuid.uuid4().hex


def _elapsed_ms(prepared: PreparedTurn) -> int:
    return round((time.perf_counter() - prepared.started) * 1000)
