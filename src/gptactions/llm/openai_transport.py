"""The HTTP side of an OpenAI-compatible upstream: connections, slots, retries, and what failures
mean.

Failures map to the backend errors: an answer we cannot use (a broken connection included) is a
`BackendError`, an upstream that is saturated is `BackendUnavailable` (with a retry delay), one
that cannot be reached at all `BackendUnreachable`, and one that stops sending `BackendTimeout`.

The client is aiohttp's: one `ClientSession` per backend, its connections kept alive. httpx's
connection pool was the bottleneck under concurrency (at 32 concurrent requests against an
instant upstream, a bare route calling it managed about a sixth of what the same route did with
aiohttp); bench/bench_gateway.py measures the whole path.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import urllib.request
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import aiohttp
from pydantic import SecretStr
from yarl import URL

from gptactions.llm.base import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    BackendUnreachable,
)
from gptactions.llm.openai_wire import (
    error_message,
    parse_retry_after,
    refused_feature,
    sse_data,
    well_formed,
)
from gptactions.llm.redact import redact, secrets_of

log = logging.getLogger(__name__)

# Statuses worth another attempt: rate limited, or the upstream failing in a way that may pass.
_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# Statuses that mean "saturated" rather than "answered badly", and those that mean the upstream
# ran out of time itself.
_UNAVAILABLE_STATUSES = frozenset({429, 503})
_TIMEOUT_STATUSES = frozenset({408, 504})

# Transport failures after the upstream accepted the connection: it is there, but broke its answer.
# (A refused or unresolvable connection is a `ClientConnectorError`, which `transport_failure`
# tells apart first; both are `ClientOSError`s.)
_BROKEN = (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientOSError)

_MAX_UPSTREAM_MESSAGE = 300

MAX_LINE_BYTES = 1 << 20
"""The longest line of a streamed answer: an SSE `data:` line of an OpenAI chunk is a few KB."""
MAX_BODY_BYTES = 16 << 20
"""The largest non-streamed answer (a whole `chat.completion`, a model list)."""
_MAX_ERROR_BODY_BYTES = 64 << 10
"""What is read of an error answer: only an excerpt is quoted, and a refused field looked for."""
MAX_RETRY_AFTER = 3600.0
"""The longest `Retry-After` of an upstream that is honoured and passed on, in seconds."""


class AnswerTooLarge(Exception):
    """A line of a streamed answer, or a whole answer, is past its limit (named in the message)."""


class RetryableFailure(Exception):
    """One attempt failed in a way that another attempt may fix."""

    def __init__(self, error: BackendError, retry_after: float | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.retry_after = retry_after


class FeatureRefused(Exception):
    """The upstream refused an optional part of the request; it is asked again without it."""

    def __init__(self, feature: str) -> None:
        super().__init__(feature)
        self.feature = feature


class UpstreamTransport:
    """Requests to one upstream's `chat/completions` and `models`, over one connection pool.

    At most `max_concurrency` requests run at once (`slot`): a request waits up to
    `queue_timeout` seconds for a slot, then is refused with 503. `before_retry` spaces the
    attempts that failed with 429, 5xx or a connection error: exponential backoff with jitter,
    honouring `Retry-After`, at most `max_retries` of them.
    """

    def __init__(
        self,
        *,
        name: str,
        base_url: str,
        api_key: SecretStr | None,
        connect_timeout: float,
        read_timeout: float,
        max_retries: int,
        backoff_base: float,
        backoff_max: float,
        max_concurrency: int,
        queue_timeout: float,
        probe_timeout: float,
    ) -> None:
        self.name = name
        self._api_key = api_key
        self.secrets = secrets_of(api_key, base_url)
        """What to keep out of logs and errors: the key, and credentials in the URL."""
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.max_concurrency = max_concurrency
        self.queue_timeout = queue_timeout
        self.probe_timeout = probe_timeout
        base = URL(base_url)
        if self._has_key:
            # The key is the Authorization; aiohttp refuses credentials in the URL beside it.
            base = base.with_user(None)
        self.chat_url = base.joinpath("chat/completions")
        self.models_url = base.joinpath("models")
        self.proxy = _environment_proxy(base)
        self.slots = asyncio.Semaphore(max_concurrency)
        self._client: aiohttp.ClientSession | None = None

    @property
    def _has_key(self) -> bool:
        return self._api_key is not None and bool(self._api_key.get_secret_value())

    # The connection pool

    @property
    def opened(self) -> bool:
        """Whether the connection pool is open."""
        return self._client is not None

    def open(self) -> None:
        """Open the connection pool (once)."""
        if self._client is None:
            self._client = self._new_client()

    async def close(self) -> None:
        """Close the connection pool."""
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    def _new_client(self) -> aiohttp.ClientSession:
        headers = {"Accept": "application/json"}
        if self._api_key is not None and self._has_key:
            headers["Authorization"] = f"Bearer {self._api_key.get_secret_value()}"
        timeout = aiohttp.ClientTimeout(
            total=None,  # the total timeout is the backend's: `total_timeout`, across retries
            # Waiting for a pooled connection counts, as httpx's pool timeout did.
            connect=self.queue_timeout + self.connect_timeout,
            sock_connect=self.connect_timeout,
            sock_read=self.read_timeout,
        )
        connector = aiohttp.TCPConnector(limit=self.max_concurrency + 2, limit_per_host=0)
        # Not `trust_env`: aiohttp would then look up netrc and the proxy variables in a
        # thread on every request; the proxy is looked up once instead (`proxy`).
        return aiohttp.ClientSession(headers=headers, timeout=timeout, connector=connector)

    @property
    def _http(self) -> aiohttp.ClientSession:
        self.open()
        assert self._client is not None
        return self._client

    def slot(self, deadline: float | None = None) -> Slot:
        """One of the concurrent-request slots, waited for until `queue_timeout` or `deadline`."""
        return Slot(self, deadline)

    # Requests

    async def send(self, payload: dict[str, Any]) -> aiohttp.ClientResponse:
        """One attempt: the response once its status says the upstream is answering.

        Raises `RetryableFailure` for a failure another attempt may fix, `FeatureRefused` for
        an optional part of `payload` the upstream cannot take, `BackendError` otherwise.
        """
        try:
            response = await self._http.post(
                self.chat_url, json=payload, allow_redirects=False, proxy=self.proxy
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self.transport_failure(exc) from None
        if response.status < 400:
            return response
        try:
            raw, _ = await _read_at_most(response, _MAX_ERROR_BODY_BYTES, head=True)
            body = raw.decode("utf-8", "replace")
        except (aiohttp.ClientError, TimeoutError):
            body = ""
        finally:
            response.release()
        # llama-cpp-python's server answers 500 to a request it cannot validate.
        if response.status in (400, 422, 500):
            feature = refused_feature(payload, body)
            if feature is not None:
                raise FeatureRefused(feature)
        raise self.status_failure(response.status, response.headers, body)

    async def before_retry(self, failure: RetryableFailure, attempt: int, deadline: float) -> None:
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

    async def read_json(self, response: aiohttp.ClientResponse) -> Any:
        """The decoded body of a non-streamed answer, at most `MAX_BODY_BYTES` of it."""
        try:
            body, complete = await _read_at_most(response, MAX_BODY_BYTES)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self.broken_off(exc) from None
        finally:
            response.release()  # closes the connection when the body was not read to its end
        if not complete:
            raise self.too_large(f"an answer larger than {_size(MAX_BODY_BYTES)}")
        try:
            return json.loads(body)
        except ValueError:
            raise BackendError(
                f"upstream {self.name!r} answered with malformed JSON: "
                + self.excerpt(body.decode("utf-8", "replace"))
            ) from None

    async def events(
        self, response: aiohttp.ClientResponse, deadline: float
    ) -> AsyncGenerator[str, None]:
        """The `data` of each Server-Sent Event of a streamed answer, as it arrives.

        A connection that breaks is a `BackendError`, one silent for the read timeout a
        `BackendTimeout`; `deadline` passing while it waits is a `TimeoutError`.
        """
        lines = _lines(response, deadline, MAX_LINE_BYTES)
        events = sse_data(lines)
        try:
            async for data in events:
                yield data
        except aiohttp.ClientError as exc:
            raise self.broken_off(exc) from None
        except AnswerTooLarge as exc:
            response.close()  # the rest of the answer is not worth reading: drop the connection
            raise self.too_large(str(exc)) from None
        finally:
            # Both, explicitly: a generator left to be finalized costs the loop a wake-up.
            await events.aclose()
            await lines.aclose()

    async def list_models(self) -> tuple[int, bytes]:
        """`GET /models` with a short timeout: its status and body.

        No answer at all is `BackendUnreachable`; an answer broken off, a `BackendError`.
        """
        try:
            timeout = aiohttp.ClientTimeout(total=min(self.connect_timeout, self.probe_timeout))
            async with self._http.get(
                self.models_url, timeout=timeout, allow_redirects=False, proxy=self.proxy
            ) as response:
                body, complete = await _read_at_most(response, MAX_BODY_BYTES)
                if not complete:
                    response.close()
                    raise self.too_large(f"a model list larger than {_size(MAX_BODY_BYTES)}")
                return response.status, body
        except (aiohttp.ClientError, TimeoutError) as exc:
            unreachable = isinstance(exc, aiohttp.ClientConnectorError | TimeoutError)
            if unreachable or not isinstance(exc, _BROKEN):
                raise BackendUnreachable(
                    f"upstream {self.name!r} is unreachable: {self.describe(exc)}"
                ) from None
            # It answered, if badly.
            raise BackendError(
                f"upstream {self.name!r} failed to list its models: " + self.describe(exc)
            ) from None

    # What failures mean

    def status_failure(
        self, status: int, headers: Mapping[str, str], body: str
    ) -> RetryableFailure | BackendError:
        """What an error status means, and whether another attempt may fix it."""
        retry_after = parse_retry_after(headers.get("retry-after"))
        if retry_after is not None:
            # An HTTP date far ahead (or a huge number) is not a delay worth passing on.
            retry_after = min(retry_after, MAX_RETRY_AFTER)
        detail = self.excerpt(error_message(body))
        what = f"upstream {self.name!r} answered {status}"
        error: BackendError
        if status in _UNAVAILABLE_STATUSES:
            error = BackendUnavailable(f"{what}: {detail}", retry_after=retry_after or 1.0)
        elif status in _TIMEOUT_STATUSES:
            error = BackendTimeout(f"{what}: {detail}", retry_after=retry_after or 5.0)
        else:
            error = BackendError(f"{what}: {detail}")
        if status in _RETRY_STATUSES:
            return RetryableFailure(error, retry_after)
        return error

    def _connection_failure(self, exc: BaseException) -> RetryableFailure:
        error = BackendUnreachable(
            f"upstream {self.name!r} is unreachable: {self.describe(exc)}", retry_after=5.0
        )
        return RetryableFailure(error)

    def transport_failure(self, exc: BaseException) -> RetryableFailure | BackendError:
        """What a failure to send a request and get its status means."""
        if isinstance(exc, aiohttp.ConnectionTimeoutError | aiohttp.ClientConnectorError):
            return self._connection_failure(exc)
        if isinstance(exc, TimeoutError):
            # A read timeout is not retried: the upstream may still be working on the first
            # attempt. (aiohttp's read timeouts are `TimeoutError`s too.)
            return self.read_timeout_error()
        if isinstance(exc, _BROKEN):
            # Retried like a 5xx: the upstream is there, but this answer is lost.
            return RetryableFailure(
                BackendError(
                    f"upstream {self.name!r} broke off the connection before answering: "
                    + self.describe(exc)
                )
            )
        return self._connection_failure(exc)

    def broken_off(self, exc: BaseException) -> BackendError:
        """What a transport failure while reading an answer means: a timeout, or a 502."""
        if isinstance(exc, TimeoutError):
            return self.read_timeout_error()
        return BackendError(f"upstream {self.name!r} stopped midway: {self.describe(exc)}")

    def too_large(self, what: str) -> BackendError:
        """An answer past one of the size limits: a broken answer (502)."""
        return BackendError(f"upstream {self.name!r} sent {what}; the answer is abandoned")

    def read_timeout_error(self) -> BackendTimeout:
        """The upstream sent nothing for the read timeout."""
        return BackendTimeout(
            f"upstream {self.name!r} sent nothing for {self.read_timeout:g}s", retry_after=5.0
        )

    def describe(self, exc: BaseException) -> str:
        """An exception as an error message may quote it, without the secrets."""
        return self.scrub(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)

    def excerpt(self, text: str) -> str:
        """What the upstream wrote, as an error message may quote it: short, on one line, without
        the secrets."""
        text = " ".join(well_formed(text).split())
        if len(text) > _MAX_UPSTREAM_MESSAGE:
            text = text[:_MAX_UPSTREAM_MESSAGE] + "…"
        return self.scrub(text) or "(empty answer)"

    def scrub(self, text: str) -> str:
        """Remove the API key from text an upstream or a library produced."""
        return redact(text, self.secrets)


class Slot:
    """One of the transport's concurrent-request slots, waited for at most `queue_timeout`."""

    def __init__(self, transport: UpstreamTransport, deadline: float | None) -> None:
        self._transport = transport
        self._deadline = deadline

    async def __aenter__(self) -> None:
        transport = self._transport
        wait = transport.queue_timeout
        if self._deadline is not None:
            wait = min(wait, self._deadline - asyncio.get_running_loop().time())
        if not transport.slots.locked():
            await transport.slots.acquire()  # free: taken at once, no timer needed
            return
        try:
            async with asyncio.timeout(max(wait, 0.0)):
                await transport.slots.acquire()
        except TimeoutError:
            raise BackendUnavailable(
                f"upstream {transport.name!r} is saturated: {transport.max_concurrency} requests "
                "are running; try again shortly",
                retry_after=max(1.0, transport.queue_timeout),
            ) from None

    async def __aexit__(self, *exc_info: object) -> None:
        self._transport.slots.release()


