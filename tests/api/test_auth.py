"""API keys: Bearer or bare, 401 with WWW-Authenticate, 403 for a missing scope, revocation."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from tests.conftest import ADMIN_KEY, ApiClient

API = "/api/v1/gpt"
OPERATIONS = [
    ("post", f"{API}/conversations", {"userId": "u", "message": "m"}),
    ("post", f"{API}/respond", {"userId": "u", "message": "m"}),
    ("get", f"{API}/status", None),
    ("get", f"{API}/logs", None),
    ("get", f"{API}/actions", None),
    ("post", f"{API}/actions", {"action": "summarize", "parameters": {"text": "t"}}),
]


async def _call(api: ApiClient, method: str, path: str, body: object, headers: dict[str, str]):  # type: ignore[no-untyped-def]
    if method == "post":
        return await api.http.post(path, json=body, headers=headers)
    return await api.http.get(path, headers=headers)


@pytest.mark.parametrize(("method", "path", "body"), OPERATIONS)
@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Bearer wrong-key-0123456789abcdefghij",
        "Basic dXNlcjpwYXNz",
        "gpta_nope",
    ],
)
async def test_every_operation_needs_a_valid_key(
    api: ApiClient, method: str, path: str, body: object, header: str | None
) -> None:
    headers = {} if header is None else {"Authorization": header}
    response = await _call(api, method, path, body, headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize("header", ["", "Bearer", "Bearer   ", "bearer"])
async def test_a_header_without_a_key_says_a_key_is_required(api: ApiClient, header: str) -> None:
    # `-H "Authorization: Bearer $KEY"` with KEY unset sends "Bearer": not a wrong key, no key.
    response = await api.http.get(f"{API}/status", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.json()["error"]["message"].startswith(
        "an API key or an OAuth access token is required"
    )


@pytest.mark.parametrize("header", [f"Bearer {ADMIN_KEY}", ADMIN_KEY, f"bearer   {ADMIN_KEY}  "])
async def test_bearer_and_bare_keys_are_accepted(api: ApiClient, header: str) -> None:
    response = await api.http.get(f"{API}/status", headers={"Authorization": header})
    assert response.status_code == 200


def _basic(credentials: str) -> str:
    return "Basic " + base64.b64encode(credentials.encode()).decode()


@pytest.mark.parametrize(
    "header",
    [
        f"Basic {ADMIN_KEY}",  # a GPT whose editor says "Basic", with the key pasted as it is
        _basic(f"gpt:{ADMIN_KEY}"),  # user:password, the key as the password
        _basic(f"{ADMIN_KEY}:"),  # the key as the user, no password (as Stripe's are sent)
    ],
)
async def test_basic_carries_the_key_as_a_gpt_editor_sends_it(api: ApiClient, header: str) -> None:
    response = await api.http.get(f"{API}/status", headers={"Authorization": header})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("scheme", ["Token", "ApiKey"])
async def test_a_scheme_the_server_does_not_read_is_named_in_the_401(
    api: ApiClient, scheme: str
) -> None:
    response = await api.http.get(
        f"{API}/status", headers={"Authorization": f"{scheme} {ADMIN_KEY}"}
    )
    assert response.status_code == 401
    message = response.json()["error"]["message"]
    assert f"the scheme '{scheme}' is not one this server reads" in message
    assert "Bearer <key or token>" in message and ADMIN_KEY not in message


async def test_a_wrong_key_with_spaces_is_not_quoted_as_a_scheme(api: ApiClient) -> None:
    """The first word of a human-chosen key (`my human key`) is part of a secret, not a scheme."""
    response = await api.http.get(f"{API}/status", headers={"Authorization": "my human key"})
    assert response.status_code == 401
    assert "my" not in response.json()["error"]["message"].split()


async def test_two_authorization_headers_are_a_400_whichever_is_valid(api: ApiClient) -> None:
    for pair in ([ADMIN_KEY, "wrong"], ["wrong", ADMIN_KEY], [ADMIN_KEY, ADMIN_KEY]):
        headers = [("Authorization", f"Bearer {key}") for key in pair]
        response = await api.http.get(f"{API}/status", headers=headers)
        assert response.status_code == 400, pair
        assert response.json()["error"]["details"] == [
            {"pointer": "/headers/Authorization", "message": "must be sent once"}
        ]
    document = (await api.http.get("/openapi.json")).json()
    assert "400" in document["paths"][f"{API}/status"]["get"]["responses"]


async def test_a_revoked_key_is_401(api: ApiClient) -> None:
    key = await api.key(name="temp")
    assert (await api.get(f"{API}/status", key=key)).status_code == 200
    listed = [k for k in await api.runtime.keys.list() if k.name == "temp"]
    await api.runtime.keys.revoke(listed[0].prefix)
    assert (await api.get(f"{API}/status", key=key)).status_code == 401


@pytest.mark.parametrize(
    ("scopes", "allowed"),
    [
        (("chat",), {"/conversations", "/respond", "/status"}),
        (("actions",), {"/actions", "/status"}),
        (("logs",), {"/logs", "/status"}),
    ],
)
async def test_scopes_limit_operations(
    api: ApiClient, scopes: tuple[str, ...], allowed: set[str]
) -> None:
    key = await api.key(scopes=scopes)
    document = (await api.http.get("/openapi.json")).json()
    for method, path, body in OPERATIONS:
        response = await _call(api, method, path, body, {"Authorization": f"Bearer {key}"})
        expected = 200 if path.removeprefix(API) in allowed else 403
        assert response.status_code == expected, (path, response.text)
        if expected == 403:
            assert response.json()["error"]["code"] == "forbidden"
            # RFC 6750, 3.1: which scope the operation needs.
            challenge = response.headers["WWW-Authenticate"]
            assert challenge.startswith('Bearer realm="gptactions", error="insufficient_scope"')
            assert 'scope="' in challenge
        # Every answer is one the document lists for the operation (a strict client's check).
        assert str(expected) in document["paths"][path][method]["responses"], (method, path)


async def test_keys_are_stored_only_as_hashes(api: ApiClient, settings) -> None:  # type: ignore[no-untyped-def]
    secret = await api.key(name="hashme")
    await api.runtime.database.close()
    path = Path(settings.database_url.removeprefix("sqlite:///"))
    raw = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
    assert secret.encode() not in raw
    assert ADMIN_KEY.encode() not in raw
    assert secret[:12].encode() in raw  # the visible prefix is kept, to tell keys apart


async def test_key_material_never_reaches_the_log(
    api: ApiClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    await api.http.get(
        f"{API}/status", headers={"Authorization": "Bearer gpta_wrong_secret_value_123456789"}
    )
    await api.get(f"{API}/status")
    assert "gpta_wrong_secret_value" not in caplog.text
    assert ADMIN_KEY not in caplog.text
