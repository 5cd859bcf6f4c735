"""Chat completions, as OpenAI's API defines them: the rules, the generation, the log.

The API under /v1 parses a client's request into a `CompletionCall`; this service checks what
OpenAI checks (the model exists, one choice, the tool choice names a tool, the prompt and
`max_tokens` fit the context window; without `max_tokens`, the reply may take the room the
prompt leaves, up to the server's `max_tokens_limit`), generates with the chosen backend (or a
fallback), and records each call as one interaction of kind `chat.completion`, however it ends.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field, replace
from typing import Any

import anyio

from gptactions.llm.base import (
    BackendError,
    ChatMessage,
    Chunk,
    Generation,
    GenerationRequest,
    InvalidParameter,
    ToolCall,
    UnsupportedSchema,
    Usage,
    tracked_progress,
)
from gptactions.llm.router import BackendRouter, RoutedStream
from gptactions.llm.tools import forced_tools, tool_name, unnamed_call
from gptactions.services.errors import Problem, ServiceError, invalid
from gptactions.services.interactions import (
    FinishReason,
    InteractionKind,
    InteractionLog,
    InteractionStatus,
    NewInteraction,
    cancelled_error,
)
from gptactions.services.keys import Principal
from gptactions.services.limits import Reservation, estimate_tokens, give_back

# Names a client may give as `model` for the default backend.
DEFAULT_MODEL_NAMES = frozenset({"", "default"})
FINISH_REASONS = frozenset({"stop", "length", "tool_calls", "content_filter"})


@dataclass(frozen=True)
class CompletionCall:
    """A chat completion as a client asked for it, already checked for form by the API."""

    messages: tuple[ChatMessage, ...]
    model: str | None = None
    max_tokens: int | None = None
    """None: as many as the context window leaves, up to the server's limit (OpenAI's rule)."""
    max_tokens_field: str = "max_tokens"
    """The field the client gave `max_tokens` in (`max_completion_tokens`, the newer name), for
    its errors to name."""
    temperature: float = 1.0
    top_p: float | None = None
    seed: int | None = None
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    logit_bias: tuple[tuple[int, float], ...] = ()
    stop: tuple[str, ...] = ()
    n: int = 1
    json_schema: dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    tools: tuple[dict[str, Any], ...] = ()
    tool_choice: str | dict[str, Any] | None = None
    functions: bool = False
    """Whether the tools came in OpenAI's legacy form, `functions`, for errors to name it."""
    user: str | None = None


@dataclass(frozen=True)
class ModelInfo:
    """A model a client may name: one of the configured backends."""

    id: str
    owned_by: str
    model: str
    created: int


@dataclass(frozen=True)
class Completion:
    """A finished completion, recorded in the log."""

    id: str
    created: int
    model: str
    text: str
    tool_calls: tuple[ToolCall, ...]
    finish_reason: str
    usage: Usage
    interaction_id: int


@dataclass
class PreparedCall:
    """A call ready for the model: who asked, the backend chosen, the generation request."""

    principal: Principal
    call: CompletionCall
    backend: str
    request: GenerationRequest
    user_id: str
    id: str = field(default_factory=lambda: "chatcmpl-" + uuid.uuid4().hex)
    created: int = field(default_factory=lambda: int(time.time()))
    started: float = field(default_factory=time.perf_counter)
    reservation: Reservation | None = field(default=None, repr=False)
    """The call's worst case held in the caller's token window (`InteractionLog.admit`), which
    recording the call settles; None when the caller has no token limit."""

    @property
    def forced(self) -> tuple[dict[str, Any], ...]:
        """The tools one of which the reply must call; () when it may be text."""
        return forced_tools(self.call.tools, self.call.tool_choice)


