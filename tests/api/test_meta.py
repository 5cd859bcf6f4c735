"""The routes around the API: health for load balancers, the document, the console."""

from __future__ import annotations

from tests.conftest import ApiClient


async def test_health_answers_get_and_head(api: ApiClient) -> None:
    got = await api.http.get("/healthz")
    assert got.status_code == 200
    assert got.json() == {"status": "ok"}
    head = await api.http.head("/healthz")
    assert head.status_code == 200


async def test_health_needs_no_key_and_is_not_in_the_document(api: ApiClient) -> None:
    document = (await api.http.get("/openapi.json")).json()
    assert "/healthz" not in document["paths"]
    assert (await api.http.get("/docs")).headers["location"] == "/"
