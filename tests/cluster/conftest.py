"""A real cluster: two `gptactions serve` replicas on one PostgreSQL database and the machine's
Redis, behind Debian's nginx configured with docs/nginx.conf.template."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from gptactions.services.keys import KeyService, NewKey
from gptactions.store.db import Database
from tests.cluster.nginx import REQUIRED_VARIABLE, Nginx, nginx_binary, run_nginx
from tests.conftest import (
    ADMIN_KEY,
    PG_HOST,
    PG_PORT,
    REDIS_URL,
    fresh_postgres_database,
    postgres_reachable,
    redis_reachable,
)
from tests.serving import Server, gptactions_cli, serve
from tests.upstream.faulty import FaultyUpstream

# Seconds a word of the `drip` backend takes: a stream long enough to see it arrive in pieces.
DRIP_SECONDS = 0.3


@dataclass(frozen=True)
class Cluster:
    """Two replicas behind nginx, their database, the upstream their `mock` backend calls, and
    their environment (to start a replica again)."""

    nginx: Nginx
    replicas: tuple[Server, Server]
    database_url: str
    upstream: FaultyUpstream
    environment: dict[str, str]

    def client(self, key: str, url: str | None = None, **options: Any) -> httpx.AsyncClient:
        """A client of nginx (or of `url`, one replica) with `key` as its bearer."""
        return httpx.AsyncClient(
            base_url=url or self.nginx.url,
            headers={"Authorization": f"Bearer {key}"},
            verify=self.nginx.tls(),
            timeout=60,
            **options,
        )

    async def key(self, name: str) -> NewKey:
        """A new key with the default scopes, made the way `gptactions keys create` does."""
        database = Database(self.database_url)
        keys = KeyService(database, redis_url=REDIS_URL)
        try:
            return await keys.create(name)
        finally:
            await keys.close()
            await database.close()

    def cli(self, *arguments: str) -> str:
        """`gptactions ARGUMENTS` as an operator runs it, on the cluster's database and Redis."""
        return gptactions_cli(
            *arguments, database_url=self.database_url, env={"GPTACTIONS_REDIS_URL": REDIS_URL}
        )


@pytest.fixture(scope="session")
def nginx() -> str:
    """The nginx binary; `make test` installs it, so there its absence fails the run."""
    binary = nginx_binary()
    if binary is None:
        message = "nginx is not installed (`make nginx`, or apt-get install nginx)"
        if os.environ.get(REQUIRED_VARIABLE):
            pytest.fail(message)
        pytest.skip(message)
    return binary


@pytest.fixture(scope="session")
def services() -> None:
    """PostgreSQL and Redis must answer."""
    if not postgres_reachable():
        pytest.skip(f"PostgreSQL is not reachable on {PG_HOST}:{PG_PORT}")
    if not redis_reachable():
        pytest.skip(f"Redis is not reachable on {REDIS_URL}")


@pytest.fixture(scope="module")
def upstream() -> Iterator[FaultyUpstream]:
    """An OpenAI-compatible upstream that answers at once (or, for `drip`, word by word)."""
    with FaultyUpstream() as faulty:
        yield faulty


@contextmanager
def start_cluster(
    binary: str, directory: Path, upstream: FaultyUpstream, **settings: str
) -> Iterator[Cluster]:
    """Two replicas on a fresh PostgreSQL database (dropped afterwards), then nginx before them.

    Their backends: `mock` (the upstream, instant), `drip` (the upstream, a word every
    DRIP_SECONDS), and whatever `settings` (GPTACTIONS_* names, lower case, without the prefix)
    add; the replicas start one after the other, as a rolling deployment does.
    """
    backends = [
        {"name": "mock", "url": upstream.url("ok"), "model": "mock", "maxConcurrency": 64},
        {"name": "drip", "url": upstream.url(f"drip-{DRIP_SECONDS}"), "model": "drip"},
    ]
    with fresh_postgres_database() as database_url, ExitStack() as stack:
        environment = {
            "GPTACTIONS_DATABASE_URL": database_url,
            "GPTACTIONS_REDIS_URL": REDIS_URL,
            "GPTACTIONS_BACKENDS": json.dumps(backends),
            "GPTACTIONS_HOST": "127.0.0.1",
            # As the deploy guide sets it: nginx's forwarded scheme and host are believed, so
            # the URLs the replicas hand out (Link headers) are nginx's.
            "GPTACTIONS_TRUSTED_PROXIES": "127.0.0.1",
        } | {f"GPTACTIONS_{name.upper()}": value for name, value in settings.items()}
        replicas = []
        for name in ("a", "b"):
            (directory / name).mkdir(parents=True)
            replicas.append(
                stack.enter_context(
                    serve(directory / name, key=ADMIN_KEY, env=environment, timeout=180)
                )
            )
        addresses = [server.url.removeprefix("http://") for server in replicas]
        proxy = stack.enter_context(run_nginx(binary, directory / "nginx", addresses))
        yield Cluster(proxy, (replicas[0], replicas[1]), database_url, upstream, environment)
