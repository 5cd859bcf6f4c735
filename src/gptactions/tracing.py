"""OpenTelemetry traces, on when OTEL_EXPORTER_OTLP_ENDPOINT is set and never imported otherwise.

The SDK, the OTLP exporter and the FastAPI and httpx instrumentations come with the `otel` extra
(`pip install 'gptactions[otel]'`). Spans go to the endpoint over OTLP/HTTP; the standard
`OTEL_*` variables (service name, headers, sampling) apply as usual.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gptactions import __version__

if TYPE_CHECKING:
    from fastapi import FastAPI

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

    def close(self) -> None:
        """Flush the spans still buffered and undo the instrumentation."""
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        self.httpx_instrumentor.uninstrument()
        FastAPIInstrumentor.uninstrument_app(self.app)
        self.provider.shutdown()


def install_tracing(app: FastAPI, *, exporter: Any = None) -> Tracing:
    """Trace the app's requests and its outgoing httpx calls.

    Spans go to `exporter` when one is given (tests pass an in-memory one), else over OTLP to
    the configured endpoint, through a provider that also becomes the process's global one so
    the spans of the libraries underneath (the MCP SDK's) join the same traces.
    """
    try:
        from opentelemetry import trace
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
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(provider)
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider, excluded_urls=UNTRACED_PATHS)
    httpx_instrumentor = HTTPXClientInstrumentor()
    httpx_instrumentor.instrument(tracer_provider=provider)
    return Tracing(provider, app, httpx_instrumentor)
