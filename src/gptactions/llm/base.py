"""The backend interface: what the services need from a language model, and nothing more."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol, runtime_checkable

import anyio

log = logging.getLogger(__name__)

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True)
class ToolCall:
    """A call of one of the request's tools, as the model made it; `arguments` is JSON text.

    In a streamed chunk it is a piece of a call: `index` says which, `id` and `name` come with
    its first piece, and `arguments` arrives in fragments to be joined.
    """

    id: str
    name: str
    arguments: str
    index: int = 0


@dataclass(frozen=True)
class ChatMessage:
    """One message of a chat prompt.

    An assistant message may carry the tool calls it made, and a `tool` message answers the call
    `tool_call_id` names.
    """

    role: Role
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None


@dataclass(frozen=True)
class GenerationRequest:
    """What to generate: the messages, and how.

    `json_schema` asks for output that is a JSON value valid against the schema, and `choices` for
    output that is exactly one of the given strings; a backend enforces them with constrained
    decoding where it can (llama.cpp grammars, OpenAI `response_format`), and the caller validates
    the result either way.

    `tools` (OpenAI function tool definitions) and `tool_choice` go to upstreams as they are;
    the embedded model decodes a forced choice ("required", or a named function) with a grammar
    over the tools' parameters, and answers text otherwise. `response_format` is a client's own
    OpenAI `response_format`, sent as it is to upstreams that take it (`json_schema` carries its
    schema for the others).
    """

    messages: tuple[ChatMessage, ...]
    max_tokens: int = 256
    temperature: float = 0.0
    json_schema: dict[str, Any] | None = None
    choices: tuple[str, ...] | None = None
    stop: tuple[str, ...] = ()
    repeat_penalty: float | None = None  # None: the backend's default
    frequency_penalty: float = 0.0
    """OpenAI's: each token's logit less this times its count in the reply so far (-2 to 2)."""
    presence_penalty: float = 0.0
    """OpenAI's: each token's logit less this once it is in the reply so far (-2 to 2)."""
    logit_bias: tuple[tuple[int, float], ...] = ()
    """OpenAI's: (token id, bias from -100 to 100) added to the token's logit at every step."""
    top_p: float | None = None
    seed: int | None = None
    tools: tuple[dict[str, Any], ...] = ()
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    deadline: float | None = None
    """The event loop's time (`loop.time()`) by which the generation must end; see
    `BackendRouter.generate`."""
    cache_scope: str = ""
    """Who may reuse the memory this request leaves in the model (the embedded model's prompt
    cache): the requests of one scope only (`Principal.cache_scope`: a tenant, or one OAuth
    user). Between scopes only the public prefix is reused, so that a request's cached tokens
    (and its speed) never tell what another caller sent."""
    public_messages: int = 0
    """How many leading messages are the server's own text, the same for every caller (a
    conversation's system prompt, a built-in action's instructions): their tokens may be reused
    across scopes. Never a client's own message."""


def match_choice(text: str, choices: Sequence[str]) -> str | None:
    """The one choice a reply names, whichever backend wrote it; None if it names none or several.

    The choice itself, or it but for case, surrounding quotes and full stops, or a JSON wrapping
    (`"No."`, `{"choice": "no"}`); else the only choice the reply mentions (`It is no.`).
    """
    if text in choices:
        return text
    stripped = text.strip()
    try:
        value: Any = json.loads(stripped)
    except ValueError:
        value = stripped
    if isinstance(value, dict):
        value = value.get("choice", next(iter(value.values()), None) if value else None)
    if not isinstance(value, str):
        return None
    loose = value.strip().strip("\"'`.").strip().casefold()
    same = [choice for choice in choices if choice.strip().casefold() == loose]
    if same:
        return same[0] if len(same) == 1 else None
    named = [choice for choice in choices if choice.strip().casefold() in loose]
    return named[0] if len(named) == 1 else None