class CompletionService:
    """Answers chat completions with the configured backends."""

    def __init__(
        self,
        router: BackendRouter,
        log: InteractionLog,
        *,
        max_tokens_limit: int,
    ) -> None:
        self._router = router
        self._log = log
        self._max_tokens_limit = max_tokens_limit
        self._created = int(time.time())

    def models(self) -> list[ModelInfo]:
        """The configured backends, the default first."""
        names = [
            self._router.default,
            *(n for n in self._router.names if n != self._router.default),
        ]
        return [self._info(name) for name in names]

    def model(self, name: str) -> ModelInfo:
        """One model by the id `models()` lists (or its backend's model name); 404 otherwise."""
        return self._info(self._backend_name(name))

    def _info(self, name: str) -> ModelInfo:
        backend = self._router.backends[name]
        return ModelInfo(
            id=name,
            owned_by=f"gptactions:{backend.kind}",
            model=backend.model,
            created=self._created,
        )

    def _backend_name(self, model: str | None) -> str:
        if model is None or model in DEFAULT_MODEL_NAMES:
            return self._router.default
        if model in self._router.backends:
            return model
        for name, backend in self._router.backends.items():
            if backend.model == model:
                return name
        raise ServiceError(
            f"The model '{model}' does not exist; available: {', '.join(self._router.names)}",
            404,
            "model_not_found",
            [Problem("/model", "must name a configured backend")],
        )

    async def complete(self, principal: Principal, call: CompletionCall) -> Completion:
        """Generate a whole completion and record it; returns once it is committed."""
        prepared = await self.prepare(principal, call)
        try:
            try:
                with tracked_progress() as progress:
                    generation = await self._router.generate(prepared.request, prepared.backend)
            except BackendError as error:
                # Stored with the tokens the failed attempts are known to have used.
                await self.record(prepared, generation=await progress.so_far(), error=error)
                raise
            except asyncio.CancelledError:
                # Stored with what was generated and the tokens it used (which count against
                # the key's token limit).
                with anyio.CancelScope(shield=True):
                    await self.record(prepared, generation=await progress.so_far(), abandoned=True)
                raise
            return await self.record(prepared, generation=generation)
        finally:
            await give_back(prepared.reservation)  # recorded: settled, and this does nothing

    async def open_stream(self, principal: Principal, call: CompletionCall) -> CompletionStream:
        """Start a streamed completion; returns once its first chunk is in.

        A failure before any output (every backend down, say) is raised here, and recorded, as
        it is for a whole completion; so is a client that leaves first, with the tokens spent
        (the prompt, once the model is given it).
        """
        prepared = await self.prepare(principal, call)
        try:
            chunks = self._router.stream(prepared.request, prepared.backend)
            try:
                first = await anext(chunks)
            except StopAsyncIteration:
                await chunks.aclose()
                error = BackendError("the model ended its reply before it began")
                await self.record(prepared, generation=await chunks.cut_short(), error=error)
                raise error from None
            except BackendError as error:
                await chunks.aclose()
                await self.record(prepared, generation=await chunks.cut_short(), error=error)
                raise
            except asyncio.CancelledError:
                with anyio.CancelScope(shield=True):
                    await chunks.aclose()
                    await self.record(prepared, generation=await chunks.cut_short(), abandoned=True)
                raise
            except BaseException:
                await chunks.aclose()
                raise
        except BaseException:
            await give_back(prepared.reservation)  # recorded: settled, and this does nothing
            raise
        # The stream records the call however it ends, which settles the reservation.
        return CompletionStream(self, prepared, chunks, first)

    async def prepare(self, principal: Principal, call: CompletionCall) -> PreparedCall:
        """Check the call against the rules and build the generation request.

        The call is admitted first, against the caller's token limit: it reserves its worst
        case, its messages' tokens (estimated) and its `max_tokens` (else the server's
        `max_tokens_limit`), then the messages' counted tokens and the reply's most once they
        are known. A call refused on the way gives the reservation back.
        """
        limit = self._max_tokens_limit
        reservation = await self._log.admit(
            principal,
            lambda: _estimated_tokens(call.messages) + min(call.max_tokens or limit, limit),
        )
        try:
            if call.n != 1:
                raise invalid("Only n=1 is supported.", Problem("/n", "must be 1"))
            if not call.messages:
                raise invalid(
                    "messages must not be empty.", Problem("/messages", "must not be empty")
                )
            _check_tool_choice(call)
            # An OAuth token acts as its own user only; a key's calls are the user's it names.
            user_id = principal.acting_as(call.user, field="user") or principal.name
            name = self._backend_name(call.model)
            backend = self._router.backends[name]
            if call.max_tokens is not None and call.max_tokens > limit:
                field = call.max_tokens_field
                raise invalid(
                    f"{field} is too large: {call.max_tokens}; at most {limit}.",
                    Problem(f"/{field}", f"must be at most {limit}"),
                )
            prompt_tokens = await self._router.count_tokens(call.messages, name)
            max_tokens = _completion_tokens(call, prompt_tokens, backend.context_window)
            request = GenerationRequest(
                messages=call.messages,
                max_tokens=min(max_tokens, limit),
                temperature=call.temperature,
                json_schema=call.json_schema,
                stop=call.stop,
                top_p=call.top_p,
                seed=call.seed,
                frequency_penalty=call.frequency_penalty,
                presence_penalty=call.presence_penalty,
                logit_bias=call.logit_bias,
                tools=call.tools,
                tool_choice=call.tool_choice,
                response_format=call.response_format,
                # All of the messages are the client's (its system message too): none is public.
                cache_scope=principal.cache_scope,
            )
            try:
                await self._router.check(request, name)
            except UnsupportedSchema as error:
                raise _unsupported(call, error) from None
            except InvalidParameter as error:
                raise invalid(error.message, Problem(f"/{error.param}", error.message)) from None
            if reservation is not None:  # the worst case, now that the prompt is counted
                await reservation.resize(prompt_tokens + request.max_tokens)
        except BaseException:
            await give_back(reservation)
            raise
        return PreparedCall(principal, call, name, request, user_id, reservation=reservation)

    async def record(
        self,
        prepared: PreparedCall,
        *,
        generation: Generation | None = None,
        error: BackendError | None = None,
        abandoned: bool = False,
    ) -> Completion:
        """Store the call as one interaction: `ok`, or `error` with the backend's failure, or
        `cancelled` when the client went away first; with whatever was generated.

        A forced call cut before its tool is known is recorded and answered as no reply at all
        (`unnamed_call`): the text is the embedded model's wrapper, not the model's answer.
        """
        generation = generation or Generation(text="")
        if not generation.tool_calls and unnamed_call(generation.text, prepared.forced):
            generation = replace(generation, text="")
        status, message = InteractionStatus.OK, None
        if abandoned:
            status, message = InteractionStatus.CANCELLED, cancelled_error()
        elif error is not None:
            status, message = InteractionStatus.ERROR, error.message
        reply = generation.text
        if generation.tool_calls:
            reply = json.dumps(
                [{"name": c.name, "arguments": c.arguments} for c in generation.tool_calls],
                ensure_ascii=False,
            )
        latency = round((time.perf_counter() - prepared.started) * 1000)
        interaction = await self._log.record(
            NewInteraction(
                principal=prepared.principal,
                kind=InteractionKind.CHAT_COMPLETION,
                user_id=prepared.user_id,
                message=_last_message(prepared.call.messages),
                reply=reply,
                status=status,
                error=message,
                backend=generation.backend or None,
                model=generation.model or None,
                latency_ms=latency,
                usage=generation.usage,
                finish_reason=_logged_finish(generation, status),
            ),
            reservation=prepared.reservation,
        )
        # A call cut by the token limit is `length`, as OpenAI says it: its arguments may not
        # be JSON, and a client that took it for a finished call would run it.
        finish = generation.finish_reason
        if generation.tool_calls and finish != "length":
            finish = "tool_calls"
        return Completion(
            id=prepared.id,
            created=prepared.created,
            model=generation.backend or prepared.backend,
            text=generation.text,
            tool_calls=generation.tool_calls,
            finish_reason=finish if finish in FINISH_REASONS else "stop",
            usage=generation.usage,
            interaction_id=interaction,
        )


