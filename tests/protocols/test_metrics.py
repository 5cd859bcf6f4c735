"""GET /metrics: Prometheus' text format, counters that move with requests, the token."""

from __future__ import annotations

import fcntl
import json
import os
import re
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from gptactions.config import Settings
from gptactions.llm.base import BackendTimeout
from gptactions.llm.fake import FakeBackend
from gptactions.metrics import MULTIPROC_ENV, OWNER_LOCK, Metrics, shared_between_workers
from tests.conftest import ADMIN_KEY, ApiClient, running_app
from tests.serving import Server, serve
from tests.upstream.faulty import FaultyUpstream

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(api: ApiClient, token: str | None = None) -> Samples:
    """Every sample of the page, by name and labels."""
    response = await api.get("/metrics", key=token)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def requests_of(samples: Samples, route: str, status: str) -> float:
    key = (
        "gptactions_http_requests_total",
        (("method", "POST"), ("route", route), ("status", status)),
    )
    return samples.get(key, 0.0)


async def test_counters_move_with_requests(api: ApiClient) -> None:
    before = await scrape(api)
    for _ in range(3):
        response = await api.post("/api/v1/gpt/conversations", {"userId": "u", "message": "hi"})
        assert response.status_code == 200
    assert (await api.post("/api/v1/gpt/conversations", {"userId": "u"})).status_code == 400
    after = await scrape(api)
    route = "/api/v1/gpt/conversations"
    assert requests_of(after, route, "200") - requests_of(before, route, "200") == 3
    assert requests_of(after, route, "400") - requests_of(before, route, "400") == 1
    count = (
        "gptactions_http_request_duration_seconds_count",
        (("method", "POST"), ("route", route), ("status", "200")),
    )
    assert after[count] == 3
    # Unknown paths share one label, so they cannot grow the page.
    await api.get("/no/such/path/1")
    await api.get("/no/such/path/2")
    samples = await scrape(api)
    unmatched = [
        labels
        for name, labels in samples
        if name == "gptactions_http_requests_total" and ("route", "unmatched") in labels
    ]
    assert unmatched == [(("method", "GET"), ("route", "unmatched"), ("status", "404"))]
    # Nor can methods outside HTTP's own: anyone may send them.
    for method in ("PROPFIND", "M-SEARCH", "BREW"):
        assert (await api.http.request(method, "/healthz")).status_code == 405
    methods = {
        dict(labels)["method"]
        for name, labels in await scrape(api)
        if name == "gptactions_http_requests_total" and ("route", "/healthz") in labels
    }
    assert methods == {"OTHER"}


async def test_a_route_s_other_methods_and_slash_twin_are_labelled_with_it(
    api: ApiClient,
) -> None:
    """A 405 and a trailing-slash redirect are of a known route: `unmatched` is for unknown
    paths only (GET /mcp, DELETE /mcp and POST /mcp/ were `unmatched`)."""
    headers = {"Authorization": f"Bearer {ADMIN_KEY}", "Accept": "application/json"}
    answered = [
        ("GET", "/mcp", 405),
        ("DELETE", "/mcp", 405),
        ("POST", "/mcp/", 307),
        ("GET", "/api/v1/gpt/status/", 307),
        ("GET", "/api/v1/gpt/conversations", 405),
    ]
    for method, path, status in answered:
        assert (await api.http.request(method, path, headers=headers)).status_code == status
    assert (await api.get("/no/such/path/")).status_code == 404
    labels = {
        (dict(labels)["method"], dict(labels)["route"], dict(labels)["status"])
        for name, labels in await scrape(api)
        if name == "gptactions_http_requests_total"
    }
    expected = {(m, p.rstrip("/"), str(s)) for m, p, s in answered}
    assert expected <= labels
    assert {label for label in labels if label[1] == "unmatched"} == {("GET", "unmatched", "404")}


async def test_unauthenticated_mcp_requests_are_counted(api: ApiClient) -> None:
    """As on /api/v1/gpt and /v1 (POST /mcp with a wrong key left the counter flat)."""
    name = "gptactions_unauthenticated_rejections_total"
    before = value(await scrape(api), name, status="401")
    ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    for key in ("nope", None):
        assert (await api.post("/mcp", ping, key=key)).status_code == 401
    assert (await api.post("/api/v1/gpt/conversations", {}, key="nope")).status_code == 401
    assert (await api.get("/v1/models", key="nope")).status_code == 401
    assert value(await scrape(api), name, status="401") - before == 4
    page = (await api.get("/metrics")).text
    [family] = [
        f for f in text_string_to_metric_families(page) if f.name == name.removesuffix("_total")
    ]
    assert all(prefix in family.documentation for prefix in ("/api/v1/gpt", "/v1", "/mcp"))


