"""Two replicas on one PostgreSQL and Redis behind nginx: conversations, rate limits and
revocations (API keys with `gptactions keys revoke`, OAuth access tokens through one replica)
span the replicas, streams pass through unbuffered, and a replica killed with SIGKILL under load
loses no acknowledged interaction while the other keeps serving."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from gptactions.services.oauth import OAuthService
from gptactions.services.users import UserService
from gptactions.store.db import Database
from tests.api.test_oauth import PASSWORD, code_for, exchange, make_client
from tests.cluster.conftest import DRIP_SECONDS, Cluster, start_cluster
from tests.upstream.faulty import REPLY, FaultyUpstream

pytestmark = [pytest.mark.cluster, pytest.mark.postgres, pytest.mark.upstream]

API = "/api/v1/gpt"
# Per key and per day: the tests below stay far under it, except the one that reaches it.
RATE = 20
# How long a revoked key may still work on any replica.
REVOCATION_BOUND = 1.0
HOUR = timedelta(hours=1)


@pytest.fixture(scope="module")
def cluster(
    nginx: str, services: None, upstream: FaultyUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """The module's cluster: the embedded model by default, a rate limit shared through Redis."""
    with start_cluster(
        nginx,
        tmp_path_factory.mktemp("cluster"),
        upstream,
        default_backend="local",
        model_parallel="2",  # the KV cache of 8 sequences is ~360 MB a replica
        rate_limit=f"{RATE}/day",
    ) as running:
        yield running


@pytest.mark.model
async def test_a_conversation_started_on_one_replica_continues_on_the_other(
    cluster: Cluster,
) -> None:
    key = (await cluster.key("conversation")).secret
    (a, b), user = cluster.replicas, f"user-{uuid.uuid4().hex[:8]}"
    async with (
        cluster.client(key, a.url) as on_a,
        cluster.client(key, b.url) as on_b,
        cluster.client(key) as balanced,
    ):
        # The embedded model on replica a...
        first = await on_a.post(
            f"{API}/conversations", json={"userId": user, "message": "Say hello.", "maxTokens": 8}
        )
        assert first.status_code == 200, first.text
        conversation, reply = first.json()["conversationId"], first.json()["reply"]
        # ...then replica b, through the upstream, which is shown the whole history.
        marker = uuid.uuid4().hex
        body = {"userId": user, "conversationId": conversation, "message": f"Again {marker}"}
        second = await on_b.post(f"{API}/respond", json=body | {"model": "mock"})
        assert second.status_code == 200, second.text
        assert second.json()["conversationId"] == conversation
        # ...and once more through nginx, whichever replica it picks.
        body["message"] = "Thank you."
        third = await balanced.post(f"{API}/respond", json=body | {"maxTokens": 8})
        assert third.status_code == 200, third.text
        rows = (await balanced.get(f"{API}/logs", params={"conversationId": conversation})).json()

    shown = [
        request.body["messages"]
        for request in cluster.upstream.requests
        if marker in json.dumps(request.body.get("messages"))
    ]
    assert len(shown) == 1
    turns = [(m["role"], m["content"]) for m in shown[0] if m["role"] != "system"]
    assert turns == [("user", "Say hello."), ("assistant", reply), ("user", f"Again {marker}")]
    assert [row["message"] for row in reversed(rows)] == [
        "Say hello.",
        f"Again {marker}",
        "Thank you.",
    ]
    assert [row["reply"] for row in reversed(rows)][:2] == [reply, REPLY]


