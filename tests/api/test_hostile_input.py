"""Inputs that used to end in a 500 are a 400 in the error shape, found before any work (issue 9).

The classes: lone UTF-16 surrogates (JSON's `"\\ud800"`) in any string of a body, log cursors
holding integers too large for the database, and `since`/`until` that leave the calendar once
converted to UTC. Each operation is fuzzed with them, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from gptactions.llm.fake import FakeBackend
from tests.conftest import ADMIN_KEY, ApiClient

API = "/api/v1/gpt"
FUZZ = hypothesis_settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# Text that may hold lone surrogates, alone or among ordinary characters and valid pairs.
SURROGATES = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
TEXT = st.text(alphabet=st.one_of(st.characters(), SURROGATES), min_size=1, max_size=30)
HOSTILE_TEXT = st.builds(
    lambda a, s, b: a + s + b, st.text(max_size=10), SURROGATES, st.text(max_size=10)
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12,
)


@pytest.fixture
async def app(app_factory: Callable[..., Any], fake: FakeBackend) -> AsyncIterator[ApiClient]:
    """The app on the parametrized database, with the fake model."""
    async with app_factory(fake) as client:
        yield client


async def _post(api: ApiClient, path: str, body: Any) -> Any:
    # json.dumps escapes lone surrogates as `\ud800`, as a client's JSON encoder would.
    return await api.http.post(
        f"{API}{path}",
        content=json.dumps(body),
        headers={"Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "application/json"},
    )


def _assert_no_server_error(response: Any) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        error = response.json()["error"]
        assert set(error) == {"code", "message", "details"}


def _assert_refused_before_work(response: Any, fake: FakeBackend, asked_before: int) -> None:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert any("surrogate" in detail["message"] for detail in error["details"])
    assert len(fake.requests) == asked_before  # the model was not asked


@pytest.mark.parametrize("path", ["/conversations", "/respond"])
@pytest.mark.parametrize("field", ["userId", "message", "conversationId", "model"])
@FUZZ
@given(text=HOSTILE_TEXT, stream=st.booleans())
async def test_a_lone_surrogate_in_a_conversation_field_is_a_400(
    app: ApiClient, fake: FakeBackend, path: str, field: str, text: str, stream: bool
) -> None:
    body: dict[str, Any] = {"userId": "alice", "message": "hello", field: text}
    asked = len(fake.requests)
    headers = {"Accept": "text/event-stream"} if stream else {}
    response = await app.http.post(
        f"{API}{path}",
        content=json.dumps(body),
        headers={"Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "application/json"}
        | headers,
    )
    _assert_refused_before_work(response, fake, asked)
    assert response.json()["error"]["details"][0]["pointer"] == f"/{field}"


@FUZZ
@given(
    action=st.sampled_from(["summarize", "translate", "classify", "answer"]),
    parameters=st.dictionaries(TEXT, JSON_VALUES, min_size=1, max_size=4),
    hostile=HOSTILE_TEXT,
    where=st.sampled_from(["value", "key", "userId", "action"]),
)
async def test_a_lone_surrogate_anywhere_in_an_action_call_is_a_400(
    app: ApiClient,
    fake: FakeBackend,
    action: str,
    parameters: dict[str, Any],
    hostile: str,
    where: str,
) -> None:
    body: dict[str, Any] = {"action": action, "parameters": dict(parameters)}
    if where == "value":
        body["parameters"]["text"] = hostile
    elif where == "key":
        body["parameters"][hostile] = "x"
    elif where == "userId":
        body["userId"] = hostile
    else:
        body["action"] = hostile
    asked = len(fake.requests)
    _assert_refused_before_work(await _post(app, "/actions", body), fake, asked)


@FUZZ
@given(
    body=st.fixed_dictionaries(
        {"action": st.sampled_from(["summarize", "sentiment"]), "parameters": JSON_VALUES},
        optional={"userId": TEXT, "model": TEXT, "maxTokens": JSON_VALUES},
    )
)
async def test_any_action_call_is_answered_without_a_server_error(
    app: ApiClient, body: dict[str, Any]
) -> None:
    _assert_no_server_error(await _post(app, "/actions", body))


@FUZZ
@given(
    body=st.fixed_dictionaries(
        {},
        optional={
            "userId": JSON_VALUES,
            "message": JSON_VALUES,
            "conversationId": JSON_VALUES,
            "maxTokens": JSON_VALUES,
            "temperature": JSON_VALUES,
            "model": JSON_VALUES,
        },
    ),
    path=st.sampled_from(["/conversations", "/respond"]),
)
async def test_any_conversation_body_is_answered_without_a_server_error(
    app: ApiClient, body: dict[str, Any], path: str
) -> None:
    _assert_no_server_error(await _post(app, path, body))


# The log's query: cursors and times

OFFSETS = st.builds(
    lambda minutes: timezone(timedelta(minutes=minutes)), st.integers(-23 * 60 - 59, 23 * 60 + 59)
)
MOMENTS = st.datetimes(
    min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59), timezones=OFFSETS
)
EDGE_MOMENTS = st.one_of(
    MOMENTS,
    st.builds(
        lambda offset: datetime(9999, 12, 31, 23, 30, tzinfo=offset), OFFSETS
    ),  # past 9999 in UTC when the offset is negative
    st.builds(lambda offset: datetime(1, 1, 1, 0, 30, tzinfo=offset), OFFSETS),
)
IDS = st.one_of(
    st.integers(min_value=-(2**80), max_value=2**80),
    st.sampled_from([2**63 - 1, 2**63, 2**64, -(2**63) - 1, 0, 10**4000]),
)


def _cursor(moment: datetime, ident: int | str) -> str:
    raw = f"{moment.isoformat()}|{ident}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@FUZZ
@given(moment=EDGE_MOMENTS, ident=IDS)
async def test_any_cursor_is_a_page_or_a_400(app: ApiClient, moment: datetime, ident: int) -> None:
    response = await app.get(f"{API}/logs", params={"cursor": _cursor(moment, ident)[:200]})
    _assert_no_server_error(response)
    if response.status_code == 400:
        assert response.json()["error"]["details"][0]["pointer"] == "/cursor"
    else:
        assert response.status_code == 200 and isinstance(response.json(), list)


@FUZZ
@given(since=st.none() | EDGE_MOMENTS, until=st.none() | EDGE_MOMENTS)
async def test_any_since_and_until_are_a_page_or_a_400(
    app: ApiClient, since: datetime | None, until: datetime | None
) -> None:
    params = {
        name: value.isoformat() for name, value in (("since", since), ("until", until)) if value
    }
    response = await app.get(f"{API}/logs", params=params)
    _assert_no_server_error(response)
    assert response.status_code in (200, 400)


@pytest.mark.parametrize(
    ("params", "pointer"),
    [
        ({"since": "9999-12-31T23:00:00-05:00"}, "/since"),
        ({"until": "0001-01-01T00:30:00+01:00"}, "/until"),
        ({"cursor": _cursor(datetime(2026, 1, 1, tzinfo=UTC), 2**63)}, "/cursor"),
        ({"cursor": _cursor(datetime(2026, 1, 1, tzinfo=UTC), 10**30)}, "/cursor"),
        ({"cursor": _cursor(datetime(2026, 1, 1, tzinfo=UTC), -1)}, "/cursor"),
        (
            {
                "cursor": _cursor(
                    datetime(9999, 12, 31, 23, tzinfo=timezone(-timedelta(hours=5))), 1
                )
            },
            "/cursor",
        ),
    ],
)
async def test_the_issue_examples_are_400s(
    app: ApiClient, params: dict[str, str], pointer: str
) -> None:
    response = await app.get(f"{API}/logs", params=params)
    assert response.status_code == 400, response.text
    assert [d["pointer"] for d in response.json()["error"]["details"]] == [pointer]


async def test_the_largest_id_either_database_holds_is_a_cursor(app: ApiClient) -> None:
    cursor = _cursor(datetime(2026, 1, 1, tzinfo=UTC), 2**63 - 1)
    response = await app.get(f"{API}/logs", params={"cursor": cursor})
    assert response.status_code == 200 and response.json() == []


async def test_a_nul_in_a_message_is_answered_and_logged_on_every_database(
    app: ApiClient,
) -> None:
    """PostgreSQL's text cannot hold NUL: the insert failed, a 500 for this request and for the
    others of its batch. The message is answered, and logged with U+FFFD in place of NUL."""
    response = await _post(app, "/conversations", {"userId": "alice", "message": "a\x00b"})
    assert response.status_code == 200, response.text
    logs = await app.get(f"{API}/logs", params={"userId": "alice"})
    assert [entry["message"] for entry in logs.json()] == ["a\ufffdb"]


# An identifier holding NUL: PostgreSQL cannot store or even compare it (each of these was a 500
# there), and rewriting an id would name another user or conversation: a 400, on every database.
NUL_IN_BODIES = [
    ("/conversations", {"userId": "a\x00b", "message": "hi"}, "/userId"),
    (
        "/respond",
        {"userId": "alice", "message": "hi", "conversationId": "conv_\x00"},
        "/conversationId",
    ),
    ("/respond", {"userId": "\x00", "message": "hi"}, "/userId"),
    (
        "/actions",
        {"action": "summarize", "parameters": {"text": "hi"}, "userId": "a\x00"},
        "/userId",
    ),
]


@pytest.mark.parametrize(("path", "body", "pointer"), NUL_IN_BODIES)
async def test_a_nul_in_an_identifier_of_a_body_is_a_400_on_every_database(
    app: ApiClient, path: str, body: dict[str, Any], pointer: str
) -> None:
    response = await _post(app, path, body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert [d["pointer"] for d in error["details"]] == [pointer]
    assert "U+0000" in error["message"]


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/logs", {"userId": "a\x00b"}),
        ("/logs", {"conversationId": "conv_\x00"}),
        ("/usage", {"userId": "\x00"}),
    ],
)
async def test_a_nul_in_an_identifier_of_a_query_is_a_400_on_every_database(
    app: ApiClient, path: str, params: dict[str, str]
) -> None:
    response = await app.get(f"{API}{path}", params=params)
    assert response.status_code == 400, response.text
    (name,) = params
    assert response.json()["error"]["details"][0]["pointer"] == f"/{name}"
    assert f"query parameter {name}: must not contain the character U+0000" in response.text


async def test_a_nul_in_the_user_of_a_chat_completion_is_a_400_on_every_database(
    app: ApiClient,
) -> None:
    body = {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "user": "u\x00"}
    response = await app.http.post(
        "/v1/chat/completions",
        content=json.dumps(body),
        headers={"Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "application/json"},
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "user"


async def test_the_document_says_identifiers_hold_no_nul(app: ApiClient) -> None:
    """So that a client generating requests from it (schemathesis) never sends one."""
    document = (await app.get("/openapi.json")).json()
    schemas = document["components"]["schemas"]
    patterns = [
        schemas["ConversationRequest"]["properties"]["userId"]["pattern"],
        schemas["ConversationRequest"]["properties"]["conversationId"]["pattern"],
        schemas["ActionRequest"]["properties"]["userId"]["pattern"],
        *(
            parameter["schema"]["pattern"]
            for parameter in document["paths"][f"{API}/logs"]["get"]["parameters"]
            if parameter["name"] in ("userId", "conversationId")
        ),
    ]
    assert len(patterns) == 5
    for pattern in patterns:
        assert "\\u0000" in pattern
        compiled = re.compile(pattern)
        assert compiled.search("alice") and not compiled.search("a\x00b")
    # Still not blank, as before.
    assert not re.compile(patterns[0]).search(" \t")


@pytest.mark.parametrize(
    ("path", "form", "error"),
    [
        (
            "/oauth/token",
            {"grant_type": "authorization_code", "client_id": "a\x00", "code": "c"},
            "invalid_request",
        ),
        (
            "/oauth/token",
            {"grant_type": "refresh_token", "refresh_token": "r\x00"},
            "invalid_request",
        ),
        ("/oauth/revoke", {"token": "t\x00"}, "invalid_request"),
    ],
)
async def test_a_nul_in_an_oauth_parameter_is_invalid_request_on_every_database(
    app: ApiClient, path: str, form: dict[str, str], error: str
) -> None:
    response = await app.http.post(path, data=form)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == error
    assert "U+0000" in response.json()["error_description"]


async def test_a_nul_in_basic_client_credentials_is_invalid_client(app: ApiClient) -> None:
    credentials = base64.b64encode(b"client%00:secret").decode()
    response = await app.http.post(
        "/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": "r"},
        headers={"Authorization": f"Basic {credentials}"},
    )
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "invalid_client"


async def test_a_nul_in_an_authorization_request_is_an_error_page(app: ApiClient) -> None:
    query = {"client_id": "a\x00b", "response_type": "code", "redirect_uri": "https://x.test/cb"}
    response = await app.http.get("/oauth/authorize", params=query)
    assert response.status_code == 400, response.text
    assert "U+0000" in response.text


async def test_a_registration_holding_nul_or_nested_too_deeply_is_refused(
    app_factory: Callable[..., Any],
) -> None:
    async with app_factory(oauth_dynamic_registration=True) as app:
        named = {"client_name": "x\x00", "redirect_uris": ["https://x.test/cb"]}
        response = await app.http.post("/oauth/register", json=named)
        assert response.status_code == 400, response.text
        assert response.json()["error"] == "invalid_client_metadata"
        # Within the JSON parser's depth, but past Python's recursion limit for a recursive walk.
        deep = '{"client_name": "x", "redirect_uris": ["https://x.test/cb"], "extra": '
        deep += "[" * 450 + '"\\u0000"' + "]" * 450 + "}"
        response = await app.http.post(
            "/oauth/register", content=deep, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 400, response.text
        assert response.json()["error"] == "invalid_client_metadata"
        nested = "[" * 100_000 + "]" * 100_000  # past the JSON parser's depth: was a 500
        response = await app.http.post(
            "/oauth/register", content=nested, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 400, response.text
        assert response.json()["error"] == "invalid_client_metadata"


def _nested(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth - 1):
        schema = {"type": "array", "items": schema}
    return schema


@pytest.mark.parametrize("where", ["response_format", "tools"])
async def test_a_schema_nested_too_deeply_is_a_400_not_a_500(app: ApiClient, where: str) -> None:
    """A schema nested 900 levels deep (which the JSON parser takes) was a 500: pydantic could
    not serialize it. Deeper than 64 levels is refused; 64 is taken."""
    for depth, status in ((65, 400), (64, 200)):
        schema = _nested(depth)
        body: dict[str, Any] = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}
        if where == "tools":
            function = {"name": "f", "parameters": {"type": "object", "properties": {"a": schema}}}
            body["tools"] = [{"type": "function", "function": function}]
            if depth == 64:
                body["tools"][0]["function"]["parameters"] = _nested(63) | {"type": "array"}
        else:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": schema},
            }
        response = await app.http.post(
            "/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        )
        assert response.status_code == status, (depth, response.text)
        if status == 400:
            assert "nested deeper than 64 levels" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    "path", ["/api/v1/gpt/conversations", "/api/v1/gpt/actions", "/v1/chat/completions"]
)
async def test_a_number_with_too_many_digits_is_a_400_not_a_500(app: ApiClient, path: str) -> None:
    """Python reads no integer of more than 4,300 digits (its guard against quadratic time):
    such a number in a body was a ValueError out of the JSON parser, and a 500."""
    raw = b'{"userId": "u", "message": "hi", "action": "summarize", "n": ' + b"9" * 5000 + b"}"
    response = await app.http.post(
        path,
        content=raw,
        headers={"Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "application/json"},
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert "too many digits" in json.dumps(error)
