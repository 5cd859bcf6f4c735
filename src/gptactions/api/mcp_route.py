"""`/mcp` as the app routes it: the MCP SDK is loaded on the endpoint's first request.

Importing the SDK (and `api.mcp`, built on it) took ~0.4 s of every server start, a tenth of
it, for an endpoint most servers are never asked; every worker and every command that builds
the app paid it. Here the first `/mcp` request imports it in a thread (the event loop goes on
serving meanwhile), builds the endpoint and starts its session manager, which then lives until
the app's lifespan ends, as it would have from the start.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING

from starlette.types import Receive, Scope, Send

from gptactions.runtime import Runtime

if TYPE_CHECKING:
    from gptactions.api.mcp import McpEndpoint


class McpRoute:
    """The ASGI app of `/mcp`: builds `api.mcp.McpEndpoint` when first asked, then hands over."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._endpoint: McpEndpoint | None = None
        self._building: asyncio.Lock | None = None
        self._lifespan: AsyncExitStack | None = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The app's lifespan: an endpoint built meanwhile runs its session manager until it
        ends. A request outside it gets the endpoint's own 503 (its manager not running)."""
        async with AsyncExitStack() as lifespan:
            self._lifespan = lifespan
            try:
                yield
            finally:
                self._lifespan = None
        # Whatever was built stopped with the stack; a later lifespan builds anew.
        self._endpoint = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = self._endpoint or await self._build()
        await endpoint(scope, receive, send)

    async def _build(self) -> McpEndpoint:
        """Import the SDK off the event loop, build the endpoint once, start it if the app runs."""
        if self._building is None:
            self._building = asyncio.Lock()
        async with self._building:
            if self._endpoint is not None:
                return self._endpoint
            module = await asyncio.to_thread(importlib.import_module, "gptactions.api.mcp")
            endpoint: McpEndpoint = module.McpEndpoint(self.runtime)
            lifespan = self._lifespan
            if lifespan is not None:
                await lifespan.enter_async_context(endpoint.running())
                if self._lifespan is lifespan:
                    self._endpoint = endpoint
                else:  # the app stopped while the manager started: stop it as the app would have
                    await lifespan.aclose()
            return endpoint