def _environment_proxy(url: URL) -> str | None:
    """The proxy HTTP_PROXY / HTTPS_PROXY name for `url`, unless NO_PROXY exempts its host."""
    if not url.host or urllib.request.proxy_bypass(url.host):
        return None
    return urllib.request.getproxies().get(url.scheme)


async def _read_at_most(
    response: aiohttp.ClientResponse, limit: int, *, head: bool = False
) -> tuple[bytes, bool]:
    """The body of `response` up to `limit` bytes, and whether that was all of it.

    Reading stops past the limit (the rest is left unread: release the response to drop it);
    a `Content-Length` already past it is not read at all, unless the `head` of the body is
    wanted anyway.
    """
    too_long = response.content_length is not None and response.content_length > limit
    if too_long and not head:
        return b"", False
    body = bytearray()
    async for piece in response.content.iter_any():
        body += piece
        if len(body) > limit:
            return bytes(body[:limit]), False
    return bytes(body), True


def _size(limit: int) -> str:
    """A limit in bytes as a message names it: 1 MiB, 64 KiB, 1000 bytes."""
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if limit >= scale and limit % scale == 0:
            return f"{limit // scale} {unit}"
    return f"{limit} bytes"


async def _lines(
    response: aiohttp.ClientResponse, deadline: float, limit: int
) -> AsyncGenerator[str, None]:
    """The lines of a streamed body as they arrive, without their line ends.

    A line longer than `limit` bytes is `AnswerTooLarge`. Only the unfinished last line is
    kept between reads, and each piece is searched for line ends once: linear in the body.
    Each wait for more of the body ends at `deadline` (TimeoutError). What has arrived already
    is read without a wait, and without a timer: a fast upstream's whole answer often has.
    """
    content = response.content
    rest = bytearray()
    while True:
        piece = content.read_nowait()
        if not piece and not content.at_eof():
            async with asyncio.timeout_at(deadline):
                piece = await content.readany()
        if not piece:
            break
        start = 0
        while (end := piece.find(b"\n", start)) >= 0:
            if rest:
                rest += piece[start:end]
                line = bytes(rest)
                rest.clear()
            else:
                line = piece[start:end]
            if len(line) > limit:
                raise AnswerTooLarge(f"a line longer than {_size(limit)}")
            yield line.removesuffix(b"\r").decode("utf-8", "replace")
            start = end + 1
        rest += memoryview(piece)[start:]
        if len(rest) > limit:
            raise AnswerTooLarge(f"a line longer than {_size(limit)}")
    if rest:
        yield bytes(rest).removesuffix(b"\r").decode("utf-8", "replace")