async def test_the_rate_limit_is_shared_by_the_replicas(cluster: Cluster) -> None:
    key = await cluster.key("rate")
    a, b = cluster.replicas
    async with cluster.client(key.secret, a.url) as on_a, cluster.client(key.secret, b.url) as on_b:
        allowed = [
            (await client.get(f"{API}/status")).status_code for client in [on_a, on_b] * (RATE // 2)
        ]
        refused = [await on_a.get(f"{API}/status"), await on_b.get(f"{API}/status")]
    async with cluster.client(key.secret) as balanced:
        refused.append(await balanced.get(f"{API}/status"))
    assert allowed == [200] * RATE
    assert [response.status_code for response in refused] == [429] * 3
    for response in refused:
        assert response.json()["error"]["code"] == "rate_limited"
        assert int(response.headers["retry-after"]) >= 1


async def test_a_revoked_key_is_refused_by_every_replica_within_a_second(
    cluster: Cluster,
) -> None:
    created = await cluster.key("revoked")
    clients = [cluster.client(created.secret, server.url) for server in cluster.replicas]
    try:
        # Each replica has verified the key, and keeps it in its cache.
        assert [(await c.get(f"{API}/logs")).status_code for c in clients] == [200, 200]
        revocation = await asyncio.to_thread(cluster.cli, "keys", "revoke", created.info.id)
        assert "revoked" in revocation
        revoked_at = time.monotonic()  # the command has committed and told Redis
        answers = await asyncio.gather(*(_until_refused(c, revoked_at) for c in clients))
    finally:
        for client in clients:
            await client.aclose()
    for late in answers:
        assert late == [], f"accepted more than {REVOCATION_BOUND} s after the revocation: {late}"


async def _until_refused(client: httpx.AsyncClient, revoked_at: float) -> list[tuple[float, int]]:
    """Poll until the key is refused; the answers other than 401 to requests sent later than
    REVOCATION_BOUND after the revocation (sent when, and the status)."""
    late: list[tuple[float, int]] = []
    while True:
        sent = time.monotonic() - revoked_at
        status = (await client.get(f"{API}/logs")).status_code
        if status == 401:
            return late
        if sent > REVOCATION_BOUND:
            late.append((round(sent, 3), status))
            return late
        await asyncio.sleep(0.02)


async def test_an_access_token_revoked_through_one_replica_is_refused_by_the_other(
    cluster: Cluster,
) -> None:
    (a, b), username = cluster.replicas, f"user-{uuid.uuid4().hex[:8]}"
    database = Database(cluster.database_url)
    oauth = OAuthService(database, access_lifetime=HOUR, refresh_lifetime=HOUR)
    try:
        await UserService(database).create(username, PASSWORD)
        async with httpx.AsyncClient(base_url=a.url, timeout=60) as on_a:
            # The whole grant through replica a, as ChatGPT would go through it.
            through_a = SimpleNamespace(http=on_a, runtime=SimpleNamespace(oauth=oauth))
            client = await make_client(through_a)
            code = await code_for(through_a, client, username)
            granted = await exchange(through_a, client, code)
            access = granted.json()["access_token"]
            bearer = {"Authorization": f"Bearer {access}"}
            async with cluster.client(access, b.url) as on_b:
                assert (await on_a.get(f"{API}/logs", headers=bearer)).status_code == 200
                assert (await on_b.get(f"{API}/logs")).status_code == 200
                form = {"token": access, "client_id": client.id, "client_secret": client.secret}
                assert (await on_a.post("/oauth/revoke", data=form)).status_code == 200
                late = await _until_refused(on_b, time.monotonic())
    finally:
        await database.close()
    assert late == [], f"b accepted the token more than {REVOCATION_BOUND} s after: {late}"


async def test_streams_pass_through_nginx_as_they_are_generated(cluster: Cluster) -> None:
    key = (await cluster.key("stream")).secret
    arrivals: list[tuple[str, float]] = []
    body = {"userId": "stream", "message": "Tell me", "model": "drip"}
    async with (
        cluster.client(key) as balanced,
        balanced.stream(
            "POST", f"{API}/conversations", json=body, headers={"Accept": "text/event-stream"}
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                arrivals.append((line.removeprefix("event: "), time.monotonic()))
    names = [name for name, _ in arrivals]
    words = len(REPLY.split())
    assert names == ["token"] * words + ["done"]
    # The upstream waits DRIP_SECONDS before each word. Buffered anywhere on the way, the
    # tokens would arrive together at the end; passed through, they arrive that far apart.
    spread = arrivals[words - 1][1] - arrivals[0][1]
    assert spread >= (words - 1) * DRIP_SECONDS * 0.5


async def test_plain_http_redirects_to_https(cluster: Cluster) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{cluster.nginx.http_url}{API}/status?x=1")
    assert response.status_code == 301
    assert response.headers["location"] == f"https://127.0.0.1{API}/status?x=1"
    # The replicas' metrics are for Prometheus, scraping each where it listens.
    async with httpx.AsyncClient(verify=cluster.nginx.tls()) as client:
        assert (await client.get(f"{cluster.nginx.url}/metrics")).status_code == 404
        assert (await client.get(f"{cluster.nginx.url}/healthz")).status_code == 200


@pytest.fixture
def lone_cluster(
    nginx: str, services: None, upstream: FaultyUpstream, tmp_path: Path
) -> Iterator[Cluster]:
    """A cluster of its own, to kill a replica of: the upstream only, no embedded model."""
    with start_cluster(nginx, tmp_path, upstream, default_backend="mock", fallback="none") as c:
        yield c


async def test_killing_a_replica_under_load_loses_no_acknowledged_interaction(
    lone_cluster: Cluster,
) -> None:
    cluster, victim = lone_cluster, lone_cluster.replicas[0]
    key, user = (await cluster.key("load")).secret, f"load-{uuid.uuid4().hex[:8]}"
    acknowledged: list[str] = []
    statuses: Counter[int] = Counter()
    after_kill = 0

    async def load(client: httpx.AsyncClient) -> None:
        nonlocal after_kill
        for n in range(300):  # bounded: a stuck cluster fails the test, it does not hang it
            if after_kill >= 60:
                return
            body = {"userId": user, "message": f"load {n}"}
            response = await client.post(f"{API}/conversations", json=body)
            statuses[response.status_code] += 1
            if response.status_code != 200:
                continue
            acknowledged.append(response.json()["conversationId"])
            if victim.process.poll() is not None:
                after_kill += 1
            elif len(acknowledged) >= 30:
                victim.process.kill()  # SIGKILL, with the other clients' requests in flight

    limits = httpx.Limits(max_connections=16)
    async with cluster.client(key, limits=limits) as balanced:
        await asyncio.gather(*(load(balanced) for _ in range(16)))
        # The survivor serves everything now, whichever replica nginx tries first.
        after = [
            (
                await balanced.post(
                    f"{API}/conversations", json={"userId": user, "message": "after"}
                )
            ).status_code
            for _ in range(10)
        ]
        stored = await _every_log_row(balanced, user)

    assert victim.process.poll() is not None and after_kill >= 60, statuses
    # Only requests the dead replica held can fail, as nginx's 502; none is sent twice.
    assert set(statuses) <= {200, 502}, statuses
    assert after == [200] * 10
    ids = [row["conversationId"] for row in stored]
    missing = set(acknowledged) - set(ids)
    assert not missing, f"{len(missing)} acknowledged interactions were lost"
    # Beyond those acknowledged, only a request answered 502 may have been stored (the replica
    # committed, then died before answering): none was generated twice.
    assert len(ids) == len(set(ids))
    assert len(acknowledged) + 10 <= len(ids) <= len(acknowledged) + 10 + statuses[502]


async def _every_log_row(client: httpx.AsyncClient, user: str) -> list[dict[str, Any]]:
    """Every row of `user` in GET /logs, following the `Link` cursor."""
    rows: list[dict[str, Any]] = []
    url: str | None = f"{API}/logs?userId={user}&limit=100"
    while url:
        page = await client.get(url)
        assert page.status_code == 200, page.text
        rows.extend(page.json())
        url = page.links.get("next", {}).get("url")
    return rows
