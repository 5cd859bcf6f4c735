"""Chooses the backend for each request: by name when the request names a model, else the default.

When the chosen backend fails before it has produced any output, the router tries the fallbacks in
their configured order, so an upstream that is down degrades to the embedded model instead of an
error. Once a stream has delivered its first chunk the client has seen that backend's words, and
a failure is reported rather than papered over with another model's reply.

A generation's usage is that of every attempt at it: the tokens a failed attempt is known to have
used (`Progress.failed`) are added to those of the attempt that answered, so they are charged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import aclosing
from dataclasses import replace
from typing import Any, Protocol

from gptactions.llm.base import (
    DEADLINE_RETRY_AFTER,
    Backend,
    BackendError,
    BackendState,
    BackendTimeout,
    BackendUnavailable,
    ChatMessage,
    Chunk,
    DeadlineReached,
    Generation,
    GenerationRequest,
    Progress,
    PromptTooLong,
    ToolCall,
    Usage,
    added,
    current_progress,
    tracked_progress,
)

log = logging.getLogger(__name__)


class UnknownModel(LookupError):
    """A request named a model that is not configured."""

    def __init__(self, name: str, available: Sequence[str]) -> None:
        super().__init__(name)
        self.name = name
        self.available = list(available)


class RouterObserver(Protocol):
    """What the router reports as it goes (the metrics listen): first chunks, failures, ends."""

    def first_chunk(self, backend: str, seconds: float) -> None:
        """A stream's first piece of text arrived `seconds` after the backend was asked."""

    def failed(self, backend: str, error: BackendError) -> None:
        """The backend failed a generation."""

    async def settled(self, backend: Backend) -> None:
        """A generation on the backend ended, one way or another."""


class RoutedStream:
    """A stream of chunks from whichever backend answered; `backend` and `model` name it.

    Both are empty until the first chunk has arrived. Closing the stream (or cancelling the task
    that reads it) closes the backend's stream, which cancels the upstream request.

    Its `progress` (the one kept by the task that opened it, else its own) is kept while each
    piece is read and while it closes, whichever task does it, so the backends note there what
    they used.
    """

    def __init__(self, router: BackendRouter, chain: list[Backend], request: GenerationRequest):
        self.backend = ""
        self.model = ""
        self.progress = current_progress() or Progress()
        self._chunks = router._stream_chain(chain, request, self)

    async def usage_so_far(self, pieces: int) -> Usage:
        """The usage of a stream cut before its last chunk (which carries the real one): what
        its failed attempts used, and the answering one's by its backend's count, else its
        prompt counted by its tokenizer and a token per piece received (`Progress.under_way`)."""
        return await self.progress.under_way(pieces)

    async def cut_short(self) -> Generation:
        """What a stream that ended before its first chunk (its client left, or every backend
        failed) used, as a generation without text, of the backend it was waiting for."""
        backend = self.progress.backend
        return Generation(
            "",
            await self.progress.under_way(0),
            backend=backend.name if backend else "",
            model=backend.model if backend else "",
        )

    def __aiter__(self) -> RoutedStream:
        return self

    async def __anext__(self) -> Chunk:
        with tracked_progress(self.progress):
            return await self._chunks.__anext__()

    async def aclose(self) -> None:
        """Stop the stream and the backend request behind it."""
        with tracked_progress(self.progress):
            await self._chunks.aclose()


