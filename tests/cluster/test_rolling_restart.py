"""A rolling restart through nginx (docs/nginx.conf.template), as docs/deploy.md describes it: each
replica in turn gets SIGTERM and starts again, the next one as soon as the previous one answers
`/healthz` with 200. Under load, no request gets a 5xx and no stream is cut."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from tests.cluster.conftest import Cluster, start_cluster
from tests.conftest import ADMIN_KEY
from tests.serving import Server, serve
from tests.upstream.faulty import REPLY, FaultyUpstream

pytestmark = [pytest.mark.cluster, pytest.mark.postgres, pytest.mark.upstream]

API = "/api/v1/gpt"


@pytest.fixture
def cluster(
    nginx: str, services: None, upstream: FaultyUpstream, tmp_path: Path
) -> Iterator[Cluster]:
    """A cluster of its own, to restart: the upstream only, no embedded model."""
    with start_cluster(nginx, tmp_path, upstream, default_backend="mock", fallback="none") as c:
        yield c


def _restart(cluster: Cluster, replica: Server, directory: Path, stack: ExitStack) -> Server:
    """`systemctl restart` of a replica: SIGTERM, wait for it to exit, start it again on its port;
    return once it answers `/healthz` with 200."""
    replica.process.send_signal(signal.SIGTERM)
    assert replica.process.wait(timeout=120) == 0
    directory.mkdir()
    port = int(replica.url.rsplit(":", 1)[1])
    started = serve(directory, key=ADMIN_KEY, env=cluster.environment, timeout=180, port=port)
    return stack.enter_context(started)


async def test_a_rolling_restart_under_load_answers_every_request(
    cluster: Cluster, tmp_path: Path
) -> None:
    key = (await cluster.key("rolling")).secret
    statuses: Counter[int | str] = Counter()
    streams: list[list[str]] = []
    restarted = asyncio.Event()

    async def load(client: httpx.AsyncClient) -> None:
        n = 0
        while not restarted.is_set():
            n += 1
            body = {"userId": "rolling", "message": f"load {n}"}
            try:
                statuses[(await client.post(f"{API}/conversations", json=body)).status_code] += 1
            except httpx.TransportError as error:
                statuses[repr(error)] += 1

    async def stream(client: httpx.AsyncClient) -> None:
        body = {"userId": "rolling", "message": "Tell me", "model": "drip"}
        headers = {"Accept": "text/event-stream"}
        while not restarted.is_set():
            names: list[str] = []
            try:
                async with client.stream(
                    "POST", f"{API}/conversations", json=body, headers=headers
                ) as response:
                    statuses[response.status_code] += 1
                    async for line in response.aiter_lines():
                        if line.startswith("event: "):
                            names.append(line.removeprefix("event: "))
            except httpx.TransportError as error:
                names.append(repr(error))
            streams.append(names)

    with ExitStack() as stack:
        async with cluster.client(key, limits=httpx.Limits(max_connections=16)) as balanced:
            clients = [load(balanced) for _ in range(8)] + [stream(balanced) for _ in range(2)]
            running = [asyncio.ensure_future(client) for client in clients]
            await asyncio.sleep(1)
            served = []
            for name, replica in zip("ab", cluster.replicas, strict=True):
                directory = tmp_path / f"{name}-restarted"
                await asyncio.to_thread(_restart, cluster, replica, directory, stack)
                served.append(sum(statuses.values()))
            await asyncio.sleep(1)
            restarted.set()
            await asyncio.gather(*running)

    log = cluster.nginx.log.read_text(errors="replace").splitlines()
    # A refused connection is retried on the other replica; any other error is an answer lost.
    errors = [line for line in log if "[error]" in line and "(111: Connection refused)" not in line]
    assert set(statuses) == {200}, (statuses, errors)
    assert served[0] > 50 and served[1] - served[0] > 50, served  # load through both restarts
    words = len(REPLY.split())
    assert len(streams) >= 4 and all(names == ["token"] * words + ["done"] for names in streams)