async def test_the_page_is_open_without_a_token(api: ApiClient) -> None:
    response = await api.get("/metrics", key=None)
    assert response.status_code == 200


async def test_the_token_protects_the_page(settings: Settings) -> None:
    protected = settings.model_copy(update={"metrics_token": SecretStr("scrape-me-0123456789")})
    async with running_app(protected, FakeBackend()) as api:
        for token in (None, "wrong", await api.key()):
            response = await api.get("/metrics", key=token)
            assert response.status_code == 401
            assert response.json()["error"]["code"] == "unauthorized"
            assert response.headers["www-authenticate"].startswith("Bearer")
        assert (await api.get("/metrics", key="scrape-me-0123456789")).status_code == 200
        assert (await api.get("/metrics", key=ADMIN_KEY)).status_code == 200


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value (0 when it is not on the page yet)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_tokens_interactions_commits_and_first_tokens_are_counted(
    settings: Settings,
) -> None:
    backend = FakeBackend(["one two three", "four five"])
    async with running_app(settings, backend) as api:
        before = await scrape(api)
        body = {"userId": "u", "message": "hello there"}
        assert (await api.post("/api/v1/gpt/conversations", body)).status_code == 200
        streamed = await api.post(
            "/api/v1/gpt/conversations", body, headers={"Accept": "text/event-stream"}
        )
        assert streamed.status_code == 200
        after = await scrape(api)
    name = backend.name
    output = value(after, "gptactions_tokens_total", backend=name, direction="output")
    assert output - value(before, "gptactions_tokens_total", backend=name, direction="output") == 5
    assert value(after, "gptactions_tokens_total", backend=name, direction="input") > 0
    turns = value(after, "gptactions_interactions_total", kind="conversation", status="ok")
    assert turns == 2
    commits = value(after, "gptactions_db_commit_duration_seconds_count")
    assert commits - value(before, "gptactions_db_commit_duration_seconds_count") >= 2
    # Both generations stream from the backend (a non-streamed reply too, under the request
    # deadline), so both have a first token.
    assert value(after, "gptactions_time_to_first_token_seconds_count", backend=name) == 2


async def test_backend_errors_and_rate_limit_rejections_are_counted(settings: Settings) -> None:
    limited = settings.model_copy(update={"rate_limit": "3/minute"})
    backend = FakeBackend([BackendTimeout("too slow")])
    async with running_app(limited, backend) as api:
        key = await api.key()
        body = {"userId": "u", "message": "hi"}
        assert (await api.post("/api/v1/gpt/conversations", body, key=key)).status_code == 504
        for _ in range(3):
            await api.get("/api/v1/gpt/status", key=key)
        assert (await api.get("/api/v1/gpt/status", key=key)).status_code == 429
        samples = await scrape(api)
    assert (
        value(
            samples, "gptactions_backend_errors_total", backend=backend.name, kind="backend_timeout"
        )
        == 1
    )
    assert value(samples, "gptactions_rate_limit_rejections_total") >= 1
    assert value(samples, "gptactions_interactions_total", kind="conversation", status="error") == 1


async def test_backend_errors_are_at_zero_before_the_first(api: ApiClient) -> None:
    """Every backend's failure counters, by every kind, from the start: a panel or `rate()`
    over a series that appears only at the first failure has nothing to show before it."""
    samples = await scrape(api)
    backends = {labels for name, labels in samples if name == "gptactions_backend_errors_total"}
    kinds = {dict(labels)["kind"] for labels in backends}
    expected = {"backend_error", "backend_timeout", "backend_unavailable", "backend_unreachable"}
    assert expected | {"deadline_reached"} == kinds  # the README's kinds
    # A prompt too long is the request's fault: never counted, so no series that never moves.
    assert all(samples[("gptactions_backend_errors_total", labels)] == 0 for labels in backends)


async def test_the_page_has_no_created_series_and_speaks_openmetrics_when_asked(
    api: ApiClient,
) -> None:
    """Prometheus' text format by default, without a `_created` gauge beside each counter;
    OpenMetrics when the scraper's Accept prefers it, as Prometheus' own does."""
    text = await api.get("/metrics")
    assert text.headers["content-type"].startswith("text/plain; version=")
    assert "_created" not in text.text
    accept = (
        "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
        "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
    )
    open_metrics = await api.get("/metrics", headers={"Accept": accept})
    assert open_metrics.status_code == 200
    assert open_metrics.headers["content-type"].startswith("application/openmetrics-text")
    assert open_metrics.text.endswith("# EOF\n")
    assert "# TYPE gptactions_http_requests counter" in open_metrics.text