class BackendRouter:
    """The configured backends, one of them the default, and an ordered list of fallbacks."""

    def __init__(
        self,
        backends: Sequence[Backend],
        default: str | None = None,
        fallbacks: Sequence[str] = (),
    ) -> None:
        if not backends:
            raise ValueError("at least one backend is required")
        self.backends: dict[str, Backend] = {}
        for backend in backends:
            if backend.name in self.backends:
                raise ValueError(f"two backends are named {backend.name!r}")
            self.backends[backend.name] = backend
        self.default = default or backends[0].name
        if self.default not in self.backends:
            raise ValueError(f"default backend {self.default!r} is not configured")
        unknown = [name for name in fallbacks if name not in self.backends]
        if unknown:
            raise ValueError(f"fallback backend {unknown[0]!r} is not configured")
        self.fallbacks: list[str] = list(dict.fromkeys(fallbacks))
        self.observer: RouterObserver | None = None

    @property
    def secrets(self) -> frozenset[str]:
        """The credentials the backends hold (an upstream's key, say), to keep out of logs."""
        held: list[frozenset[str]] = [
            getattr(backend, "secrets", frozenset()) for backend in self.backends.values()
        ]
        return frozenset().union(*held)

    @property
    def names(self) -> list[str]:
        """The names a request may give as `model`."""
        return list(self.backends)

    def resolve(self, model: str | None = None) -> Backend:
        """The backend for a request's optional `model` field."""
        name = model or self.default
        try:
            return self.backends[name]
        except KeyError:
            raise UnknownModel(name, self.names) from None

    def chain(self, model: str | None = None) -> list[Backend]:
        """The backends a request is tried on, in order: the chosen one, then the fallbacks."""
        chosen = self.resolve(model)
        return [chosen, *(self.backends[n] for n in self.fallbacks if n != chosen.name)]

    async def start(self) -> None:
        """Start every backend; only the default's failure to start stops the server.

        A fallback that cannot start (say, the embedded model's file is missing) stays in the
        list and answers 503 when its turn comes, which `GET /status` shows as unreachable.
        """
        for backend in self.backends.values():
            try:
                await backend.start()
            except Exception:
                if backend.name == self.default:
                    raise
                log.exception("backend %r could not start; it stays unavailable", backend.name)

    async def close(self) -> None:
        """Close every backend."""
        for backend in self.backends.values():
            await backend.close()

    async def generate(self, request: GenerationRequest, model: str | None = None) -> Generation:
        """Generate with the chosen backend, or the first fallback that answers.

        With a `deadline` the reply is streamed, whatever the backend, so that it can be cut
        there: what was generated by then is the reply, with finish_reason `deadline`; a reply
        that had not begun raises `DeadlineReached` (and its queued request is withdrawn).
        """
        chain = self.chain(model)
        with tracked_progress(current_progress()) as progress:
            if request.deadline is not None:
                return await self._generate_until(request, chain, request.deadline, progress)
            attempts = _Attempts(chain, request, self.observer)
            async for backend in attempts:
                progress.begin(backend, request)
                try:
                    generation = await backend.generate(request)
                except BackendError as exc:
                    progress.failed()
                    attempts.failed(backend, exc)
                    continue
                finally:
                    await attempts.settled(backend)
                attempts.answered(backend)
                generation = replace(generation, usage=added(progress.lost, generation.usage))
                progress.finish(generation.usage)
                return generation
            raise attempts.error()

    async def _generate_until(
        self,
        request: GenerationRequest,
        chain: list[Backend],
        deadline: float,
        progress: Progress,
    ) -> Generation:
        stream = RoutedStream(self, chain, request)
        parts: list[str] = []
        calls: list[ToolCall] = []
        last: Chunk | None = None
        try:
            async with asyncio.timeout_at(deadline):
                async for chunk in stream:
                    parts.append(chunk.text)
                    calls.extend(chunk.tool_calls)
                    if chunk.done:
                        last = chunk
                        break
                else:
                    raise BackendError("the model's reply ended without its last piece")
        except asyncio.CancelledError:
            progress.text, progress.pieces = "".join(parts), len(parts)
            raise
        except BackendTimeout:
            # The upstream's own time limit (GPTACTIONS_UPSTREAM_TIMEOUT, below the request's
            # deadline) ended a reply under way: what came is answered, as at the deadline.
            if not "".join(parts) and not calls:
                raise
        except TimeoutError:
            if not "".join(parts) and not calls:
                raise DeadlineReached(
                    "the model did not begin its reply before the request's deadline; "
                    "try again shortly",
                    retry_after=DEADLINE_RETRY_AFTER,
                ) from None
        finally:
            await stream.aclose()
        generation = Generation(
            text="".join(parts),
            usage=(last.usage if last else None) or await stream.usage_so_far(len(parts)),
            finish_reason=(last.finish_reason or "stop") if last else "deadline",
            backend=stream.backend,
            model=stream.model,
            tool_calls=tuple(calls),
        )
        progress.finish(generation.usage)
        return generation

    def stream(self, request: GenerationRequest, model: str | None = None) -> RoutedStream:
        """Stream with the chosen backend, falling back only until the first chunk."""
        return RoutedStream(self, self.chain(model), request)

    async def _stream_chain(
        self, chain: list[Backend], request: GenerationRequest, routed: RoutedStream
    ) -> AsyncGenerator[Chunk, None]:
        attempts = _Attempts(chain, request, self.observer)
        progress = routed.progress
        async for backend in attempts:
            progress.begin(backend, request)
            try:
                async with aclosing(_as_generator(backend.stream(request))) as chunks:
                    asked = time.perf_counter()
                    try:
                        first = await anext(chunks)
                    except BackendError as exc:
                        progress.failed()
                        attempts.failed(backend, exc)
                        continue
                    except StopAsyncIteration:
                        progress.failed()
                        attempts.failed(backend, BackendError(f"{backend.name!r} sent nothing"))
                        continue
                    attempts.answered(backend, first_after=time.perf_counter() - asked)
                    routed.backend, routed.model = backend.name, backend.model
                    yield _charged(first, progress.lost)
                    # From here on the client has seen this backend's words: no more falling back.
                    try:
                        async for chunk in chunks:
                            yield _charged(chunk, progress.lost)
                    except BackendError as exc:
                        attempts.observe_failure(backend, exc)
                        raise
                    return
            finally:
                await attempts.settled(backend)
        raise attempts.error()

    async def check(self, request: GenerationRequest, model: str | None = None) -> None:
        """Refuse, before any generation, a request the chosen backend cannot follow.

        A backend with a `check_request` method says so by raising (the embedded model:
        `UnsupportedSchema` for a schema its grammar cannot follow); upstreams, which judge
        requests themselves, have none. Fallbacks are not asked: they answer only when the
        chosen backend fails, and then do what they can.
        """
        check = getattr(self.resolve(model), "check_request", None)
        if check is not None:
            await check(request)

    async def count_tokens(
        self, messages: tuple[ChatMessage, ...], model: str | None = None
    ) -> int:
        """Tokens the messages take in the chosen backend's model."""
        return await self.resolve(model).count_tokens(messages)

    def context_window(self, model: str | None = None) -> int:
        """The chosen backend's context window, in tokens."""
        return self.resolve(model).context_window

    async def states(self) -> list[BackendState]:
        """Every backend's state, default first."""
        ordered = [self.default, *(n for n in self.backends if n != self.default)]
        # Concurrently: an idle upstream's state may mean a short probe of its /models.
        return list(await asyncio.gather(*(self.backends[name].state() for name in ordered)))


