"""The backend interface: what the services need from a language model, and nothing more."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol, runtime_checkable

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
    top_p: float | None = None
    seed: int | None = None
    tools: tuple[dict[str, Any], ...] = ()
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    deadline: float | None = None
    """The event loop's time (`loop.time()`) by which the generation must end; see
    `BackendRouter.generate`."""


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
