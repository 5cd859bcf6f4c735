"""OpenTelemetry traces, on when OTEL_EXPORTER_OTLP_ENDPOINT is set and never imported otherwise.

The SDK, the OTLP exporter and the FastAPI, httpx and aiohttp instrumentations come with the
`otel` extra (`pip install 'gptactions[otel]'`); httpx2, for the sign-in provider's calls, is
traced by `TracedTransport` here. Spans go to the endpoint over OTLP/HTTP; the standard `OTEL_*`
variables (service name, headers, sampling) apply as usual.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx2

from gptactions import __version__
from gptactions.llm.redact import REDACTED, redact, redacted_query

if TYPE_CHECKING:
    from fastapi import FastAPI
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import SpanExporter as _SpanExporter
    from opentelemetry.sdk.trace.export import SpanExportResult
    from opentelemetry.util.types import Attributes
else:
    # The SDK is imported only when tracing is installed; the class below is an exporter by its
    # methods, which mypy checks against the SDK's as if it were a subclass.
    _SpanExporter = object

ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"
UNTRACED_PATHS = "/metrics,/healthz"
"""Scrapes and health checks come every few seconds and would drown the traces that matter."""


def tracing_wanted() -> bool:
    """Whether traces should be exported: the standard OTLP endpoint variable is set."""
    return bool(os.environ.get(ENDPOINT_ENV, "").strip())


class TracingUnavailable(RuntimeError):
    """Traces are asked for but the OpenTelemetry packages are not installed."""


@dataclass
class Tracing:
    """The installed tracing, to flush and remove when the app stops."""

    provider: Any
    app: Any
    httpx_instrumentor: Any
    aiohttp_instrumentor: Any

    def traced_transport(self, transport: httpx2.AsyncBaseTransport) -> httpx2.AsyncBaseTransport:
        """`transport` (httpx2's), each request through it a client span that passes the trace
        on: OpenTelemetry's httpx instrumentation knows httpx, not httpx2."""
        return TracedTransport(transport, self.provider.get_tracer(__name__))

    def close(self) -> None:
        """Flush the spans still buffered and undo the instrumentation."""
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        self.aiohttp_instrumentor.uninstrument()
        self.httpx_instrumentor.uninstrument()
        FastAPIInstrumentor.uninstrument_app(self.app)
        self.provider.shutdown()


def install_tracing(app: FastAPI, *, exporter: Any = None, secrets: Iterable[str] = ()) -> Tracing:
    """Trace the app's requests and its outgoing httpx and aiohttp calls (those to upstreams).

    Spans go to `exporter` when one is given (tests pass an in-memory one), else over OTLP to
    the configured endpoint, through a provider that also becomes the process's global one so
    the spans of the libraries underneath (the MCP SDK's) join the same traces. `secrets` (the
    backends' keys) are replaced by `***` wherever they show in a span. aiohttp sessions are
    traced only when made after this: call it before the backends start.
    """
    try:
        from opentelemetry import trace
        from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
        from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    except ImportError as error:
        raise TracingUnavailable(
            f"{ENDPOINT_ENV} is set but OpenTelemetry is not installed: "
            "pip install 'gptactions[otel]'"
        ) from error

    attributes = {SERVICE_VERSION: __version__}
    if not os.environ.get("OTEL_SERVICE_NAME"):
        attributes[SERVICE_NAME] = "gptactions"
    provider = TracerProvider(resource=Resource.create(attributes))
    secrets = frozenset(secrets)
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        otlp = OTLPSpanExporter()
        provider.add_span_processor(BatchSpanProcessor(RedactingExporter(otlp, secrets)))
        trace.set_tracer_provider(provider)
    else:
        provider.add_span_processor(SimpleSpanProcessor(RedactingExporter(exporter, secrets)))
    # No span per ASGI message: a streamed reply would make one per chunk (a thousand for a long
    # answer), flooding the exporter's queue (2,048 spans) and dropping other requests' spans.
    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=provider,
        excluded_urls=UNTRACED_PATHS,
        exclude_spans=["send", "receive"],
    )
    httpx_instrumentor = HTTPXClientInstrumentor()
    httpx_instrumentor.instrument(tracer_provider=provider)
    # Patches `ClientSession.__init__`: each session made from now on traces its requests and
    # sends `traceparent`. Like httpx's, it strips credentials from the URLs it records.
    aiohttp_instrumentor = AioHttpClientInstrumentor()
    aiohttp_instrumentor.instrument(tracer_provider=provider)
    return Tracing(provider, app, httpx_instrumentor, aiohttp_instrumentor)


CREDENTIAL_HEADER = re.compile(
    r"^http\.(request|response)\.header\..*"
    r"(?:auth|cookie|key|token|secret|password|passwd|session|signature|credential)"
)
"""Header attributes whose values are credentials: every header with one of these words in its
name, wherever: `Authorization` and `Cookie` as `api-key` (Azure OpenAI's clients), `apikey`
(Kong's, Supabase's), `x-goog-api-key`, `X-Auth-Token`, `X-CSRFToken` or `Authentication`. A
header named so that holds no secret (`Idempotency-Key`) loses only its value in the trace."""

