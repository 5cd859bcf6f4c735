"""The document declares the headers the answers carry, and the answers carry them."""

from __future__ import annotations

from typing import Any

from openapi_spec_validator import validate

from gptactions.api.openapi import oauth_scheme
from gptactions.api.readiness import SUMMARY_LIMIT
from gptactions.config import Settings
from gptactions.llm.fake import FakeBackend
from tests.api.test_openapi import resolve
from tests.conftest import ApiClient, running_app

API = "/api/v1/gpt"
HTTP_METHODS = {"get", "post", "put", "patch", "delete"}


def declared(document: dict[str, Any], path: str, method: str, status: str) -> set[str]:
    """The names of the headers the document declares on one answer."""
    answer = resolve(document, document["paths"][path][method]["responses"][status])
    return set(answer.get("headers", {}))


def answers(document: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [
        (path, method, status)
        for path, item in document["paths"].items()
        if path.startswith((API + "/", "/v1/"))
        for method, operation in item.items()
        if method in HTTP_METHODS
        for status in operation["responses"]
    ]


async def test_every_answer_declares_its_headers(api: ApiClient) -> None:
    for query in ({}, {"scopes": "chat,actions"}, {"scopes": "chat,actions", "auth": "oauth"}):
        document = (await api.http.get("/openapi.json", params=query)).json()
        validate(document)
        for path, method, status in answers(document):
            headers = declared(document, path, method, status)
            assert "X-Request-ID" in headers, (path, method, status)  # on every answer
            if status in ("401", "403"):
                assert "WWW-Authenticate" in headers, (path, method, status)
            if status == "429":
                assert {"Retry-After", "RateLimit-Limit", "RateLimit-Remaining"} <= headers
                assert "RateLimit-Reset" in headers
            if status == "503":
                assert "Retry-After" in headers, (path, method)
        for header in document["components"]["headers"].values():
            assert len(header["description"]) <= SUMMARY_LIMIT
    full = (await api.http.get("/openapi.json")).json()
    for path in ("/logs", "/me/export", "/actions"):
        assert "Link" in declared(full, API + path, "get", "200"), path


async def test_the_answers_carry_the_declared_headers(
    settings: Settings, fake: FakeBackend
) -> None:
    """A 200, a 401, a 403 (a missing scope) and a rate limit's 429 carry every header the
    document declares on them (headers the server sends only sometimes are on none of these)."""
    limited = settings.model_copy(update={"rate_limit": "2/hour"})
    async with running_app(limited, fake) as api:
        document = (await api.http.get("/openapi.json")).json()
        key = await api.key(scopes=("chat",))
        seen = [
            (f"{API}/status", "200", await api.get(f"{API}/status", key=key)),
            (f"{API}/logs", "403", await api.get(f"{API}/logs", key=key)),
            (f"{API}/status", "429", await api.get(f"{API}/status", key=key)),
            (f"{API}/status", "401", await api.get(f"{API}/status", key="gpta_not_a_key")),
            ("/v1/models", "200", await api.get("/v1/models", key=await api.key())),
            ("/v1/models", "401", await api.get("/v1/models", key="gpta_not_a_key")),
        ]
    for path, status, answer in seen:
        assert answer.status_code == int(status), answer.text
        names = {name.lower() for name in declared(document, path, "get", status)}
        assert names and names <= set(answer.headers), (status, names - set(answer.headers))
    refused, rate_limited = seen[1][2], seen[2][2]
    assert 'error="insufficient_scope"' in refused.headers["www-authenticate"]
    assert rate_limited.headers["ratelimit-remaining"] == "0"
    assert int(rate_limited.headers["retry-after"]) >= 1


def test_an_oauth_scheme_offers_the_scopes_it_is_cut_for() -> None:
    def offered(scopes: Any) -> list[str]:
        return list(
            oauth_scheme("https://x.example", scopes)["flows"]["authorizationCode"]["scopes"]
        )

    assert offered(None) == ["chat", "actions", "logs"]
    assert offered(frozenset({"chat", "actions"})) == ["chat", "actions"]
    assert offered(frozenset({"logs"})) == ["logs"]
    assert offered(frozenset({"admin"})) == ["chat", "actions", "logs"]  # admin: everything
