"""An upstream model behind any OpenAI-compatible Chat Completions endpoint.

OpenAI itself, vLLM, Ollama, llama.cpp's server and LM Studio all speak the same protocol: POST
`{base_url}/chat/completions`, optionally streamed as Server-Sent Events. Failures map to the
backend errors: an answer we cannot use (a broken connection included) is a `BackendError`, an
upstream that is saturated is `BackendUnavailable` (with a retry delay), one that cannot be reached
at all `BackendUnreachable`, and a reply that takes longer than the total timeout `BackendTimeout`.

The client is aiohttp's: one `ClientSession` per backend, its connections kept alive. httpx's
connection pool was the bottleneck under concurrency (at 32 concurrent requests against an
instant upstream, a bare route calling it managed about a sixth of what the same route did with
aiohttp); bench/bench_gateway.py measures the whole path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import time
import urllib.request
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import aclosing
from dataclasses import replace
from typing import Any

import aiohttp
from pydantic import SecretStr
from yarl import URL

from gptactions.llm.base import (
    BackendError,
    BackendState,
    BackendTimeout,
    BackendUnavailable,
    BackendUnreachable,
    ChatMessage,
    Chunk,
    Generation,
    GenerationRequest,
    Usage,
    match_choice,
)
from gptactions.llm.openai_wire import (
    FORMAT_STYLES,
    choices_schema,
    error_message,
    parse_retry_after,
    refused_feature,
    response_format,
    sse_data,
    tool_calls_of,
    usage_of,
    well_formed,
    wire_message,
)
from gptactions.llm.redact import redact, safe_url, secrets_of

log = logging.getLogger(__name__)

# Upstreams expose no tokenizer: English text runs about 4 characters a token, and each message
# costs a few tokens of chat template. Rounding up and padding keeps the estimate on the high side.
_CHARS_PER_TOKEN = 4
_TOKENS_PER_MESSAGE = 8

# Statuses worth another attempt: rate limited, or the upstream failing in a way that may pass.
_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# Statuses that mean "saturated" rather than "answered badly", and those that mean the upstream
# ran out of time itself.
_UNAVAILABLE_STATUSES = frozenset({429, 503})
_TIMEOUT_STATUSES = frozenset({408, 504})

# Transport failures after the upstream accepted the connection: it is there, but broke its answer.
# (A refused or unresolvable connection is a `ClientConnectorError`, which `_transport_failure`
# tells apart first; both are `ClientOSError`s.)
_BROKEN = (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientOSError)

_STATE_PROBE_INTERVAL = 15.0
_MAX_UPSTREAM_MESSAGE = 300


class _RetryableFailure(Exception):
    """One attempt failed in a way that another attempt may fix."""

    def __init__(self, error: BackendError, retry_after: float | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.retry_after = retry_after


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
        self.secrets = secrets_of(self._api_key, self.base_url)
        """What to keep out of logs and errors: the key, and credentials in the URL."""
        self.context_window = context_window
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.total_timeout = total_timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.max_concurrency = max_concurrency
        self.queue_timeout = queue_timeout
        self.probe_timeout = probe_timeout
        self._client: aiohttp.ClientSession | None = None
        base = URL(self.base_url)
        if self._api_key is not None and self._api_key.get_secret_value():
            # The key is the Authorization; aiohttp refuses credentials in the URL beside it.
            base = base.with_user(None)
        self._chat_url = base.joinpath("chat/completions")
        self._models_url = base.joinpath("models")
        self._proxy = _environment_proxy(base)
        self._slots = asyncio.Semaphore(max_concurrency)
        # What this upstream refused, learnt from its answers: see `_refused_feature`.
        self._adapted: set[str] = set()
        self._format_style = 0
        self._reachable: bool | None = None
        self._last_error: str | None = None
        self._last_latency_ms: float | None = None
        self._last_contact = 0.0
        self._checking: asyncio.Task[None] | None = None

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
        if self._client is None:
            self._client = self._new_client()
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
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def _check(self) -> None:
        await self._probe()
        if not self.model:
            # llama.cpp's server and LM Studio answer with their loaded model whatever the name.
            self.model = "default"

    def _new_client(self) -> aiohttp.ClientSession:
        headers = {"Accept": "application/json"}
        if self._api_key is not None and self._api_key.get_secret_value():
            headers["Authorization"] = f"Bearer {self._api_key.get_secret_value()}"
        timeout = aiohttp.ClientTimeout(
            total=None,  # the total timeout is ours: `total_timeout`, across retries
            # Waiting for a pooled connection counts, as httpx's pool timeout did.
            connect=self.queue_timeout + self.connect_timeout,
            sock_connect=self.connect_timeout,
            sock_read=self.read_timeout,
        )
        connector = aiohttp.TCPConnector(limit=self.max_concurrency + 2, limit_per_host=0)
        # Not `trust_env`: aiohttp would then look up netrc and the proxy variables in a
        # thread on every request; the proxy is looked up once instead (`_proxy`).
        return aiohttp.ClientSession(headers=headers, timeout=timeout, connector=connector)

    @property
    def _http(self) -> aiohttp.ClientSession:
        if self._client is None:
            self._client = self._new_client()
        return self._client

    # The Backend protocol

    async def count_tokens(self, messages: tuple[ChatMessage, ...]) -> int:
        """An estimate on the high side: upstreams do not expose their tokenizer."""
        return sum(
            math.ceil(len(message.content) / _CHARS_PER_TOKEN) + _TOKENS_PER_MESSAGE
            for message in messages
        )

    async def generate(self, request: GenerationRequest) -> Generation:
        """Ask for a whole reply."""
        started = time.perf_counter()
        deadline = asyncio.get_running_loop().time() + self.total_timeout
        try:
            async with asyncio.timeout_at(deadline), self._slot(deadline):
                response = await self._open(request, stream=False, deadline=deadline)
                data = await self._read_json(response)
                generation = await self._read_generation(data, request)
        except TimeoutError:
            raise self._timeout() from None
        except BackendError as exc:
            self._record_failure(exc)
            raise
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
        try:
            async with self._slot(deadline), aclosing(self._stream(request, deadline)) as chunks:
                async for chunk in chunks:
                    yield chunk
        except TimeoutError:
            raise self._timeout() from None
        except BackendError as exc:
            self._record_failure(exc)
            raise
        self._record_success((time.perf_counter() - started) * 1000)

    async def state(self) -> BackendState:
        """Reachable or not, the last error and latency; probes `GET /models` when idle."""
        checking = self._checking is not None and not self._checking.done()
        idle = time.monotonic() - self._last_contact > _STATE_PROBE_INTERVAL
        if idle and self._client is not None and not checking:
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

    def _payload(self, request: GenerationRequest, *, stream: bool) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self.model or "default",
            "messages": [wire_message(m) for m in request.messages],
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "stream": stream,
        }
        if request.stop:
            payload["stop"] = list(request.stop)
        if request.top_p is not None:
            payload["top_p"] = request.top_p
        if request.seed is not None:
            payload["seed"] = request.seed
        if request.tools:
            payload["tools"] = list(request.tools)
            if request.tool_choice is not None:
                payload["tool_choice"] = request.tool_choice
        schema = choices_schema(request.choices) if request.choices else request.json_schema
        style = FORMAT_STYLES[min(self._format_style, len(FORMAT_STYLES) - 1)]
        if request.response_format is not None and self._format_style == 0:
            # A client's own response_format, as it wrote it; refused, it becomes a schema.
            payload["response_format"] = request.response_format
        elif schema is not None and (wanted := response_format(schema, style)) is not None:
            payload["response_format"] = wanted
        if stream and "stream_options" not in self._adapted:
            payload["stream_options"] = {"include_usage": True}
        if "max_tokens" in self._adapted:
            # OpenAI's reasoning models take only the newer name.
            payload["max_completion_tokens"] = payload.pop("max_tokens")
        if "temperature" in self._adapted:
            del payload["temperature"]
        return payload

    async def _open(
        self, request: GenerationRequest, *, stream: bool, deadline: float
    ) -> aiohttp.ClientResponse:
        """Send the request, retried and adapted until the upstream starts answering."""
        if not self.model:
            async with asyncio.timeout_at(deadline):
                await self.checked()  # the start-up check names the model (it is short)
        attempt = 0
        while True:
            payload = self._payload(request, stream=stream)
            try:
                async with asyncio.timeout_at(deadline):
                    return await self._send(payload)
            except _RetryableFailure as failure:
                await self._before_retry(failure, attempt, deadline)
                attempt += 1
            except _FeatureRefused as refused:
                log.info("upstream %r refused %s; asking without it", self.name, refused.feature)
                if refused.feature == "response_format":
                    self._format_style += 1
                else:
                    self._adapted.add(refused.feature)

    async def _send(self, payload: dict[str, Any]) -> aiohttp.ClientResponse:
        """One attempt: the response once its status says the upstream is answering."""
        try:
            response = await self._http.post(
                self._chat_url, json=payload, allow_redirects=False, proxy=self._proxy
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._transport_failure(exc) from None
        if response.status < 400:
            return response
        try:
            body = (await response.read()).decode("utf-8", "replace")
        except (aiohttp.ClientError, TimeoutError):
            body = ""
        finally:
            response.release()
        # llama-cpp-python's server answers 500 to a request it cannot validate.
        if response.status in (400, 422, 500):
            feature = refused_feature(payload, body)
            if feature is not None:
                raise _FeatureRefused(feature)
        raise self._status_failure(response.status, response.headers, body)

    async def _read_json(self, response: aiohttp.ClientResponse) -> Any:
        """The decoded body of a non-streamed answer."""
        try:
            body = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._broken_off(exc) from None
        finally:
            response.release()
        try:
            return json.loads(body)
        except ValueError:
            raise BackendError(
                f"upstream {self.name!r} answered with malformed JSON: "
                + self._excerpt(body.decode("utf-8", "replace"))
            ) from None

    async def _before_retry(
        self, failure: _RetryableFailure, attempt: int, deadline: float
    ) -> None:
        """Sleep before the next attempt, or raise when the attempts or the time are spent."""
        if attempt >= self.max_retries:
            raise failure.error
        delay = random.uniform(0, min(self.backoff_max, self.backoff_base * 2**attempt))
        if failure.retry_after is not None:
            delay = max(delay, failure.retry_after)
        if delay >= deadline - asyncio.get_running_loop().time():
            # Waiting would outlast the total timeout: answer now, with the upstream's delay.
            raise failure.error
        log.info(
            "upstream %r failed (%s); retrying in %.2fs", self.name, failure.error.message, delay
        )
        await asyncio.sleep(delay)

    async def _stream(
        self, request: GenerationRequest, deadline: float
    ) -> AsyncGenerator[Chunk, None]:
        """One streamed completion: retried until the upstream starts answering, never after."""
        response = await self._open(request, stream=True, deadline=deadline)
        try:
            async with aclosing(self._read_stream(response, request, deadline)) as chunks:
                async for chunk in chunks:
                    yield chunk
        finally:
            # Back to the pool when the answer was read to its end; closed when it was not.
            response.release()

    async def _read_stream(
        self, response: aiohttp.ClientResponse, request: GenerationRequest, deadline: float
    ) -> AsyncGenerator[Chunk, None]:
        """Parse the Server-Sent Events of a streamed completion into chunks."""
        completion_tokens = 0
        usage: Usage | None = None
        finish: str | None = None
        done = False
        started_calls: set[int] = set()
        lines = _lines(response, deadline)
        events = sse_data(lines)
        try:
            async for data in events:
                if data.strip() == "[DONE]":
                    done = True
                    break
                try:
                    event = json.loads(data)
                except ValueError:
                    raise BackendError(
                        f"upstream {self.name!r} sent a malformed event: {self._excerpt(data)}"
                    ) from None
                if not isinstance(event, dict):
                    raise BackendError(f"upstream {self.name!r} sent an event that is no object")
                if "error" in event:
                    raise BackendError(
                        f"upstream {self.name!r} failed midway: {self._error_text(event)}"
                    )
                if isinstance(event.get("usage"), dict):
                    usage = usage_of(event["usage"]) or usage
                for choice in event.get("choices") or []:
                    if not isinstance(choice, dict):
                        continue
                    delta = choice.get("delta") or {}
                    text = delta.get("content") or ""
                    calls = tuple(
                        # Some servers (llama-cpp-python's) repeat the id and name in every
                        # piece; OpenAI sends them with the first only, and clients join pieces.
                        replace(call, id="", name="") if call.index in started_calls else call
                        for call in tool_calls_of(delta.get("tool_calls"), piece=True)
                    )
                    started_calls.update(call.index for call in calls)
                    if text or calls:
                        completion_tokens += 1
                        yield Chunk(text=well_formed(str(text)), tool_calls=calls)
                    finish = choice.get("finish_reason") or finish
        except aiohttp.ClientError as exc:
            raise self._broken_off(exc) from None
        finally:
            # Both, explicitly: a generator left to be finalized costs the loop a wake-up.
            await events.aclose()
            await lines.aclose()
        if not done and finish is None:
            raise BackendError(f"upstream {self.name!r} stopped midway, before the reply ended")
        if usage is None:
            usage = Usage(await self.count_tokens(request.messages), completion_tokens)
        yield Chunk(text="", done=True, usage=usage, finish_reason=finish or "stop")

    async def _read_generation(self, data: Any, request: GenerationRequest) -> Generation:
        try:
            choice = data["choices"][0]
            message = choice["message"]
        except (KeyError, IndexError, TypeError):
            raise BackendError(
                f"upstream {self.name!r} answered without a choice: {self._excerpt(str(data))}"
            ) from None
        text = message.get("content") if isinstance(message, dict) else None
        calls = tool_calls_of(message.get("tool_calls")) if isinstance(message, dict) else ()
        if calls and text is None:
            text = ""
        if not isinstance(text, str):
            refusal = message.get("refusal") if isinstance(message, dict) else None
            reason = f"refused: {self._excerpt(str(refusal))}" if refusal else "answered no text"
            raise BackendError(f"upstream {self.name!r} {reason}")
        text = well_formed(text)
        if request.choices:
            # Unwrap the `{"choice": ...}` the schema asked for; an answer that names none of
            # the choices is left as it is, for the caller's validation to judge.
            text = match_choice(text, request.choices) or text
        usage = usage_of(data.get("usage")) or Usage(
            await self.count_tokens(request.messages), max(1, math.ceil(len(text) / 4))
        )
        return Generation(
            text=text,
            usage=usage,
            finish_reason=str(choice.get("finish_reason") or "stop"),
            backend=self.name,
            model=self.model or str(data.get("model") or ""),
            tool_calls=calls,
        )

    # Slots, failures and state

    def _slot(self, deadline: float | None = None) -> _Slot:
        return _Slot(self, deadline)

    def _status_failure(
        self, status: int, headers: Mapping[str, str], body: str
    ) -> _RetryableFailure | BackendError:
        retry_after = parse_retry_after(headers.get("retry-after"))
        detail = self._excerpt(error_message(body))
        what = f"upstream {self.name!r} answered {status}"
        error: BackendError
        if status in _UNAVAILABLE_STATUSES:
            error = BackendUnavailable(f"{what}: {detail}", retry_after=retry_after or 1.0)
        elif status in _TIMEOUT_STATUSES:
            error = BackendTimeout(f"{what}: {detail}", retry_after=retry_after or 5.0)
        else:
            error = BackendError(f"{what}: {detail}")
        if status in _RETRY_STATUSES:
            return _RetryableFailure(error, retry_after)
        return error

    def _connection_failure(self, exc: BaseException) -> _RetryableFailure:
        error = BackendUnreachable(
            f"upstream {self.name!r} is unreachable: {self._describe(exc)}", retry_after=5.0
        )
        return _RetryableFailure(error)

    def _transport_failure(self, exc: BaseException) -> _RetryableFailure | BackendError:
        """What a failure to send a request and get its status means."""
        if isinstance(exc, aiohttp.ConnectionTimeoutError | aiohttp.ClientConnectorError):
            return self._connection_failure(exc)
        if isinstance(exc, TimeoutError):
            # A read timeout is not retried: the upstream may still be working on the first
            # attempt. (aiohttp's read timeouts are `TimeoutError`s too.)
            return self._read_timeout()
        if isinstance(exc, _BROKEN):
            # Retried like a 5xx: the upstream is there, but this answer is lost.
            return _RetryableFailure(
                BackendError(
                    f"upstream {self.name!r} broke off the connection before answering: "
                    + self._describe(exc)
                )
            )
        return self._connection_failure(exc)

    def _broken_off(self, exc: BaseException) -> BackendError:
        """What a transport failure while reading an answer means: a timeout, or a 502."""
        if isinstance(exc, TimeoutError):
            return self._read_timeout()
        return BackendError(f"upstream {self.name!r} stopped midway: {self._describe(exc)}")

    def _read_timeout(self) -> BackendTimeout:
        return BackendTimeout(
            f"upstream {self.name!r} sent nothing for {self.read_timeout:g}s", retry_after=5.0
        )

    def _timeout(self) -> BackendTimeout:
        error = BackendTimeout(
            f"upstream {self.name!r} did not finish within {self.total_timeout:g}s",
            retry_after=5.0,
        )
        self._record_failure(error)
        return error

    def _describe(self, exc: BaseException) -> str:
        return self._scrub(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)

    def _excerpt(self, text: str) -> str:
        text = " ".join(well_formed(text).split())
        if len(text) > _MAX_UPSTREAM_MESSAGE:
            text = text[:_MAX_UPSTREAM_MESSAGE] + "…"
        return self._scrub(text) or "(empty answer)"

    def _error_text(self, event: dict[str, Any]) -> str:
        return self._excerpt(error_message(json.dumps(event)))

    def _scrub(self, text: str) -> str:
        """Remove the API key from text an upstream or a library produced."""
        return redact(text, self.secrets)

    def _record_success(self, latency_ms: float | None) -> None:
        self._reachable = True
        self._last_error = None
        self._last_contact = time.monotonic()
        if latency_ms is not None:
            self._last_latency_ms = latency_ms

    def _record_failure(self, error: BackendError) -> None:
        message = self._scrub(error.message)
        self._last_error = message
        self._last_contact = time.monotonic()
        # Saturation and bad answers prove the upstream is there; only no answer at all does not.
        self._reachable = not isinstance(error, BackendUnreachable)
        log.warning("upstream %r: %s", self.name, message)

    async def _probe(self) -> None:
        """`GET /models` with a short timeout: whether the upstream answers, how fast, and its
        first model when the configuration named none."""
        started = time.perf_counter()
        try:
            timeout = aiohttp.ClientTimeout(total=min(self.connect_timeout, self.probe_timeout))
            async with self._http.get(
                self._models_url, timeout=timeout, allow_redirects=False, proxy=self._proxy
            ) as response:
                status, body = response.status, await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            unreachable = isinstance(exc, aiohttp.ClientConnectorError | TimeoutError)
            if unreachable or not isinstance(exc, _BROKEN):
                problem: BackendError = BackendUnreachable(
                    f"upstream {self.name!r} is unreachable: {self._describe(exc)}"
                )
            else:  # it answered, if badly
                problem = BackendError(
                    f"upstream {self.name!r} failed to list its models: " + self._describe(exc)
                )
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
            self.model = _first_model(body)


def _environment_proxy(url: URL) -> str | None:
    """The proxy HTTP_PROXY / HTTPS_PROXY name for `url`, unless NO_PROXY exempts its host."""
    if not url.host or urllib.request.proxy_bypass(url.host):
        return None
    return urllib.request.getproxies().get(url.scheme)


async def _lines(response: aiohttp.ClientResponse, deadline: float) -> AsyncGenerator[str, None]:
    """The lines of a streamed body as they arrive, without their line ends; any length.

    Each wait for more of the body ends at `deadline` (TimeoutError). What has arrived already
    is read without a wait, and without a timer: a fast upstream's whole answer often has.
    """
    content = response.content
    rest = b""
    while True:
        piece = content.read_nowait()
        if not piece and not content.at_eof():
            async with asyncio.timeout_at(deadline):
                piece = await content.readany()
        if not piece:
            break
        *lines, rest = (rest + piece).split(b"\n")
        for line in lines:
            yield line.removesuffix(b"\r").decode("utf-8", "replace")
    if rest:
        yield rest.removesuffix(b"\r").decode("utf-8", "replace")


def _first_model(body: bytes) -> str:
    """The id of the first model an upstream's `/models` lists, or nothing."""
    try:
        return str(json.loads(body)["data"][0]["id"])
    except (ValueError, KeyError, IndexError, TypeError):
        return ""


class _FeatureRefused(Exception):
    """The upstream refused an optional part of the request; it is asked again without it."""

    def __init__(self, feature: str) -> None:
        super().__init__(feature)
        self.feature = feature


class _Slot:
    """One of the backend's concurrent-request slots, waited for at most `queue_timeout`."""

    def __init__(self, backend: OpenAIBackend, deadline: float | None) -> None:
        self._backend = backend
        self._deadline = deadline

    async def __aenter__(self) -> None:
        backend = self._backend
        wait = backend.queue_timeout
        if self._deadline is not None:
            wait = min(wait, self._deadline - asyncio.get_running_loop().time())
        if not backend._slots.locked():
            await backend._slots.acquire()  # free: taken at once, no timer needed
            return
        try:
            async with asyncio.timeout(max(wait, 0.0)):
                await backend._slots.acquire()
        except TimeoutError:
            raise BackendUnavailable(
                f"upstream {backend.name!r} is saturated: {backend.max_concurrency} requests "
                "are running; try again shortly",
                retry_after=max(1.0, backend.queue_timeout),
            ) from None

    async def __aexit__(self, *exc_info: object) -> None:
        self._backend._slots.release()