class _Attempts:
    """The backends a request is tried on, in order, and how those tried so far failed.

    Iterating yields the chosen backend, then each fallback that can take the prompt at all.
    """

    def __init__(
        self,
        chain: list[Backend],
        request: GenerationRequest,
        observer: RouterObserver | None = None,
    ) -> None:
        self._chain = chain
        self._request = request
        self._observer = observer
        self._failures: list[tuple[Backend, BackendError]] = []
        self._tried = 0

    def __aiter__(self) -> _Attempts:
        return self

    async def __anext__(self) -> Backend:
        while self._tried < len(self._chain):
            backend = self._chain[self._tried]
            self._tried += 1
            if self._tried == 1 or await _fits(backend, self._request):
                return backend
        raise StopAsyncIteration

    def failed(self, backend: Backend, error: BackendError) -> None:
        """Note the backend's failure; a prompt too long for the model is no reason to fall back."""
        if isinstance(error, PromptTooLong):
            raise error
        self.observe_failure(backend, error)
        self._failures.append((backend, error))
        if error.logged:
            log.warning("backend %r failed (%s)", backend.name, type(error).__name__)
        else:
            log.warning("backend %r failed: %s", backend.name, error.message)

    def observe_failure(self, backend: Backend, error: BackendError) -> None:
        """Tell the observer of a failure (also of one too late to fall back from)."""
        if self._observer is not None:
            self._observer.failed(backend.name, error)

    def answered(self, backend: Backend, *, first_after: float | None = None) -> None:
        """Note that the backend answered; a stream's first chunk came `first_after` seconds in."""
        if self._failures:
            log.info("answered by fallback %r", backend.name)
        if self._observer is not None and first_after is not None:
            self._observer.first_chunk(backend.name, first_after)

    async def settled(self, backend: Backend) -> None:
        """Note that a generation on the backend ended."""
        if self._observer is not None:
            await self._observer.settled(backend)

    def error(self) -> BackendError:
        """The one error for a request every backend failed."""
        return _combined(self._failures)


def _charged(chunk: Chunk, lost: Usage) -> Chunk:
    """The chunk, its usage (the last chunk's) with that of the failed attempts before it."""
    if chunk.usage is None or lost == Usage():
        return chunk
    return replace(chunk, usage=added(lost, chunk.usage))


async def _as_generator(chunks: AsyncIterator[Chunk]) -> AsyncGenerator[Chunk, None]:
    """Any async iterator of chunks as a generator, so that closing it closes the source."""
    try:
        async for chunk in chunks:
            yield chunk
    finally:
        close: Any = getattr(chunks, "aclose", None)
        if close is not None:
            await close()


async def _fits(backend: Backend, request: GenerationRequest) -> bool:
    """Whether a fallback can take the prompt at all.

    The services fit the history to the chosen backend's context window; a fallback with a
    smaller window, or one that cannot even count tokens now, is skipped rather than handed a
    prompt it would reject.
    """
    try:
        needed = await backend.count_tokens(request.messages) + request.max_tokens
    except BackendError as exc:
        log.info("fallback %r skipped: %s", backend.name, exc.message)
        return False
    if needed > backend.context_window:
        log.info("fallback %r skipped: the prompt needs %d tokens", backend.name, needed)
        return False
    return True


def _combined(failures: list[tuple[Backend, BackendError]]) -> BackendError:
    """One error for a request every backend failed.

    503 when every backend was unavailable (with the shortest Retry-After); otherwise the error of
    the backend the request chose, since that is the one its client asked for.
    """
    if not failures:
        return BackendUnavailable("no backend can take this request", retry_after=5)
    if len(failures) == 1:
        return failures[0][1]
    message = "; ".join(f"{backend.name}: {error.message}" for backend, error in failures)
    if all(isinstance(error, BackendUnavailable) for _, error in failures):
        delays = [error.retry_after for _, error in failures if error.retry_after is not None]
        return BackendUnavailable(
            f"every backend failed: {message}", retry_after=min(delays) if delays else None
        )
    first = failures[0][1]
    return type(first)(f"every backend failed: {message}", retry_after=first.retry_after)
