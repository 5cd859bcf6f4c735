"""The key is checked before the body is looked at: without a valid key every request is a 401,
whatever its body (issue 9)."""

from __future__ import annotations

import pytest
from fastapi.routing import APIRoute
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from tests.conftest import ApiClient

API = "/api/v1/gpt"
BODY_OPERATIONS = [f"{API}/conversations", f"{API}/respond", f"{API}/actions"]
BODIES = [
    b"{not json",
    b"",
    b"[1, 2]",
    b'{"userId": 5}',
    b'{"userId": "\\ud800", "message": "m"}',
    b'{"action": "nope", "parameters": {}}',
    b"\xff\xfe",
    b"[" * 100_000,
]
CONTENT_TYPES = [None, "application/json", "text/plain", "application/x-www-form-urlencoded"]


def _headers(content_type: str | None, authorization: str | None) -> dict[str, str]:
    headers = {}
    if content_type is not None:
        headers["Content-Type"] = content_type
    if authorization is not None:
        headers["Authorization"] = authorization
    return headers


@pytest.mark.parametrize("path", BODY_OPERATIONS)
@pytest.mark.parametrize("body", BODIES)
@pytest.mark.parametrize("content_type", CONTENT_TYPES)
async def test_a_bad_body_without_a_key_is_a_401(
    api: ApiClient, path: str, body: bytes, content_type: str | None
) -> None:
    response = await api.http.post(path, content=body, headers=_headers(content_type, None))
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize("path", BODY_OPERATIONS)
async def test_a_bad_body_with_a_key_of_another_scope_is_a_403(api: ApiClient, path: str) -> None:
    key = await api.key(scopes=("logs",))
    response = await api.http.post(
        path, content=b"{not json", headers=_headers("text/plain", f"Bearer {key}")
    )
    assert response.status_code == 403, response.text


@pytest.mark.parametrize("path", BODY_OPERATIONS)
async def test_with_a_key_the_body_is_judged(api: ApiClient, path: str) -> None:
    key = await api.key()
    auth = f"Bearer {key}"
    malformed = await api.http.post(path, content=b"{not json", headers=_headers(None, auth))
    assert malformed.status_code == 400
    assert malformed.json()["error"]["message"].startswith(
        "Invalid input: the body is not valid JSON: Expecting property name"
    )
    deep = await api.http.post(path, content=b"[" * 100_000, headers=_headers(None, auth))
    assert deep.status_code == 400
    assert "nested too deeply" in deep.json()["error"]["message"]
    not_json = await api.http.post(path, content=b"x=1", headers=_headers("text/plain", auth))
    assert not_json.status_code == 415


@hypothesis_settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    path=st.sampled_from(BODY_OPERATIONS),
    body=st.binary(max_size=200),
    content_type=st.sampled_from(CONTENT_TYPES),
    authorization=st.sampled_from([None, "", "Bearer", "Bearer gpta_wrong_0123456789abcdefghij"]),
)
async def test_any_body_without_a_valid_key_is_a_401(
    api: ApiClient, path: str, body: bytes, content_type: str | None, authorization: str | None
) -> None:
    headers = _headers(content_type, authorization)
    response = await api.http.post(path, content=body, headers=headers)
    assert response.status_code == 401, response.text


def test_no_route_lets_fastapi_read_a_body_before_the_key(api: ApiClient) -> None:
    """A route with a body parameter would be parsed before its dependencies run: they take
    their bodies through `deps.json_body` instead."""
    app = api.http._transport.app  # type: ignore[attr-defined]
    with_bodies = [
        route.path for route in app.routes if isinstance(route, APIRoute) and route.body_field
    ]
    assert with_bodies == []
