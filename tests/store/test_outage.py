"""The database goes away, hangs, and comes back, behind a TCP proxy in front of PostgreSQL:
requests fail fast with 503 and Retry-After, the log stays short, /healthz names the database
within seconds, and the server recovers by itself; a server started while its database is down
starts, catches up, and says what it did."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gptactions.services.keys import hash_fragment, hash_key
from gptactions.store import schema
from tests.conftest import ADMIN_KEY, PG_HOST, PG_PORT
from tests.serving import serve
from tests.store.proxy import TcpProxy
from tests.store.revisions import migrate_to
from tests.upstream.faulty import FaultyUpstream

pytestmark = [pytest.mark.postgres, pytest.mark.upstream]

LOGS = "/api/v1/gpt/logs"
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
INFO = {"GPTACTIONS_LOG_LEVEL": "info"}


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    """A TCP proxy in front of the machine's PostgreSQL."""
    tcp = TcpProxy(PG_HOST, PG_PORT).start()
    try:
        yield tcp
    finally:
        tcp.stop()


@pytest.fixture
def environment(postgres_url: str, proxy: TcpProxy) -> Iterator[dict[str, str]]:
    """The server's settings: its database through the proxy, an upstream instead of a model."""
    upstream = FaultyUpstream().start()
    try:
        yield {
            "GPTACTIONS_DATABASE_URL": postgres_url.replace(f":{PG_PORT}/", f":{proxy.port}/"),
            "GPTACTIONS_BACKENDS": json.dumps([{"name": "up", "url": upstream.url("ok")}]),
            "GPTACTIONS_FALLBACK": "none",
        }
    finally:
        upstream.stop()


def _assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert int(response.headers["retry-after"]) >= 1
    assert response.json()["error"]["code"] == "database_unavailable"


def _until_ok(client: httpx.Client, path: str, timeout: float = 60.0) -> httpx.Response:
    """Poll until `path` answers 200 (the server recovers by itself)."""
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(path)
        if response.status_code == 200 or time.monotonic() > deadline:
            return response
        time.sleep(0.2)


def test_an_outage_is_503_quietly_and_the_server_recovers(
    tmp_path: Path, proxy: TcpProxy, environment: dict[str, str]
) -> None:
    with (
        serve(tmp_path, key=ADMIN_KEY, env=environment) as server,
        httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as client,
    ):
        assert client.get(LOGS).status_code == 200
        proxy.close()
        for _ in range(20):
            _assert_unavailable(client.get(LOGS))
        health = client.get("/healthz")
        assert health.status_code == 503
        assert [d["pointer"] for d in health.json()["error"]["details"]] == ["/database"]

        proxy.blackhole = True  # a listener that never answers: bounded by the connect timeout
        proxy.open()
        _assert_unavailable(client.get(LOGS))
        proxy.close()

        proxy.blackhole = False
        proxy.open()
        assert _until_ok(client, LOGS).status_code == 200
        assert client.get("/healthz").json() == {"status": "ok", "database": "ok"}
        log = server.log.read_text(errors="replace")
    assert "Traceback" not in log
    outage_lines = [line for line in log.splitlines() if "unreachable" in line]
    assert 1 <= len(outage_lines) <= 5, log
    assert "is back" in log


def test_a_server_started_while_its_database_is_down_catches_up(
    tmp_path: Path, proxy: TcpProxy, environment: dict[str, str]
) -> None:
    proxy.close()
    with (
        serve(tmp_path, key=ADMIN_KEY, env=environment, ready=False) as server,
        httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as client,
    ):
        _assert_unavailable(client.get(LOGS))
        assert client.get("/healthz").status_code == 503
        proxy.open()
        # The migrations are applied and the key imported once the database is back.
        assert _until_ok(client, LOGS).json() == []
        log = server.log.read_text(errors="replace")
    assert "Traceback" not in log


def test_a_server_that_waited_for_its_database_says_what_it_did_then(
    tmp_path: Path, postgres_url: str, proxy: TcpProxy, environment: dict[str, str]
) -> None:
    """Its log said only "is back after 10 s", as if nothing else had happened: it also migrated
    the database and imported GPTACTIONS_API_KEY."""
    asyncio.run(migrate_to(postgres_url, "0005"))  # as an older version left it
    proxy.close()
    with (
        serve(tmp_path, key=ADMIN_KEY, env=environment | INFO, ready=False) as server,
        httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as client,
    ):
        _assert_unavailable(client.get(LOGS))
        proxy.open()
        assert _until_ok(client, LOGS).status_code == 200
        log = server.log.read_text(errors="replace")
    after = log.split("is back after", 1)[1]
    assert f"from revision 0005 to {schema.head()}" in after, log
    assert f"imported GPTACTIONS_API_KEY as admin key {hash_fragment(hash_key(ADMIN_KEY))}" in (
        after
    )
    assert "Traceback" not in log


def test_a_database_that_hangs_is_a_503_within_seconds(
    tmp_path: Path, proxy: TcpProxy, environment: dict[str, str]
) -> None:
    """PostgreSQL stopped (SIGSTOP), its connections open but silent: /healthz took 32 s, then
    5 s, and a request as long; now /healthz answers within 2 s, a request within 10."""
    with (
        serve(tmp_path, key=ADMIN_KEY, env=environment) as server,
        httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as client,
    ):
        for first in (LOGS, "/healthz"):  # a pooled connection's check, the probe's
            assert client.get(LOGS).status_code == 200
            proxy.hang()
            try:
                if first == LOGS:
                    started = time.monotonic()
                    _assert_unavailable(client.get(LOGS))
                    assert time.monotonic() - started < 10
                for _ in range(3):
                    started = time.monotonic()
                    health = client.get("/healthz")
                    assert time.monotonic() - started < 3.5
                    assert health.status_code == 503
                    assert [d["pointer"] for d in health.json()["error"]["details"]] == [
                        "/database"
                    ]
            finally:
                proxy.resume()
            assert _until_ok(client, LOGS).status_code == 200
        log = server.log.read_text(errors="replace")
    assert "Traceback" not in log