class CompletionStream:
    """A completion on its way: `chunks()` yields it; then `completion` is the recorded call.

    However the stream ends it is recorded exactly once: `ok` when complete, `error` (with what
    was generated) when the backend fails midway, `cancelled` when `aclose()` comes first, as it
    does when the client goes away; closing also stops the generation.
    """

    def __init__(
        self,
        service: CompletionService,
        prepared: PreparedCall,
        chunks: RoutedStream,
        first: Chunk,
    ) -> None:
        self._service = service
        self._prepared = prepared
        self._chunks = chunks
        self._first = first
        self._parts: list[str] = []
        self._calls: dict[int, list[ToolCall]] = {}
        self._ended = False
        self.completion: Completion | None = None

    @property
    def id(self) -> str:
        """The completion's id, the same in every chunk."""
        return self._prepared.id

    @property
    def created(self) -> int:
        """When the completion started, in Unix seconds."""
        return self._prepared.created

    @property
    def model(self) -> str:
        """The backend that is answering (a fallback, perhaps)."""
        return self._chunks.backend or self._prepared.backend

    async def chunks(self) -> AsyncGenerator[Chunk, None]:
        """The completion's pieces as they come; raises `BackendError` if it fails midway.

        The last piece (`done`) is yielded once the call is recorded.
        """
        chunk = self._first
        held = ""
        while True:
            self._parts.append(chunk.text)
            for call in chunk.tool_calls:
                self._calls.setdefault(call.index, []).append(call)
            if chunk.done:
                break
            chunk, held = self._held_back(chunk, held)
            if chunk.text or chunk.tool_calls:
                yield chunk
            try:
                chunk = await anext(self._chunks)
            except StopAsyncIteration:
                await self._fail(BackendError("the model's reply ended without its last piece"))
            except BackendError as error:
                await self._fail(error)
        self._ended = True
        await self._chunks.aclose()
        with anyio.CancelScope(shield=True):
            self.completion = await self._service.record(
                self._prepared, generation=await self._generation(chunk.usage, chunk.finish_reason)
            )
        yield chunk

    def _held_back(self, chunk: Chunk, held: str) -> tuple[Chunk, str]:
        """The chunk to send, and the text held back: while the reply so far may be a forced
        call cut before its tool is known (`unnamed_call`), its text is not sent, as `record`
        drops it if the reply ends so; once it cannot be, the text held goes with this chunk."""
        if chunk.text and unnamed_call("".join(self._parts), self._prepared.forced):
            return replace(chunk, text=""), held + chunk.text
        return (replace(chunk, text=held + chunk.text) if held else chunk), ""

    async def _generation(self, usage: Usage | None, finish: str | None) -> Generation:
        calls = tuple(
            ToolCall(
                id=next((p.id for p in pieces if p.id), ""),
                name="".join(p.name for p in pieces),
                arguments="".join(p.arguments for p in pieces),
                index=index,
            )
            for index, pieces in sorted(self._calls.items())
        )
        return Generation(
            text="".join(self._parts),
            usage=usage or await self._chunks.usage_so_far(len(self._parts)),
            finish_reason=finish or "stop",
            backend=self._chunks.backend,
            model=self._chunks.model,
            tool_calls=calls,
        )

    async def _fail(self, error: BackendError) -> None:
        self._ended = True
        with anyio.CancelScope(shield=True):
            await self._chunks.aclose()
            await self._service.record(
                self._prepared, generation=await self._generation(None, None), error=error
            )
        raise error

    async def aclose(self) -> None:
        """Stop the generation; unless the stream ended, record the call as `cancelled`."""
        if self._ended:
            return
        self._ended = True
        with anyio.CancelScope(shield=True):
            await self._chunks.aclose()
            await self._service.record(
                self._prepared, generation=await self._generation(None, None), abandoned=True
            )


