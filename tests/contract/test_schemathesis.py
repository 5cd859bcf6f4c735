"""Contract test: schemathesis drives the real server (real model) from the served document.

It fails on any 5xx and on any response that breaks the document (status code, content type,
headers, body schema).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.serving import Server, serve

KEY = "gpta_contract_test_key_0123456789abcdefghijk"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("contract")
    # Small generations keep the run short; the limit is in the document, so every generated
    # request respects it.
    with serve(
        directory,
        key=KEY,
        env={"GPTACTIONS_MAX_TOKENS_LIMIT": "8", "GPTACTIONS_DEFAULT_MAX_TOKENS": "8"},
    ) as running:
        yield running


OPERATIONS = [
    ("POST", "/api/v1/gpt/conversations"),
    ("POST", "/api/v1/gpt/respond"),
    ("GET", "/api/v1/gpt/status"),
    ("GET", "/api/v1/gpt/logs"),
    ("GET", "/api/v1/gpt/usage"),
    ("POST", "/api/v1/gpt/actions"),
    ("GET", "/api/v1/gpt/actions"),
    ("POST", "/v1/chat/completions"),
    ("GET", "/v1/models"),
    ("GET", "/v1/models/{model}"),
]


def test_the_document_lists_exactly_these_operations(server: Server) -> None:
    loaded = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    listed = {(op.method.upper(), op.path) for op in (r.ok() for r in loaded.get_all_operations())}
    assert set(OPERATIONS) <= listed


# schemathesis's own pytest plugin does not run on this pytest; its strategies drive hypothesis
# directly instead, one operation per test.
@pytest.mark.model
@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_every_operation_keeps_the_contract(server: Server, method: str, path: str) -> None:
    loaded = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operation = loaded[path][method]

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

    @given(case=operation.as_strategy())
    @settings(
        max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None
    )
    def check(case: schemathesis.Case) -> None:
        case.call_and_validate(
            base_url=server.url,
            headers={"Authorization": f"Bearer {KEY}"},
            excluded_checks=excluded,
            # Generations queue for one model on two shared cores: wait for them, however slow.
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
