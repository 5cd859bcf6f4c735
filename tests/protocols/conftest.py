"""Fixtures of the protocol tests: the app served over real HTTP by uvicorn, in the test's loop."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import httpx2
import uvicorn
from fastapi import FastAPI
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from gptactions.app import create_app
from gptactions.config import Settings
from gptactions.llm.base import Backend
from gptactions.llm.router import BackendRouter
from gptactions.runtime import Runtime


@dataclass(frozen=True)
class Served:
    """A server listening on a local port: its base URL and its runtime (to make keys)."""

    url: str
    runtime: Runtime
    app: FastAPI

    async def key(self, *scopes: str) -> str:
        """A new key with these scopes (the defaults when none are given)."""
        kwargs = {"scopes": scopes} if scopes else {}
        return (await self.runtime.keys.create("test", **kwargs)).secret


def initialize_message(client: str = "test") -> dict[str, Any]:
    """MCP's `initialize`, as clients of the 2025-06-18 revision (ChatGPT, Claude, Cursor) send it."""
    return {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": client, "version": "1"},
        },
    }


@asynccontextmanager
async def served(
    settings: Settings, backend: Backend, *, span_exporter: Any = None
) -> AsyncIterator[Served]:
    """The app served by uvicorn on a socket that listens before the server starts.

    Connections made before uvicorn accepts wait in the socket's backlog, so nothing polls.
    """
    runtime = Runtime(settings, router=BackendRouter([backend]))
    app = create_app(runtime=runtime, span_exporter=span_exporter)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    url = f"http://127.0.0.1:{port}"
    try:
        # Answered once the lifespan has run (migrations included): the server is ready.
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"{url}/healthz")).status_code == 200
        yield Served(url, runtime, app)
    finally:
        server.should_exit = True
        await task
        sock.close()


@asynccontextmanager
async def mcp_client(server: Served, key: str | None) -> AsyncIterator[Client]:
    """The SDK's client on /mcp, sending the key as a Bearer token."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=120) as http,
        Client(streamable_http_client(f"{server.url}/mcp", http_client=http)) as client,
    ):
        yield client
