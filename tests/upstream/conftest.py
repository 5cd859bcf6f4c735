"""Fixtures of the upstream tests: the fault-injecting upstream and a real llama.cpp server."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gptactions.llm.local import bundled_model_path
from tests.serving import free_port

from .faulty import FaultyUpstream

__all__ = ["free_port"]  # the upstream tests' import of it


@pytest.fixture
def faulty() -> Iterator[FaultyUpstream]:
    """A fault-injecting upstream on 127.0.0.1, fresh for each test."""
    upstream = FaultyUpstream().start()
    try:
        yield upstream
    finally:
        upstream.stop()


@pytest.fixture
def closed_url() -> str:
    """The base URL of an upstream that is down: nothing listens on its port."""
    return f"http://127.0.0.1:{free_port()}/v1"


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """llama-cpp-python's OpenAI-compatible server with the bundled model; its base URL."""
    port = free_port()
    log_path: Path = tmp_path_factory.mktemp("llama-server") / "server.log"
    command = [
        sys.executable,
        "-m",
        "tests.upstream.llama_cpp_server",  # llama_cpp.server, safe on AMX CPUs
        "--model",
        str(bundled_model_path()),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        "2048",
        "--seed",
        "0",
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "NO_PROXY": "*"}
        )
        base_url = f"http://127.0.0.1:{port}/v1"
        try:
            _wait_until_serving(base_url, process, log_path)
            yield base_url
        finally:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def _wait_until_serving(base_url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"llama_cpp.server exited:\n{log.read_text(errors='replace')}")
        try:
            if httpx.get(f"{base_url}/models", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"llama_cpp.server did not start:\n{log.read_text(errors='replace')}")