URL_ATTRIBUTES = frozenset({"http.url", "http.target", "url.full", "url.query"})

URL_HEADER = re.compile(
    r"^http\.(request|response)\.header\.(location|content[-_]location|referer|refresh)$"
)
"""Header attributes whose values are URLs: an authorization answer's `Location` carries its
code and state, as a page's `Referer` may."""


class RedactingExporter(_SpanExporter):
    """Hands spans to `exporter` with every secret in them replaced by `***`.

    The instrumentations record no headers by default, but the standard
    `OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_*` variables can make them record an upstream's
    `Authorization`, and a recorded exception may quote what the library was sent. The secrets
    are the same the logs are scrubbed of, in every form (`secrets_of`). Whatever the variables
    say, a captured credential header (a client's API key or token) is `REDACTED`, and so are the
    values of the query parameters in `SENSITIVE_QUERY`, in the recorded URL and in headers that
    hold one (`Location`, `Referer`), as OpenTelemetry's conventions advise.
    """

    def __init__(self, exporter: _SpanExporter, secrets: frozenset[str]) -> None:
        self.exporter = exporter
        self.secrets = secrets

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Export the spans, redacted."""
        return self.exporter.export([self._redacted(span) for span in spans])

    def shutdown(self) -> None:
        """Shut the exporter down."""
        self.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Export what the exporter holds."""
        return bool(self.exporter.force_flush(timeout_millis))

    def _redacted(self, span: ReadableSpan) -> ReadableSpan:
        """The span itself when it holds no secret, else a copy without them."""
        from opentelemetry.sdk.trace import Event, ReadableSpan
        from opentelemetry.trace import Status

        name = redact(span.name, self.secrets)
        attributes = self._attributes(span.attributes)
        events = [(event, self._attributes(event.attributes)) for event in span.events]
        description = span.status.description
        status = Status(span.status.status_code, description and redact(description, self.secrets))
        if (
            name == span.name
            and attributes is None
            and all(scrubbed is None for _, scrubbed in events)
            and status.description == description
        ):
            return span
        return ReadableSpan(
            name=name,
            context=span.context,
            parent=span.parent,
            resource=span.resource,
            attributes=span.attributes if attributes is None else attributes,
            events=[
                event if scrubbed is None else Event(event.name, scrubbed, event.timestamp)
                for event, scrubbed in events
            ],
            links=span.links,
            kind=span.kind,
            status=status,
            start_time=span.start_time,
            end_time=span.end_time,
            instrumentation_scope=span.instrumentation_scope,
        )

    def _attributes(self, attributes: Attributes) -> dict[str, Any] | None:
        """The attributes with their secrets redacted, or None when they hold none."""
        if not attributes:
            return None
        scrubbed = {key: self._attribute(key, value) for key, value in attributes.items()}
        return scrubbed if scrubbed != dict(attributes) else None

    def _attribute(self, key: str, value: Any) -> Any:
        if CREDENTIAL_HEADER.match(key):
            return (REDACTED,) if isinstance(value, tuple | list) else REDACTED
        if key in URL_ATTRIBUTES and isinstance(value, str):
            value = redacted_query(value)
        elif URL_HEADER.match(key) and isinstance(value, tuple | list):
            value = tuple(redacted_query(item) if isinstance(item, str) else item for item in value)
        return self._value(value)

    def _value(self, value: Any) -> Any:
        if isinstance(value, str):
            return redact(value, self.secrets)
        if isinstance(value, tuple | list):
            return tuple(self._value(item) for item in value)
        return value


class TracedTransport(httpx2.AsyncBaseTransport):
    """An httpx2 transport whose requests are client spans, described as OpenTelemetry's httpx
    instrumentation describes them (method, URL without credentials, server, status), with the
    trace passed on in `traceparent`. For the calls to the sign-in provider (Authlib's client is
    httpx2's)."""

    def __init__(self, transport: httpx2.AsyncBaseTransport, tracer: Any) -> None:
        self._transport = transport
        self._tracer = tracer

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        """Send `request` inside a client span; errors and 4xx/5xx answers mark it failed."""
        from opentelemetry import propagate
        from opentelemetry.trace import SpanKind, Status, StatusCode

        url = request.url
        attributes: dict[str, Any] = {
            "http.request.method": request.method,
            "url.full": str(url.copy_with(username=None, password=None)),
            "server.address": url.host,
        }
        if url.port is not None:
            attributes["server.port"] = url.port
        with self._tracer.start_as_current_span(
            request.method, kind=SpanKind.CLIENT, attributes=attributes
        ) as span:
            propagate.inject(request.headers)
            response = await self._transport.handle_async_request(request)
            span.set_attribute("http.response.status_code", response.status_code)
            if response.status_code >= 400:
                span.set_status(Status(StatusCode.ERROR))
            return response

    async def aclose(self) -> None:
        """Close the transport underneath."""
        await self._transport.aclose()
