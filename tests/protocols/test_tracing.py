"""Traces: off and not imported without OTEL_EXPORTER_OTLP_ENDPOINT, spans with it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gptactions.config import Settings
from gptactions.llm.fake import FakeBackend
from tests.conftest import ADMIN_KEY
from tests.protocols.conftest import served

PROBE = """
import json, sys
from gptactions.app import create_app
from gptactions.config import Settings
from opentelemetry import trace
create_app(Settings(database_url="sqlite:///probe.db"))
loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
print(json.dumps({"modules": loaded, "provider": type(trace.get_tracer_provider()).__name__}))
"""


def test_without_the_endpoint_nothing_of_opentelemetry_is_loaded(isolated: Path) -> None:
    environment = {"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=isolated,
        env=environment,
        capture_output=True,
        check=True,
    )
    probe = json.loads(done.stdout.decode().strip().splitlines()[-1])
    # FastAPI and the MCP SDK import the OpenTelemetry API (a no-op without an SDK); the SDK,
    # the exporter and the instrumentations are ours to load, and stay out.
    heavy = [
        m
        for m in probe["modules"]
        if m.startswith(
            ("opentelemetry.sdk", "opentelemetry.exporter", "opentelemetry.instrumentation")
        )
    ]
    assert heavy == []
    assert probe["provider"] == "ProxyTracerProvider"


async def test_with_the_endpoint_requests_make_spans(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    exporter = InMemorySpanExporter()
    async with served(settings, FakeBackend(), span_exporter=exporter) as server:
        # A client made now is traced by the httpx instrumentation, which also passes the
        # trace on in `traceparent`.
        async with httpx.AsyncClient(base_url=server.url) as client:
            response = await client.get(
                "/api/v1/gpt/status", headers={"Authorization": f"Bearer {ADMIN_KEY}"}
            )
            assert response.status_code == 200
            await client.get("/metrics")
        spans = exporter.get_finished_spans()
    routes = [s for s in spans if s.kind.name == "SERVER"]
    assert [s.attributes["http.route"] for s in routes] == ["/api/v1/gpt/status"]
    assert routes[0].resource.attributes["service.name"] == "gptactions"
    calls = [s for s in spans if s.kind.name == "CLIENT"]
    status = [s for s in calls if str(s.attributes.get("http.url")).endswith("/api/v1/gpt/status")]
    assert len(status) == 1
    assert status[0].context.trace_id == routes[0].context.trace_id
