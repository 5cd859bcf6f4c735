"""GET /openapi.json and /openapi.yaml render each (format, scopes, auth, origin) once and keep
it: anonymous callers asking again cost a lookup, not tens of milliseconds of CPU."""

from __future__ import annotations

from typing import Any

import pytest

from gptactions.api import meta
from tests.conftest import ApiClient


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """The documents built (caller_document's calls), as (scopes, auth)."""
    made: list[tuple[Any, ...]] = []
    build = meta.caller_document

    def counted(request: Any, scopes: str | None, auth: str = "key") -> dict[str, Any]:
        made.append((scopes, auth))
        return build(request, scopes, auth)

    monkeypatch.setattr(meta, "caller_document", counted)
    return made


@pytest.mark.parametrize("path", ["/openapi.json", "/openapi.yaml"])
async def test_a_repeat_is_not_rebuilt(
    api: ApiClient, builds: list[tuple[Any, ...]], path: str
) -> None:
    first = await api.http.get(path, params={"scopes": "chat,actions"})
    second = await api.http.get(path, params={"scopes": "actions chat"})  # the same scopes
    assert first.status_code == second.status_code == 200
    assert first.content == second.content
    assert first.headers["content-type"] == second.headers["content-type"]
    assert builds == [("chat,actions", "key")]


async def test_each_variant_is_kept_apart(api: ApiClient, builds: list[tuple[Any, ...]]) -> None:
    plain = await api.http.get("/openapi.json")
    yaml_text = await api.http.get("/openapi.yaml")
    oauth = await api.http.get("/openapi.json", params={"scopes": "chat", "auth": "oauth"})
    key = await api.http.get("/openapi.json", params={"scopes": "chat"})
    elsewhere = await api.http.get("/openapi.json", headers={"Host": "other.example.org"})
    assert plain.headers["content-type"] == "application/json"
    assert yaml_text.headers["content-type"] == "application/yaml"
    assert plain.json()["servers"][0]["url"] == "http://testserver"
    assert elsewhere.json()["servers"][0]["url"] == "http://other.example.org"
    assert oauth.content != key.content
    assert len(builds) == 5
    for _ in range(2):
        await api.http.get("/openapi.json")
        await api.http.get("/openapi.json", headers={"Host": "other.example.org"})
    assert len(builds) == 5


async def test_an_unknown_scope_is_refused_and_not_kept(
    api: ApiClient, builds: list[tuple[Any, ...]]
) -> None:
    answer = await api.http.get("/openapi.json", params={"scopes": "nope"})
    assert answer.status_code == 400
    assert builds == []


async def test_the_cache_is_bounded(
    api: ApiClient, builds: list[tuple[Any, ...]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(meta, "DOCUMENT_CACHE_SIZE", 2)
    for host in ("a.example.org", "b.example.org", "c.example.org", "a.example.org"):
        await api.http.get("/openapi.json", headers={"Host": host})
    assert len(builds) == 4  # a was the least recently used, and went when c came
    app = api.http._transport.app  # type: ignore[attr-defined]
    assert len(app.state.openapi_bodies) == 2