def _completion_tokens(call: CompletionCall, prompt_tokens: int, window: int) -> int:
    """The most tokens the reply may take: the client's `max_tokens`, else the room the prompt
    leaves; a 400 `context_length_exceeded` when the two do not fit the window together."""
    problem = [Problem("/messages", f"must fit in {window} tokens")]
    if call.max_tokens is None:
        if prompt_tokens < window:
            return window - prompt_tokens
        raise ServiceError(
            f"This model's maximum context length is {window} tokens. However, your messages "
            f"resulted in {prompt_tokens} tokens. Please reduce the length of the messages.",
            400,
            "context_length_exceeded",
            problem,
        )
    if prompt_tokens + call.max_tokens <= window:
        return call.max_tokens
    raise ServiceError(
        f"This model's maximum context length is {window} tokens. However, you requested "
        f"{prompt_tokens + call.max_tokens} tokens ({prompt_tokens} in the messages, "
        f"{call.max_tokens} in the completion). Please reduce the length of the messages or "
        "completion.",
        400,
        "context_length_exceeded",
        problem,
    )


def _check_tool_choice(call: CompletionCall) -> None:
    choice = call.tool_choice
    if choice is None:
        return
    if not call.tools and choice != "none":
        raise invalid(
            "tool_choice is only allowed when tools are specified.",
            Problem("/tool_choice", "needs tools"),
        )
    if isinstance(choice, dict):
        wanted = (choice.get("function") or {}).get("name")
        names = [(tool.get("function") or {}).get("name") for tool in call.tools]
        if wanted not in names:
            raise invalid(
                f"tool_choice names the function {wanted!r}, which is not among the tools.",
                Problem("/tool_choice", "must name one of the tools"),
            )