@dataclass(frozen=True)
class Usage:
    """Token counts of one generation."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens the model had already processed (its prompt cache)


@dataclass(frozen=True)
class Generation:
    """A finished generation."""

    text: str
    usage: Usage = field(default_factory=Usage)
    finish_reason: str = "stop"
    backend: str = ""
    model: str = ""
    tool_calls: tuple[ToolCall, ...] = ()


def added(a: Usage, b: Usage) -> Usage:
    """The usage of two generations together."""
    return Usage(
        a.prompt_tokens + b.prompt_tokens,
        a.completion_tokens + b.completion_tokens,
        a.cached_tokens + b.cached_tokens,
    )


@dataclass
class Progress:
    """How far the generations of one request have got, so that a request cancelled midway (its
    client left, the server is stopping) is stored, and charged, with what it used.

    Kept while `tracked_progress()` is open, by the router (which backend is answering, and the
    text of a reply it streams) and by a backend that knows more (the embedded model: its
    tokens so far; an upstream: its own count, or its prompt once it began answering). It
    reaches the router through any layer between (an action's handler), and costs a whole reply
    nothing per token. `spent` is what the request's finished generations used; `lost`, what
    the failed attempts of the generation under way used (a fallback answers it); the other
    fields are the attempt under way.
    """

    spent: Usage = field(default_factory=Usage)
    lost: Usage = field(default_factory=Usage)
    backend: Backend | None = None
    request: GenerationRequest | None = None
    text: str = ""
    pieces: int = 0
    """Pieces of text received (a streamed reply's); about a token each."""
    usage: Usage | None = None
    """The usage of the attempt under way when its backend knows it, else None."""

    def begin(self, backend: Backend, request: GenerationRequest) -> None:
        """An attempt at a generation of `request` begins on `backend`."""
        self.backend, self.request = backend, request
        self.text, self.pieces, self.usage = "", 0, None

    def failed(self) -> None:
        """The attempt under way failed: what its backend knows it used is `lost`, and charged
        with the generation (a fallback may yet answer it)."""
        if self.usage is not None:
            self.lost = added(self.lost, self.usage)
        self._end()

    def finish(self, usage: Usage) -> None:
        """The generation under way ended with `usage` (its failed attempts' included)."""
        self.spent = added(self.spent, usage)
        self.lost = Usage()
        self._end()

    def _end(self) -> None:
        self.backend = self.request = self.usage = None
        self.text, self.pieces = "", 0

    async def under_way(self, pieces: int | None = None) -> Usage:
        """What the generation under way has used: its failed attempts', and the attempt's.

        Without the usage from the backend, the attempt's prompt is counted with the backend's
        tokenizer and each piece received (`pieces`, else those noted) is a token. A whole reply
        asked of an upstream cannot tell how much of it was generated before the request was
        given up (nothing of it arrives until it is complete), so only its prompt is charged.
        Shielded: it runs in a task being cancelled.
        """
        backend, request, usage = self.backend, self.request, self.usage
        if backend is None or request is None:
            return self.lost
        if usage is None:
            try:
                with anyio.CancelScope(shield=True):
                    prompt = await backend.count_tokens(request.messages)
            except Exception:  # the count is for the log and the limit: never lose the turn
                log.warning(
                    "could not count the prompt's tokens on %s", backend.name, exc_info=True
                )
                prompt = 0
            usage = Usage(prompt, self.pieces if pieces is None else pieces)
        return added(self.lost, usage)

    async def so_far(self) -> Generation:
        """What the request's generations had written and used when it was cancelled (or
        failed): those finished, and the one under way (`under_way`)."""
        backend = self.backend
        return Generation(
            self.text,
            added(self.spent, await self.under_way()),
            backend=backend.name if backend else "",
            model=backend.model if backend else "",
        )


_progress: ContextVar[Progress | None] = ContextVar("gptactions_progress", default=None)


@contextmanager
def tracked_progress(progress: Progress | None = None) -> Iterator[Progress]:
    """Keep the progress of the generations this block runs (in this task): see `Progress`.

    A new one, or `progress` to go on keeping one (a stream's, read a piece at a time).
    """
    kept = Progress() if progress is None else progress
    token = _progress.set(kept)
    try:
        yield kept
    finally:
        _progress.reset(token)


def current_progress() -> Progress | None:
    """The progress being kept for the running request's generations, if any is."""
    return _progress.get()


@dataclass(frozen=True)
class Chunk:
    """A piece of a streamed generation; the last chunk has `done=True` and carries the usage."""

    text: str
    done: bool = False
    usage: Usage | None = None
    finish_reason: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()


@dataclass(frozen=True)
class BackendState:
    """What `GET /status` reports of a backend.

    `checked` is false while a backend has not been checked yet (an upstream's start-up probe is
    under way). `last_error` may hold what an upstream answered, which can quote a request (and
    so another tenant's words): `for_caller` hides it, and `state` still tells that it failed.
    """

    name: str
    kind: str
    model: str
    reachable: bool
    last_error: str | None = None
    latency_ms: float | None = None
    # The embedded model's engine: its sequences, requests waiting, recent speed.
    sequences: int | None = None
    sequences_in_use: int | None = None
    queue_depth: int | None = None
    tokens_per_second: float | None = None
    checked: bool = True
    error_hidden: bool = False

    @property
    def state(self) -> str:
        """`ok`, `failing` (it answers, but its last request failed), `unreachable`, or
        `checking` (not checked yet)."""
        if not self.checked:
            return "checking"
        if not self.reachable:
            return "unreachable"
        return "failing" if self.last_error or self.error_hidden else "ok"

    def for_caller(self, *, details: bool) -> BackendState:
        """The state as a caller may see it: without the last error's text unless `details`."""
        if details or self.last_error is None:
            return self
        return replace(self, last_error=None, error_hidden=True)


class BackendError(Exception):
    """A backend failed: its answer could not be used (the API answers 502)."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.logged = False
        """Whether the backend has logged this failure's text itself (scrubbed), so that the router
        does not write an upstream's error text, which may quote a prompt, a second time."""


class BackendUnavailable(BackendError):
    """The backend is down or saturated; `retry_after` says when to try again (503)."""


class BackendUnreachable(BackendUnavailable):
    """No connection to the backend could be made: unlike the other failures, it is not there."""


class BackendTimeout(BackendError):
    """The total time allowed for a generation passed (504)."""


DEADLINE_RETRY_AFTER = 5
"""Seconds a request refused at its deadline (it never reached the model) is told to wait."""


class DeadlineReached(BackendUnavailable):
    """The request's deadline came before the model began its reply (queued, or waiting for an
    upstream): nothing to answer with but a 503 and when to retry."""


class PromptTooLong(BackendError):
    """The prompt does not fit the model's context window, even with history dropped (400)."""


class InvalidParameter(ValueError):
    """A request's parameter the backend cannot take, such as a token id beyond its vocabulary:
    `param` names it as the client wrote it (`logit_bias`). Raised before generation (400)."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class UnsupportedSchema(ValueError):
    """A JSON Schema a backend cannot hold its reply to: why (`reason`), and where (`pointer`, a
    JSON pointer into the schema, empty for its root); `tool` names the tool whose parameters it
    is, when it is one. Raised before generation, so the request is refused (400)."""

    def __init__(self, reason: str, pointer: str = "", tool: str | None = None) -> None:
        super().__init__(f"{reason} (at {pointer or 'the root'})")
        self.reason = reason
        self.pointer = pointer
        self.tool = tool


@runtime_checkable
class Backend(Protocol):
    """A language model the server can talk to."""

    name: str
    kind: str
    model: str
    context_window: int

    async def start(self) -> None:
        """Load the model or open connections; called once by the app's lifespan."""

    async def close(self) -> None:
        """Release what `start` acquired."""

    async def generate(self, request: GenerationRequest) -> Generation:
        """Generate a whole reply."""

    def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        """Generate a reply piece by piece; the last chunk has `done=True`."""

    async def count_tokens(self, messages: tuple[ChatMessage, ...]) -> int:
        """How many tokens the messages take in this model's prompt format."""

    async def state(self) -> BackendState:
        """This backend's health, for `GET /status`."""
