"""Contract test: schemathesis drives the real server (real model) from the served document.

It fails on any 5xx and on any response that breaks the document (status code, content type,
headers, body schema). The operations that have the model generate send each generated request
to the app on the fake backend too, which serves the same document (its backend has the
embedded model's name): its validation, errors and answers' shapes are the real server's, in
milliseconds instead of a generation's seconds, so only one request in four also goes to the
real model.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import positive_data_acceptance

from gptactions.app import create_app
from gptactions.config import Settings
from gptactions.llm.fake import FakeBackend
from gptactions.llm.router import BackendRouter
from gptactions.runtime import Runtime
from tests.serving import Server, serve

KEY = "gpta_contract_test_key_0123456789abcdefghijk"
# Small generations keep the run short; the limit is in the document, so every generated request
# respects it.
LIMITS = {"GPTACTIONS_MAX_TOKENS_LIMIT": "8", "GPTACTIONS_DEFAULT_MAX_TOKENS": "8"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("contract")
    with serve(directory, key=KEY, env=LIMITS) as running:
        yield running


@pytest.fixture(scope="module")
def fake_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app on the fake backend (same key, limits and backend name: the same document),
    served by uvicorn from a thread; its URL. The socket listens before the server starts:
    early requests wait in its backlog."""
    directory = tmp_path_factory.mktemp("contract-fake")
    configured = Settings(
        database_url=f"sqlite:///{directory / 'fake.db'}",
        api_key=KEY,
        max_tokens_limit=int(LIMITS["GPTACTIONS_MAX_TOKENS_LIMIT"]),
        default_max_tokens=int(LIMITS["GPTACTIONS_DEFAULT_MAX_TOKENS"]),
    )
    backend = FakeBackend(name="local")  # the embedded model's: requests may name it
    app = create_app(runtime=Runtime(configured, router=BackendRouter([backend])))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{sock.getsockname()[1]}"
        finally:
            server.should_exit = True
            thread.join(timeout=30)


# The operations that have the model generate: each request is one or two generations on the
# real server (seconds on these cores).
GENERATING = [
    ("POST", "/api/v1/gpt/conversations"),
    ("POST", "/api/v1/gpt/respond"),
    ("POST", "/api/v1/gpt/actions"),
    ("POST", "/v1/chat/completions"),
]
OPERATIONS = [
    *GENERATING,
    ("GET", "/api/v1/gpt/status"),
    ("GET", "/api/v1/gpt/logs"),
    ("GET", "/api/v1/gpt/usage"),
    ("GET", "/api/v1/gpt/actions"),
    ("GET", "/v1/models"),
    ("GET", "/v1/models/{model}"),
]
EXAMPLES = 30
MODEL_EVERY = 4
"""Of a generating operation's requests, the real model answers about one in this many (drawn
with the request, so that a failing one shrinks keeping its server); the fake backend answers
every one."""


def test_the_document_lists_exactly_these_operations(server: Server) -> None:
    loaded = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    listed = {(op.method.upper(), op.path) for op in (r.ok() for r in loaded.get_all_operations())}
    assert set(OPERATIONS) <= listed


# schemathesis's own pytest plugin does not run on this pytest; its strategies drive hypothesis
# directly instead, one operation per test.
@pytest.mark.model
@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_every_operation_keeps_the_contract(
    server: Server, fake_server: str, method: str, path: str
) -> None:
    loaded = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operation = loaded[path][method]
    generating = (method, path) in GENERATING

    # A log cursor is an opaque token the server hands out: a made-up one is rightly a 400,
    # though any string fits its schema. So is a search (q) without a letter or digit and, for
    # a chat completion, a tool_choice naming a function that tools lack, or messages beyond
    # the context window, which no schema can say; nor can it say that a usage window's since
    # must come before its until, or that window and since exclude each other. Every other
    # check still runs on these operations.
    excluded = (
        [positive_data_acceptance]
        if path.endswith(("/logs", "/usage", "/chat/completions"))
        else []
    )

    @given(case=operation.as_strategy(), turn=st.integers(0, MODEL_EVERY - 1))
    @settings(
        max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None
    )
    def check(case: schemathesis.Case, turn: int) -> None:
        urls = [fake_server] if generating else []
        if not generating or turn == 0:
            urls.append(server.url)
        for url in urls:
            case.call_and_validate(
                base_url=url,
                headers={"Authorization": f"Bearer {KEY}"},
                excluded_checks=excluded,
                # Generations queue for one model on two shared cores: wait, however slow.
                timeout=300,
            )

    check()


# The generated cases above reach a stream only by chance (a body with stream: true, an Accept
# header asking for events); these reach one every time, so each event is checked against the
# document on every run.
STREAMS = [
    (
        "POST",
        "/v1/chat/completions",
        {"model": "local", "messages": [{"role": "user", "content": "Hi"}], "stream": True},
        {},
    ),
    (
        "POST",
        "/api/v1/gpt/conversations",
        {"userId": "contract", "message": "Hi"},
        {"Accept": "text/event-stream"},
    ),
]


@pytest.mark.model
@pytest.mark.parametrize(("method", "path", "body", "headers"), STREAMS)
def test_a_stream_keeps_the_contract_event_by_event(
    server: Server, method: str, path: str, body: dict[str, object], headers: dict[str, str]
) -> None:
    operation = schemathesis.openapi.from_url(f"{server.url}/openapi.json")[path][method]
    case = operation.Case(body=body)
    response = case.call_and_validate(
        base_url=server.url, headers={"Authorization": f"Bearer {KEY}", **headers}, timeout=300
    )
    assert response.status_code == 200
    assert response.headers["content-type"][0].startswith("text/event-stream")
