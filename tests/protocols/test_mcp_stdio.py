"""`gptactions mcp` serves the same tools on stdio, for desktop clients that start it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters, stdio_client


@pytest.mark.model
async def test_the_stdio_server_lists_and_calls_tools(isolated: Path) -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("GPTACTIONS_")}
    environment["GPTACTIONS_DATABASE_URL"] = f"sqlite:///{isolated / 'stdio.db'}"
    parameters = StdioServerParameters(
        command=sys.executable, args=["-m", "gptactions", "mcp"], env=environment, cwd=isolated
    )
    with (isolated / "stderr.log").open("w") as errors:
        async with Client(stdio_client(parameters, errlog=errors)) as client:
            names = {tool.name for tool in (await client.list_tools()).tools}
            assert {"converse", "summarize", "translate"} <= names
            refused = await client.call_tool("translate", {"text": "hello"})
            assert refused.is_error
            assert refused.structured_content["error"]["details"][0]["pointer"] == (
                "/targetLanguage"
            )
            reply = await client.call_tool(
                "converse", {"userId": "desk", "message": "Say hi.", "maxTokens": 8}
            )
            assert not reply.is_error, reply.content
            assert reply.structured_content["conversationId"]