@pytest.mark.model
def test_several_workers_add_up_on_one_page(isolated: Path) -> None:
    shared = isolated / "metrics"
    environment = {"GPTACTIONS_WORKERS": "2", "PROMETHEUS_MULTIPROC_DIR": str(shared)}
    with serve(isolated, key=ADMIN_KEY, env=environment, timeout=300) as server:
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        with httpx.Client(base_url=server.url, headers=headers) as client:
            for _ in range(12):
                # A new connection each time, so both workers get a share.
                assert (
                    client.get("/api/v1/gpt/status", headers={"Connection": "close"}).status_code
                    == 200
                )
            pages = [client.get("/metrics", headers={"Connection": "close"}).text for _ in range(4)]
        # The workers wrote their values to the server's own directory in the shared one (the
        # second to start may not have been up for these requests on a busy machine, so at
        # least one of them).
        assert list(shared.glob("*/*.db"))
    for page in pages:
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(page)
            for s in family.samples
        }
        assert (
            value(
                samples,
                "gptactions_http_requests_total",
                method="GET",
                route="/api/v1/gpt/status",
                status="200",
            )
            == 12
        )
    assert list(shared.iterdir()) == []  # removed when the server stopped


def status_requests(server: Server) -> float:
    """The server's count of answered `GET /api/v1/gpt/status`, from its /metrics."""
    headers = {"Authorization": f"Bearer {ADMIN_KEY}", "Connection": "close"}
    page = httpx.get(f"{server.url}/metrics", headers=headers).text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(page)
        for s in family.samples
    }
    labels = {"method": "GET", "route": "/api/v1/gpt/status", "status": "200"}
    return value(samples, "gptactions_http_requests_total", **labels)


@pytest.mark.upstream
def test_servers_sharing_the_directory_keep_their_own_counts(isolated: Path) -> None:
    """Two `--workers 2` servers given one PROMETHEUS_MULTIPROC_DIR: the second reported the
    first's requests, and its start deleted the first's values."""
    shared = isolated / "metrics"
    upstream = FaultyUpstream().start()
    environment = {
        "GPTACTIONS_WORKERS": "2",
        "PROMETHEUS_MULTIPROC_DIR": str(shared),
        "GPTACTIONS_BACKENDS": json.dumps([{"name": "up", "url": upstream.url(), "model": "m"}]),
        "GPTACTIONS_FALLBACK": "none",
    }
    headers = {"Authorization": f"Bearer {ADMIN_KEY}", "Connection": "close"}
    (isolated / "first").mkdir()
    (isolated / "second").mkdir()
    try:
        with serve(isolated / "first", key=ADMIN_KEY, env=environment, timeout=300) as first:
            for _ in range(5):
                assert httpx.get(f"{first.url}/api/v1/gpt/status", headers=headers).is_success
            with serve(isolated / "second", key=ADMIN_KEY, env=environment, timeout=300) as second:
                for _ in range(2):
                    assert httpx.get(f"{second.url}/api/v1/gpt/status", headers=headers).is_success
                assert [status_requests(first) for _ in range(4)] == [5] * 4
                assert [status_requests(second) for _ in range(4)] == [2] * 4
                assert len(list(shared.iterdir())) == 2  # a directory each
            assert status_requests(first) == 5
    finally:
        upstream.stop()
    assert list(shared.iterdir()) == []


def test_a_server_removes_the_directories_of_servers_no_longer_running(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server killed before it could remove its directory leaves it; the next server to
    start removes it, and never the directory of one that runs (it holds its lock)."""
    shared = isolated / "metrics"
    killed = shared / "host-1-killed"
    killed.mkdir(parents=True)
    (killed / OWNER_LOCK).touch()
    (killed / "counter_1.db").touch()
    running = shared / "host-2-running"
    running.mkdir()
    (running / OWNER_LOCK).touch()
    (running / "counter_2.db").touch()
    foreign = shared / "not-a-server"  # no lock file: not ours to remove
    foreign.mkdir()
    monkeypatch.setenv(MULTIPROC_ENV, str(shared))
    with (running / OWNER_LOCK).open("r+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with shared_between_workers(1) as own:
            assert own is not None and own.parent == shared
            assert os.environ[MULTIPROC_ENV] == str(own)
            assert sorted(p.name for p in shared.iterdir()) == sorted(
                [own.name, running.name, foreign.name]
            )
        assert os.environ[MULTIPROC_ENV] == str(shared)
    assert sorted(p.name for p in shared.iterdir()) == [running.name, foreign.name]


def test_the_dashboard_charts_every_metric_and_no_other() -> None:
    path = Path(__file__).parents[2] / "docs" / "grafana-dashboard.json"
    dashboard = json.loads(path.read_text(encoding="utf-8"))
    expressions = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {
        re.sub(r"_(bucket|count|sum|total)$", "", name)
        for expression in expressions
        for name in re.findall(r"gptactions_\w+", expression)
    }
    assert used == {family.name for family in Metrics().registry.collect()}