def _unsupported(call: CompletionCall, error: UnsupportedSchema) -> ServiceError:
    """A 400 for a schema the model cannot hold its reply to, in OpenAI's manner: the parameter
    is `response_format` or the tool's `parameters`, the place within the schema is in the
    message."""
    where = f"at {error.pointer}" if error.pointer else "at its root"
    names = [tool_name(tool) for tool in call.tools]
    if error.tool is not None and error.tool in names:
        index = names.index(error.tool)
        pointer = (
            f"/functions/{index}/parameters"
            if call.functions
            else f"/tools/{index}/function/parameters"
        )
        subject = f"The parameters of the tool '{error.tool}'"
    elif forced_tools(call.tools, call.tool_choice):
        pointer, subject = "/functions" if call.functions else "/tools", "The tools"
    else:
        pointer, subject = "/response_format", "The response_format's JSON Schema"
    return invalid(
        f"{subject} cannot be followed by this model: {error.reason} ({where}).",
        Problem(pointer, f"{error.reason} ({where})"),
    )


def _estimated_tokens(messages: tuple[ChatMessage, ...]) -> int:
    """The messages' tokens before the model counts them: a character in four."""
    return estimate_tokens(
        *(m.content for m in messages),
        *(c.name + c.arguments for m in messages for c in m.tool_calls),
    )


def _last_message(messages: tuple[ChatMessage, ...]) -> str:
    """What the log shows as the call's message: the last message's text."""
    last = messages[-1]
    if last.content or not last.tool_calls:
        return last.content
    return json.dumps([{"name": c.name, "arguments": c.arguments} for c in last.tool_calls])


def _logged_finish(generation: Generation, status: InteractionStatus) -> FinishReason | None:
    """How the reply ended, as the log says it: none for a failure."""
    if status == InteractionStatus.CANCELLED:
        return FinishReason.CANCELLED
    if status != InteractionStatus.OK:
        return None
    return FinishReason.of(generation.finish_reason)
