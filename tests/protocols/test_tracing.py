"""Traces: off and not imported without OTEL_EXPORTER_OTLP_ENDPOINT, spans with it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode
from pydantic import SecretStr

from gptactions.config import Settings
from gptactions.llm.fake import FakeBackend
from gptactions.llm.openai import OpenAIBackend
from gptactions.llm.redact import secrets_of
from gptactions.tracing import RedactingExporter
from tests.conftest import ADMIN_KEY
from tests.oidc_provider import LocalProvider, serve_provider
from tests.protocols.conftest import served
from tests.upstream.faulty import FaultyUpstream

UPSTREAM_KEY = "sk-tracing-UPSTREAM-SECRET-271828"

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


async def test_a_streamed_reply_is_one_span_not_one_per_chunk(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    exporter = InMemorySpanExporter()
    reply = " ".join(f"word{n}" for n in range(40))
    async with served(settings, FakeBackend([reply]), span_exporter=exporter) as server:
        async with httpx.AsyncClient(base_url=server.url) as client:
            streamed = await client.post(
                "/api/v1/gpt/conversations",
                json={"userId": "ada", "message": "Talk."},
                headers={"Authorization": f"Bearer {ADMIN_KEY}", "Accept": "text/event-stream"},
            )
        spans = exporter.get_finished_spans()
    assert streamed.status_code == 200
    assert streamed.text.count("event: token") > 10  # many chunks went out
    server_spans = [s for s in spans if s.kind.name == "SERVER"]
    assert [s.attributes["http.route"] for s in server_spans] == ["/api/v1/gpt/conversations"]
    assert [s.name for s in spans if s.kind.name == "INTERNAL"] == []


@pytest.mark.upstream
async def test_upstream_calls_are_client_spans_of_the_request_and_carry_the_trace(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    # Every request header recorded, the Authorization sent to the upstream included: what an
    # operator may ask for, and what must come out without the key.
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_REQUEST", ".*")
    exporter = InMemorySpanExporter()
    with FaultyUpstream() as upstream:
        backend = OpenAIBackend(name="upstream", base_url=upstream.url("ok"), api_key=UPSTREAM_KEY)
        async with served(settings, backend, span_exporter=exporter) as server:
            await backend.checked()  # the start-up probe, a trace of its own, is over
            async with httpx.AsyncClient(base_url=server.url) as client:
                response = await client.post(
                    "/api/v1/gpt/conversations",
                    json={"userId": "tracing", "message": "Hello?", "maxTokens": 8},
                    headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                )
            assert response.status_code == 200, response.text
            spans = exporter.get_finished_spans()
        completions = [r for r in upstream.requests if r.path.endswith("/chat/completions")]
    [route] = [
        s
        for s in spans
        if s.kind.name == "SERVER" and s.attributes.get("http.route") == "/api/v1/gpt/conversations"
    ]
    trace_id = route.context.trace_id
    calls = [
        s
        for s in spans
        if s.kind.name == "CLIENT"
        and s.context.trace_id == trace_id
        and str(s.attributes.get("http.url", s.attributes.get("url.full"))).endswith(
            "/chat/completions"
        )
    ]
    assert len(calls) == 1
    # A descendant of the request's server span (through the spans of the middleware between).
    by_id = {s.context.span_id: s for s in spans}
    ancestor = calls[0]
    while ancestor.parent is not None and ancestor.context.span_id != route.context.span_id:
        ancestor = by_id[ancestor.parent.span_id]
    assert ancestor is route
    # The upstream is told the trace, with the client span as the parent of its own.
    assert len(completions) == 1
    version, sent_trace, sent_parent, _flags = completions[0].headers["traceparent"].split("-")
    assert (version, sent_trace) == ("00", f"{trace_id:032x}")
    assert sent_parent == f"{calls[0].context.span_id:016x}"
    assert completions[0].headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    # Recorded, but not the key: in no attribute, event or status of any span.
    assert calls[0].attributes["http.request.header.authorization"] == ("REDACTED",)
    exported = json.dumps([json.loads(s.to_json()) for s in spans])
    assert "UPSTREAM-SECRET" not in exported


def test_secrets_are_redacted_from_every_part_of_a_span() -> None:
    exporter = InMemorySpanExporter()
    secrets = secrets_of(SecretStr(UPSTREAM_KEY), "https://upstream.example/v1")
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(RedactingExporter(exporter, secrets)))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("clean", attributes={"http.method": "POST"}):
        pass
    with tracer.start_as_current_span(f"leaky {UPSTREAM_KEY}") as span:
        span.set_attribute("keys", [UPSTREAM_KEY, "other"])
        span.record_exception(RuntimeError(f"the upstream refused Bearer {UPSTREAM_KEY}"))
        span.set_status(Status(StatusCode.ERROR, f"refused {UPSTREAM_KEY}"))
    provider.shutdown()
    clean, leaky = exporter.get_finished_spans()
    assert clean.name == "clean" and clean.attributes == {"http.method": "POST"}
    assert leaky.name == "leaky ***"
    assert leaky.attributes["keys"] == ("***", "other")
    assert leaky.events[0].attributes["exception.message"] == "the upstream refused Bearer ***"
    assert leaky.status.description == "refused ***"
    assert "UPSTREAM-SECRET" not in leaky.to_json()


def test_credential_headers_and_sensitive_query_values_never_leave() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(RedactingExporter(exporter, frozenset())))
    tracer = provider.get_tracer("test")
    attributes = {
        "http.request.header.authorization": ("Bearer gpta_client-key",),
        "http.request.header.cookie": ("session=1",),
        "http.response.header.set-cookie": ("session=2",),
        "http.request.header.user_agent": ("curl/8",),
        "http.url": "http://h/api/v1/gpt/logs?q=zebra&userId=alice",
        "http.target": "/oauth/oidc/callback?code=c0de&state=s7",
        "url.query": "refresh_token=r3fresh&limit=5",
        "http.response.header.location": ("https://chatgpt.com/cb?code=c0de&state=s7&iss=x",),
        "http.request.header.referer": ("https://h/oauth/authorize?state=s7&client_id=c",),
    }
    with tracer.start_as_current_span("GET", attributes=attributes):
        pass
    provider.shutdown()
    (span,) = exporter.get_finished_spans()
    assert dict(span.attributes) == {
        "http.request.header.authorization": ("REDACTED",),
        "http.request.header.cookie": ("REDACTED",),
        "http.response.header.set-cookie": ("REDACTED",),
        "http.request.header.user_agent": ("curl/8",),
        "http.url": "http://h/api/v1/gpt/logs?q=REDACTED&userId=alice",
        "http.target": "/oauth/oidc/callback?code=REDACTED&state=REDACTED",
        "url.query": "refresh_token=REDACTED&limit=5",
        "http.response.header.location": (
            "https://chatgpt.com/cb?code=REDACTED&state=REDACTED&iss=x",
        ),
        "http.request.header.referer": ("https://h/oauth/authorize?state=REDACTED&client_id=c",),
    }


async def test_a_captured_authorization_header_is_redacted_end_to_end(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST=authorization`, the standard
    way to record request headers, would export every client's API key in clear."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST", ".*")
    # The headers other clients carry their keys in: Azure OpenAI's, Google's, many gateways'.
    others = {
        "api-key": "azure-key-in-clear",
        "x-goog-api-key": "google-key-in-clear",
        "X-Auth-Token": "gateway-token-in-clear",
        "apikey": "kong-key-in-clear",
        "X-CSRFToken": "csrf-token-in-clear",
        "Authentication": "authentication-in-clear",
    }
    exporter = InMemorySpanExporter()
    async with served(settings, FakeBackend(), span_exporter=exporter) as server:
        async with httpx.AsyncClient(base_url=server.url) as client:
            response = await client.get(
                "/api/v1/gpt/logs",
                params={"q": "zebra", "userId": "alice"},
                headers={"Authorization": f"Bearer {ADMIN_KEY}", **others},
            )
            assert response.status_code == 200
        spans = exporter.get_finished_spans()
    exported = json.dumps([json.loads(s.to_json()) for s in spans])
    assert "http.request.header.authorization" in exported  # captured, as asked
    assert "http.request.header.x_goog_api_key" in exported
    assert "http.request.header.user_agent" in exported  # and not every header redacted
    assert ADMIN_KEY not in exported
    assert "zebra" not in exported
    for secret in others.values():
        assert secret not in exported


async def test_calls_to_the_sign_in_provider_are_client_spans_that_carry_the_trace(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sign-in through an OpenID Connect provider: its discovery, token and key calls (made
    with httpx2, which OpenTelemetry's httpx instrumentation does not see) are client spans of
    the browser's requests, and the provider is told the trace."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    exporter = InMemorySpanExporter()
    callback = "https://chat.openai.com/aip/g-tracing/oauth/callback"
    with serve_provider(LocalProvider("gptactions-tracing", "provider-secret", "")) as provider:
        signed = settings.model_copy(
            update={
                "oidc_issuer": provider.url,
                "oidc_client_id": provider.client_id,
                "oidc_client_secret": SecretStr("provider-secret"),
            }
        )
        async with served(signed, FakeBackend(), span_exporter=exporter) as server:
            provider.redirect_uri = f"{server.url}/oauth/oidc/callback"
            gpt = await server.runtime.oauth.create_client("GPT", (callback,), scopes=("chat",))
            params = {
                "response_type": "code",
                "client_id": gpt.info.id,
                "redirect_uri": callback,
                "scope": "chat",
                "state": "gpt-state",
            }
            # The browser: to the provider and back to the callback, which shows the consent.
            async with httpx.AsyncClient(base_url=server.url, follow_redirects=True) as browser:
                page = await browser.get("/oauth/oidc/start", params=params)
            assert page.status_code == 200, page.text
            assert provider.refusals == []
            spans = exporter.get_finished_spans()
    calls = {
        (s.attributes["http.request.method"], str(s.attributes["url.full"])): s
        for s in spans
        if s.kind.name == "CLIENT" and str(s.attributes.get("url.full")).startswith(provider.url)
    }
    assert set(calls) == {
        ("GET", f"{provider.url}/.well-known/openid-configuration"),
        ("POST", f"{provider.url}/token"),
        ("GET", f"{provider.url}/jwks"),
    }
    assert all(s.attributes["http.response.status_code"] == 200 for s in calls.values())
    by_id = {s.context.span_id: s for s in spans}
    sent = {path: header for path, header in provider.traceparents if path != "/authorize"}
    assert set(sent) == {"/.well-known/openid-configuration", "/token", "/jwks"}
    for (_, url), call in calls.items():
        # A descendant of the server span of the browser's request that made it...
        ancestor = call
        while ancestor.parent is not None and ancestor.kind.name != "SERVER":
            ancestor = by_id[ancestor.parent.span_id]
        assert ancestor.kind.name == "SERVER"
        assert str(ancestor.attributes["http.route"]).startswith("/oauth/oidc/")
        # ...whose trace the provider was told, with the client span as the parent.
        header = sent[url.removeprefix(provider.url)]
        assert header is not None
        version, trace_id, parent_id, flags = header.split("-")
        assert (version, trace_id) == ("00", f"{call.context.trace_id:032x}")
        assert parent_id == f"{call.context.span_id:016x}"
        assert int(flags, 16) & 1  # sampled
    exported = json.dumps([json.loads(s.to_json()) for s in spans])
    assert "provider-secret" not in exported
