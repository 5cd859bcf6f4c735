"""Conversations: the prompt from the stored history, the model's reply, the turn stored."""

from __future__ import annotations

import asyncio
import os
import time

from gptactions.llm.base import (
    DEADLINE_RETRY_AFTER,
    BackendError,
    ChatMessage,
    DeadlineReached,
    GenerationRequest,
    tracked_progress,
)
from gptactions.llm.router import BackendRouter, UnknownModel
from gptactions.services.errors import (
    Problem,
    ServiceError,
    check_text,
    invalid,
    not_found,
    unknown_model,
)
from gptactions.services.interactions import InteractionLog
from gptactions.services.keys import Principal
from gptactions.services.limits import estimate_tokens, give_back
from gptactions.services.streams import ReplyStream
from gptactions.services.turn_order import Release, TurnOrder
from gptactions.services.turns import PreparedTurn, Reply, Turn, TurnRecorder
from gptactions.store import queries
from gptactions.store.db import Database

__all__ = ["ConversationService", "PreparedTurn", "Reply", "ReplyStream", "Turn"]


class ConversationService:
    """Starts and continues conversations."""

    def __init__(
        self,
        database: Database,
        router: BackendRouter,
        log: InteractionLog,
        *,
        system_prompt: str,
        default_max_tokens: int,
    ) -> None:
        self._database = database
        self._router = router
        self._log = log
        self._turns = TurnRecorder(log)
        self._order = TurnOrder()
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
        say, or the deadline) is raised here, and recorded, like it is for a whole reply.
        """
        prepared = await self.prepare(principal, turn, new=new)
        try:
            try:
                chunks = self._router.stream(prepared.request, turn.model)
            except BaseException:
                prepared.release()
                raise
            try:
                async with asyncio.timeout_at(turn.deadline):
                    first = await anext(chunks)
            except TimeoutError:
                await chunks.aclose()
                late = DeadlineReached(
                    "the model did not begin its reply before the request's deadline; "
                    "try again shortly",
                    retry_after=DEADLINE_RETRY_AFTER,
                )
                await self._turns.fail(prepared, late, await chunks.cut_short())
                raise late from None
            except StopAsyncIteration:
                await chunks.aclose()
                error = BackendError("the model ended its reply before it began")
                await self._turns.fail(prepared, error)
                raise error from None
            except BackendError as error:
                await chunks.aclose()
                await self._turns.fail(prepared, error, await chunks.cut_short())
                raise
            except asyncio.CancelledError:
                # Charged the tokens spent before the first piece (the prompt, once it is given).
                await self._turns.abandon(prepared, await chunks.cut_short(), close=chunks.aclose)
                raise
            except BaseException:
                prepared.release()
                await chunks.aclose()
                raise
        except BaseException:
            await give_back(prepared.reservation)  # recorded: settled, and this does nothing
            raise
        # The stream lets the conversation's next turn go once it has stored this one, and
        # settles the turn's reservation.
        return ReplyStream(self._turns, prepared, chunks, first)

    async def _run(self, prepared: PreparedTurn) -> Reply:
        try:
            try:
                with tracked_progress() as progress:
                    generation = await self._router.generate(prepared.request, prepared.turn.model)
            except BackendError as error:
                await self._turns.fail(prepared, error, await progress.so_far())
                raise
            except asyncio.CancelledError:
                # The client went away (or the server is stopping): record the abandoned turn,
                # with what was generated and the tokens it used, which count against its limit.
                await self._turns.abandon(prepared, await progress.so_far())
                raise
            return await self._turns.complete(prepared, generation)
        finally:
            prepared.release()  # stored (or not to be): the conversation's next turn may go
            await give_back(prepared.reservation)  # recorded: settled, and this does nothing

    async def prepare(self, principal: Principal, turn: Turn, *, new: bool) -> PreparedTurn:
        """Resolve the conversation and build the prompt that fits the model's context window.

        The turn is admitted first, against the caller's token limit: it reserves its worst
        case, the system prompt's and message's tokens (estimated) and its maxTokens (else the
        server's default), then the prompt's counted tokens and the reply's most once the prompt
        is built. A turn refused on the way gives the reservation back.
        """
        reservation = await self._log.admit(
            principal,
            lambda: (
                estimate_tokens(self._system_prompt, turn.message)
                + (turn.max_tokens or self._default_max_tokens)
            ),
        )
        held: list[Release] = []
        try:
            check_text(
                ("/userId", turn.user_id),
                ("/message", turn.message),
                ("/conversationId", turn.conversation_id),
                ("/model", turn.model),
            )
            try:
                backend = self._router.resolve(turn.model)
            except UnknownModel as error:
                raise unknown_model(error) from None
            window = backend.context_window
            if turn.max_tokens is not None and turn.max_tokens >= window:
                raise invalid(
                    f"maxTokens must be below the model's context window ({window})",
                    Problem("/maxTokens", f"must be less than {window}"),
                )
            # Without maxTokens, the default is what the history leaves room for, and less when
            # the message itself leaves less (as OpenAI's API, and /v1, do without max_tokens).
            max_tokens = turn.max_tokens or min(self._default_max_tokens, window - 1)
            conversation_id, is_new, history = await self._conversation(
                principal, turn, new=new, held=held
            )
            messages, max_tokens, prompt_tokens = await self._fit(
                history,
                turn.message,
                window,
                max_tokens,
                turn.model,
                shrink=turn.max_tokens is None,
            )
            if reservation is not None:  # the worst case, now that the prompt is counted
                await reservation.resize(prompt_tokens + max_tokens)
        except BaseException:
            _release(held)
            await give_back(reservation)
            raise
        request = GenerationRequest(
            messages=messages,
            max_tokens=max_tokens,
            temperature=turn.temperature,
            repeat_penalty=turn.repeat_penalty,
            deadline=turn.deadline,
            cache_scope=principal.cache_scope,
            public_messages=1,  # the server's system prompt, the same for every caller
        )
        return PreparedTurn(
            principal,
            turn,
            conversation_id,
            is_new,
            request,
            release=lambda: _release(held),
            reservation=reservation,
        )

    async def _conversation(
        self, principal: Principal, turn: Turn, *, new: bool, held: list[Release]
    ) -> tuple[str, bool, list[tuple[str, str]]]:
        """The conversation the turn belongs to, whether it is new, and its turns so far; with
        the conversation's (and, without a conversationId, the user's) turn order entered in
        `held`, so that no other turn of it is answered until this one is stored."""
        if new:
            return _new_conversation_id(), True, []
        if turn.conversation_id is None:
            # The user's latest conversation, or their new one: theirs until this turn is in.
            user = ("user", principal.tenant, turn.user_id)
            held.append(await self._order.enter(user, turn.deadline))
            async with self._database.session() as session:
                latest = await queries.latest_conversation(session, principal.tenant, turn.user_id)
            if latest is None:
                return _new_conversation_id(), True, []
            conversation_id = latest.id
        else:
            # Entered before the id is checked, so the check and the history take one session.
            # Another's id only waits its turn to be a 404: ids are not guessable.
            conversation_id = turn.conversation_id
        held.append(await self._order.enter(("conversation", conversation_id), turn.deadline))
        async with self._database.session() as session:
            if turn.conversation_id is not None:
                conversation = await queries.conversation_by_id(session, conversation_id)
                # Another tenant's or user's conversation is indistinguishable from a missing one.
                if (
                    conversation is None
                    or conversation.tenant != principal.tenant
                    or conversation.user_id != turn.user_id
                ):
                    raise not_found(
                        f"conversation {conversation_id!r} does not exist for this user"
                    )
            turns = await queries.conversation_turns(session, conversation_id)
        return conversation_id, False, turns

    async def _fit(
        self,
        history: list[tuple[str, str]],
        message: str,
        window: int,
        max_tokens: int,
        model: str | None,
        *,
        shrink: bool,
    ) -> tuple[tuple[ChatMessage, ...], int, int]:
        """The system prompt, as many recent turns as fit beside a reply of `max_tokens`, and the
        message, oldest turns dropped first; with the reply's most tokens, and the prompt's.
        When the message alone leaves less room than that, the reply takes the room left if it
        may (`shrink`: the client did not say maxTokens), and the turn is refused if not.

        Counting is exact (the model's tokenizer) and takes one call when everything fits, and
        a binary search over how many recent turns to keep when it does not.
        """
        budget = window - max_tokens
        system = ChatMessage("system", self._system_prompt)
        user = ChatMessage("user", message)

        def keep(turns: int) -> tuple[ChatMessage, ...]:
            recent = history[len(history) - turns :] if turns else []
            pairs = (
                m for q, a in recent for m in (ChatMessage("user", q), ChatMessage("assistant", a))
            )
            return (system, *pairs, user)

        counted: dict[int, int] = {}  # the prompt's tokens, by the turns it keeps

        async def fits(turns: int) -> bool:
            counted[turns] = await self._router.count_tokens(keep(turns), model)
            return counted[turns] <= budget

        if await fits(len(history)):
            return keep(len(history)), max_tokens, counted[len(history)]
        alone = await self._router.count_tokens(keep(0), model)
        counted[0] = alone
        if alone > budget:
            if shrink and alone < window:
                return keep(0), window - alone, alone
            most = window - 1 if shrink else budget
            raise ServiceError(
                "the message is too long for the model's context window",
                400,
                "prompt_too_long",  # as an action's prompt that does not fit
                [Problem("/message", f"must fit in {most} tokens with the system prompt")],
            )
        fitting, too_many = 0, len(history)
        while too_many - fitting > 1:
            middle = (fitting + too_many) // 2
            if await fits(middle):
                fitting = middle
            else:
                too_many = middle
        return keep(fitting), max_tokens, counted[fitting]


def _release(held: list[Release]) -> None:
    """Let the next turns go, the conversation's before the user's (the reverse of entry)."""
    for release in reversed(held):
        release()


def _new_conversation_id() -> str:
    """`conv_` and a UUIDv7's 32 hex digits: the time first (ms), then 74 random bits.

    Time-ordered, so the conversations written together land side by side in the indexes keyed
    by conversation (the conversations' own, the interactions'): a random UUID4 put each new one
    on a page of its own, and a batch of 8 conversation turns wrote 46 pages to SQLite's WAL
    instead of 30, a third more to write and sync under the database's write lock. Not a secret:
    every read checks the conversation's tenant and user.
    """
    return "conv_" + uuid7_hex()


def uuid7_hex(milliseconds: int | None = None) -> str:
    """A UUID version 7 (RFC 9562) as 32 hex digits, for `milliseconds` since 1970 (now)."""
    if milliseconds is None:
        milliseconds = time.time_ns() // 1_000_000
    random = int.from_bytes(os.urandom(10), "big")  # 80 bits, of which 74 are used
    value = (
        (milliseconds & (2**48 - 1)) << 80
        | 0x7 << 76  # version
        | (random >> 68) << 64  # 12 random bits
        | 0b10 << 62  # variant
        | random & (2**62 - 1)  # 62 random bits
    )
    return f"{value:032x}"
