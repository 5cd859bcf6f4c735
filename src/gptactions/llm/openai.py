"""An upstream model behind any OpenAI-compatible Chat Completions endpoint.

OpenAI itself, vLLM, Ollama, llama.cpp's server and LM Studio all speak the same protocol: POST
`{base_url}/chat/completions`, optionally streamed as Server-Sent Events. This module is the
backend: its lifecycle, the requests it makes of the upstream (retried, and adapted to what the
upstream refused), its state. The HTTP side (connections, slots, retries' pacing, what failures
mean) is `openai_transport.py`; what to send is `openai_wire.py`, and how to read the answers
`openai_replies.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing

import aiohttp
from pydantic import SecretStr

from gptactions.llm.base import (
    BackendError,
    BackendState,
    BackendTimeout,
    BackendUnreachable,
    ChatMessage,
    Chunk,
    Generation,
    GenerationRequest,
    Usage,
    current_progress,
)
from gptactions.llm.openai_replies import Tally, read_generation, read_stream
from gptactions.llm.openai_transport import FeatureRefused, RetryableFailure, UpstreamTransport
from gptactions.llm.openai_wire import chat_payload, estimated_prompt_tokens, first_model, usage_of
from gptactions.llm.redact import safe_url

log = logging.getLogger(__name__)

_STATE_PROBE_INTERVAL = 15.0


class OpenAIBackend:
    """A model on an OpenAI-compatible server, reached over HTTP.

    At most `max_concurrency` requests run against it at once; a request waits up to
    `queue_timeout` seconds for a slot, then is refused with 503. Attempts that fail with 429, 5xx
    or a connection error are retried up to `max_retries` times with exponential backoff and
    jitter, honouring `Retry-After`, as long as the total timeout allows.
    """

    kind = "openai"

    def __init__(
        self,
        *,
        name: str,
        base_url: str,
        model: str | None = None,
        api_key: SecretStr | str | None = None,
        context_window: int = 8192,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        total_timeout: float = 120.0,
        max_retries: int = 2,
        backoff_base: float = 0.5,
        backoff_max: float = 8.0,
        max_concurrency: int = 8,
        queue_timeout: float = 5.0,
        probe_timeout: float = 3.0,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.model = model or ""
        self._api_key = SecretStr(api_key) if isinstance(api_key, str) else api_key
        self.context_window = context_window
        self.total_timeout = total_timeout
        # The other limits are the transport's own, read through it (`read_timeout`, ...).
        self._transport = UpstreamTransport(
            name=name,
            base_url=self.base_url,
            api_key=self._api_key,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_retries=max_retries,
            backoff_base=backoff_base,
            backoff_max=backoff_max,
            max_concurrency=max_concurrency,
            queue_timeout=queue_timeout,
            probe_timeout=probe_timeout,
        )
        self.secrets = self._transport.secrets
        """What to keep out of logs and errors: the key, and credentials in the URL."""
        # What this upstream refused, learnt from its answers: see `openai_wire.refused_feature`.
        self._refused: set[str] = set()
        self._format_style = 0
        self._reachable: bool | None = None
        self._last_error: str | None = None
        self._last_latency_ms: float | None = None
        self._last_contact = 0.0
        self._checking: asyncio.Task[None] | None = None

    @property
    def read_timeout(self) -> float:
        """Seconds the upstream may stay silent in a reply (the transport's)."""
        return self._transport.read_timeout

    @property
    def max_concurrency(self) -> int:
        """Requests sent to the upstream at once (the transport's)."""
        return self._transport.max_concurrency

    def __repr__(self) -> str:
        return (
            f"OpenAIBackend(name={self.name!r}, base_url={safe_url(self.base_url)!r}, "
            f"model={self.model!r})"
        )

    # Lifecycle

    async def start(self) -> None:
        """Open the connection pool and check the upstream, in the background.

        The check (`GET /models` with a short timeout) tells `GET /status` at once whether the
        upstream answers, and names the model when the configuration did not; start-up does not
        wait for it. An upstream that is down is not fatal: it is reported in the state, and the
        router falls back until it comes back.
        """
        self._transport.open()
        if self._checking is None:
            self._checking = asyncio.create_task(self._check(), name=f"check upstream {self.name}")

    async def checked(self) -> None:
        """Wait until the start-up check is over (at once if there is none)."""
        if self._checking is not None:
            await asyncio.shield(self._checking)

    async def close(self) -> None:
        """Stop the start-up check if it still runs, and close the connection pool."""
        checking, self._checking = self._checking, None
        if checking is not None and not checking.done():
            checking.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await checking
        await self._transport.close()

    async def _check(self) -> None:
        await self._probe()
        if not self.model:
            # llama.cpp's server and LM Studio answer with their loaded model whatever the name.
            self.model = "default"

    # The Backend protocol

    async def count_tokens(self, messages: tuple[ChatMessage, ...]) -> int:
        """An estimate on the high side: upstreams do not expose their tokenizer."""
        return estimated_prompt_tokens(messages)

    async def generate(self, request: GenerationRequest) -> Generation:
        """Ask for a whole reply."""
        started = time.perf_counter()
        deadline = asyncio.get_running_loop().time() + self.total_timeout
        transport = self._transport
        tally: Tally | None = None  # once the upstream is answering
        try:
            async with asyncio.timeout_at(deadline), transport.slot(deadline):
                response = await self._open(request, stream=False, deadline=deadline)
                tally = Tally()
                data = await transport.read_json(response)
                tally.usage = usage_of(data.get("usage")) if isinstance(data, dict) else None
                generation = read_generation(
                    data, request, name=self.name, model=self.model, excerpt=transport.excerpt
                )
                tally = None
        except TimeoutError:
            raise self._timeout() from None
        except BackendError as exc:
            self._record_failure(exc)
            raise
        finally:
            if tally is not None:
                _note_spent(request, tally)
        self._record_success((time.perf_counter() - started) * 1000)
        return generation

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        """Yield the reply as the upstream sends it; closing the iterator cancels the request.

        The total timeout covers the whole reply. It is enforced around each wait on the upstream
        rather than across `yield`, so time the consumer spends is its own.
        """
        if request.choices:
            # A choice is only known once the whole answer is in: deliver it as one piece.
            generation = await self.generate(request)
            yield Chunk(text=generation.text)
            yield Chunk(
                text="", done=True, usage=generation.usage, finish_reason=generation.finish_reason
            )
            return
        deadline = asyncio.get_running_loop().time() + self.total_timeout
        started = time.perf_counter()
        slot = self._transport.slot(deadline)
        try:
            async with slot, aclosing(self._stream(request, deadline)) as chunks:
                async for chunk in chunks:
                    if chunk.done:
                        # Before the yield: a consumer closes the iterator once it has the last
                        # piece, and code after the loop would then never run.
                        self._record_success((time.perf_counter() - started) * 1000)
                    yield chunk
        except TimeoutError:
            raise self._timeout() from None
        except BackendError as exc:
            self._record_failure(exc)
            raise

    async def state(self) -> BackendState:
        """Reachable or not, the last error and latency; probes `GET /models` when idle."""
        checking = self._checking is not None and not self._checking.done()
        idle = time.monotonic() - self._last_contact > _STATE_PROBE_INTERVAL
        if idle and self._transport.opened and not checking:
            await self._probe()
        return BackendState(
            name=self.name,
            kind=self.kind,
            model=self.model,
            reachable=bool(self._reachable),
            last_error=self._last_error,
            latency_ms=self._last_latency_ms,
            checked=not checking,
        )

    # Requests

    async def _open(
        self, request: GenerationRequest, *, stream: bool, deadline: float
    ) -> aiohttp.ClientResponse:
        """Send the request, retried and adapted until the upstream starts answering."""
        if not self.model:
            async with asyncio.timeout_at(deadline):
                await self.checked()  # the start-up check names the model (it is short)
        attempt = 0
        while True:
            payload = chat_payload(
                request,
                model=self.model or "default",
                stream=stream,
                refused=self._refused,
                format_style=self._format_style,
            )
            try:
                async with asyncio.timeout_at(deadline):
                    return await self._transport.send(payload)
            except RetryableFailure as failure:
                await self._transport.before_retry(failure, attempt, deadline)
                attempt += 1
            except FeatureRefused as refused:
                log.info("upstream %r refused %s; asking without it", self.name, refused.feature)
                if refused.feature == "response_format":
                    self._format_style += 1
                else:
                    self._refused.add(refused.feature)

    async def _stream(
        self, request: GenerationRequest, deadline: float
    ) -> AsyncGenerator[Chunk, None]:
        """One streamed completion: retried until the upstream starts answering, never after."""
        response = await self._open(request, stream=True, deadline=deadline)
        transport = self._transport
        events = transport.events(response, deadline)
        tally = Tally()
        done = False
        try:
            chunks = read_stream(
                events, request, name=self.name, excerpt=transport.excerpt, tally=tally
            )
            async with aclosing(chunks):
                async for chunk in chunks:
                    done = chunk.done
                    yield chunk
        finally:
            # Back to the pool when the answer was read to its end; closed when it was not.
            response.release()
            if not done:
                _note_spent(request, tally)

    # State

    def _timeout(self) -> BackendTimeout:
        error = BackendTimeout(
            f"upstream {self.name!r} did not finish within {self.total_timeout:g}s",
            retry_after=5.0,
        )
        self._record_failure(error)
        return error

    def _record_success(self, latency_ms: float | None) -> None:
        self._reachable = True
        self._last_error = None
        self._last_contact = time.monotonic()
        if latency_ms is not None:
            self._last_latency_ms = latency_ms

    def _record_failure(self, error: BackendError) -> None:
        message = self._transport.scrub(error.message)
        self._last_error = message
        self._last_contact = time.monotonic()
        # Saturation and bad answers prove the upstream is there; only no answer at all does not.
        self._reachable = not isinstance(error, BackendUnreachable)
        log.warning("upstream %r: %s", self.name, message)
        error.logged = True

    async def _probe(self) -> None:
        """`GET /models` with a short timeout: whether the upstream answers, how fast, and its
        first model when the configuration named none."""
        started = time.perf_counter()
        try:
            status, body = await self._transport.list_models()
        except BackendError as problem:
            self._record_failure(problem)
            return
        came_back = self._reachable is False
        self._reachable = True
        self._last_contact = time.monotonic()
        if status >= 400 and status != 404:
            # Some upstreams do not list models (404); any other failure is worth reporting.
            self._last_error = f"upstream {self.name!r} answered {status} to /models"
            return
        if came_back:
            self._last_error = None
        if self._last_latency_ms is None:
            self._last_latency_ms = (time.perf_counter() - started) * 1000
        if not self.model and status < 400:
            self.model = first_model(body)


def _note_spent(request: GenerationRequest, tally: Tally) -> None:
    """Note, in the progress being kept, what an answer the upstream began and did not finish
    (it failed, or was given up) used: its own count if it sent one, else the prompt's estimate
    and a token per piece received. The prompt was the upstream's to process once it answered."""
    progress = current_progress()
    if progress is not None:
        progress.usage = tally.usage or Usage(
            estimated_prompt_tokens(request.messages), tally.pieces
        )
