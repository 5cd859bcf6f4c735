"""Bad input always gets a clear error in the one error shape."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest

from gptactions.api.errors import MAX_DETAILS
from gptactions.config import Settings
from gptactions.llm.fake import FakeBackend
from tests.conftest import ADMIN_KEY, ApiClient
from tests.protocols.conftest import served

API = "/api/v1/gpt"


def assert_error_shape(body: dict[str, Any], code: str) -> None:
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({"message": "hi"}, "/userId"),
        ({"userId": "u"}, "/message"),
        ({"userId": "u", "message": ""}, "/message"),
        ({"userId": "u", "message": " \n\t "}, "/message"),
        ({"userId": "  ", "message": "hi"}, "/userId"),
        ({"userId": 5, "message": "hi"}, "/userId"),
        ({"userId": "u", "message": ["hi"]}, "/message"),
        ({"userId": "u", "message": "hi", "maxTokens": "5"}, "/maxTokens"),
        ({"userId": "u", "message": "hi", "maxTokens": 0}, "/maxTokens"),
        ({"userId": "u", "message": "hi", "maxTokens": 100000}, "/maxTokens"),
        ({"userId": "u", "message": "hi", "temperature": 9}, "/temperature"),
        ({"userId": "u" * 300, "message": "hi"}, "/userId"),
        ({"userId": "u", "message": "m" * 40_000}, "/message"),
    ],
)
@pytest.mark.parametrize("path", ["conversations", "respond"])
async def test_invalid_input_is_400_naming_the_field(
    api: ApiClient, body: dict[str, Any], pointer: str, path: str
) -> None:
    response = await api.post(f"{API}/{path}", body)
    assert response.status_code == 400, response.text
    payload = response.json()
    assert_error_shape(payload, "invalid_request")
    assert pointer in [d["pointer"] for d in payload["error"]["details"]]
    assert pointer.lstrip("/") in payload["error"]["message"]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "Invalid input: the body is not valid JSON: "),
        (b"[1, 2]", "Invalid input: the body must be a JSON object"),
        (b'"text"', "Invalid input: the body must be a JSON object"),
        (b"null", "Invalid input: the body must be a JSON object"),
        (b"", "Invalid input: a JSON object is required as the body"),
        (
            b'{"userId": "u", "message": "m", "temperature": NaN}',
            "Invalid input: the body is not valid JSON: NaN is not a JSON number",
        ),
        (
            b'{"userId": "u", "message": "m", "maxTokens": -Infinity}',
            "Invalid input: the body is not valid JSON: -Infinity is not a JSON number",
        ),
    ],
)
async def test_a_body_that_is_not_a_json_object_is_400(
    api: ApiClient, raw: bytes, message: str
) -> None:
    response = await api.http.post(
        f"{API}/conversations",
        content=raw,
        headers={
            "Authorization": "Bearer gpta_test_admin_key_0123456789abcdefghijklmnop",
            "Content-Type": "application/json",
        },
    )
    assert response.status_code == 400
    assert_error_shape(response.json(), "invalid_request")
    # In JSON's words, not Python's ("a valid dictionary or instance of ConversationRequest").
    assert response.json()["error"]["message"].startswith(message)


async def test_a_non_object_field_is_named_in_json_words(api: ApiClient) -> None:
    response = await api.post(f"{API}/actions", {"action": "summarize", "parameters": "text"})
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "Invalid input: parameters: must be a JSON object"


async def test_a_body_that_is_not_json_is_415(api: ApiClient) -> None:
    response = await api.post(
        f"{API}/conversations",
        None,
        content=b"userId=u&message=m",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 415
    assert_error_shape(response.json(), "unsupported_media_type")


async def test_a_body_over_the_limit_is_413(api: ApiClient) -> None:
    huge = {"userId": "u", "message": "x" * (1024 * 1024 + 10)}
    response = await api.post(f"{API}/conversations", huge)
    assert response.status_code == 413
    assert_error_shape(response.json(), "payload_too_large")


async def test_a_chunked_body_over_the_limit_is_413(api: ApiClient) -> None:
    async def chunks() -> Any:
        for _ in range(40):
            yield b"x" * 65536

    response = await api.http.post(
        f"{API}/conversations",
        content=chunks(),
        headers={
            "Authorization": "Bearer gpta_test_admin_key_0123456789abcdefghijklmnop",
            "Content-Type": "application/json",
        },
    )
    assert response.status_code == 413


@pytest.mark.parametrize(
    ("path", "body", "detail"),
    [
        ("respond", {"conversationId": "x" * 65}, "/conversationId: must be at most 64 characters"),
        ("respond", {"conversationId": ""}, "/conversationId: must not be empty"),
        ("respond", {"userId": 5}, "/userId: must be a string"),
        ("respond", {"maxTokens": 1.5}, "/maxTokens: must be an integer"),
        ("respond", {"maxTokens": 0}, "/maxTokens: must be at least 1"),
        ("respond", {"temperature": "1"}, "/temperature: must be a number"),
        ("actions", {"action": "x" * 101}, "/action: must be at most 100 characters"),
        ("logs?limit=abc", None, "/limit: query parameter limit: must be an integer"),
        ("logs?kind=nope", None, "/kind: query parameter kind: must be one of: 'conversation', "),
        ("logs?userId=", None, "/userId: query parameter userId: must not be empty"),
        (
            "actions",
            {"action": "classify", "parameters": {"text": "t", "labels": ["a", "a"]}},
            "/parameters/labels: must not hold the same item twice",
        ),
        # A bare number is not a time (pydantic read 2026 as 33 minutes past 1970).
        ("logs?since=2026", None, "/since: query parameter since: must be a date and time (RFC"),
        ("usage?until=0.5", None, "/until: query parameter until: must be a date and time (RFC"),
    ],
)
async def test_validation_errors_are_in_the_apis_words(
    api: ApiClient, path: str, body: dict[str, Any] | None, detail: str
) -> None:
    # As the actions' parameters say them, not pydantic's "String should have at most 64 ...".
    if body is None:
        response = await api.get(f"{API}/{path}")
    else:
        base = {"action": "summarize", "parameters": {"text": "t"}} if path == "actions" else {}
        base = base or {"userId": "u", "message": "hi"}
        response = await api.post(f"{API}/{path}", {**base, **body})
    assert response.status_code == 400
    first = response.json()["error"]["details"][0]
    assert f"{first['pointer']}: {first['message']}".startswith(detail)
    assert "should" not in response.json()["error"]["message"]


@pytest.mark.parametrize("field", ["userId", "conversationId", "maxTokens", "model", "temperature"])
@pytest.mark.parametrize("path", ["conversations", "respond"])
async def test_null_is_400_where_the_document_does_not_allow_it(
    api: ApiClient, field: str, path: str
) -> None:
    # No request field is `nullable` in the document: null is not "absent" (a strict reading,
    # as "5" is not 5), so a client generated from the document and the server agree.
    response = await api.post(f"{API}/{path}", {"userId": "u", "message": "hi", field: None})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["details"] == [
        {"pointer": f"/{field}", "message": "must not be null"}
    ]


async def test_a_null_in_an_action_request_is_400(api: ApiClient) -> None:
    body = {"action": "summarize", "parameters": {"text": "t"}, "userId": None}
    response = await api.post(f"{API}/actions", body)
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "Invalid input: userId: must not be null"


@pytest.mark.parametrize("encoding", ["gzip", "br", "deflate, gzip"])
async def test_a_compressed_body_is_415_saying_so(api: ApiClient, encoding: str) -> None:
    response = await api.post(
        f"{API}/conversations",
        None,
        content=b'{"userId": "u", "message": "hi"}',
        headers={"Content-Type": "application/json", "Content-Encoding": encoding},
    )
    assert response.status_code == 415
    assert_error_shape(response.json(), "unsupported_media_type")
    assert "Content-Encoding" in response.json()["error"]["message"]
    assert response.headers["accept-encoding"] == "identity"
    plain = await api.post(
        f"{API}/conversations",
        {"userId": "u", "message": "hi"},
        headers={"Content-Encoding": "identity"},
    )
    assert plain.status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", f"{API}/actions", "GET, HEAD, POST"),
        ("DELETE", f"{API}/actions", "GET, HEAD, POST"),
        ("PATCH", f"{API}/status", "GET, HEAD"),
        ("TRACE", f"{API}/respond", "POST"),
        ("HEAD", f"{API}/conversations", "POST"),
        ("POST", "/v1/models", "GET, HEAD"),
    ],
)
async def test_a_405_allows_every_method_of_the_path(
    api: ApiClient, method: str, path: str, allow: str
) -> None:
    response = await api.http.request(
        method, path, headers={"Authorization": f"Bearer {ADMIN_KEY}"}
    )
    assert response.status_code == 405
    assert response.headers["allow"] == allow


@pytest.mark.parametrize("path", [f"{API}/status", f"{API}/logs", "/openapi.json", "/"])
async def test_head_answers_as_get_without_the_body(api: ApiClient, path: str) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    get = await api.http.get(path, headers=headers)
    head = await api.http.head(path, headers=headers)
    assert (head.status_code, get.status_code) == (200, 200)
    assert head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]
    assert head.headers["content-length"] == str(len(get.content))
    refused = await api.http.head(path if path.startswith(API) else f"{API}/status")
    assert refused.status_code == 401  # the key is checked as for GET


@pytest.mark.parametrize(
    ("method", "query", "pointer"),
    [
        ("GET", "me/export?userId=%00", "/userId"),
        ("DELETE", "me/data?userId=a%00b", "/userId"),
        ("DELETE", "me/data?userId=%FF", "/query"),  # was the user named U+FFFD
        ("GET", "logs?userId=%ED%A0%80", "/query"),  # a lone surrogate, as UTF-8 bytes
        ("GET", "logs?q=caf%E9", "/query"),  # Latin-1, not UTF-8
        ("GET", "logs?q=a%00b", "/q"),  # the document's pattern for q, as for userId
    ],
)
async def test_a_query_that_is_not_utf8_or_names_nul_is_400(
    api: ApiClient, method: str, query: str, pointer: str
) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    response = await api.http.request(method, f"{API}/{query}", headers=headers)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["details"][0]["pointer"] == pointer
    assert (await api.http.request(method, f"{API}/{query}")).status_code == 401  # key first
    fine = await api.get(f"{API}/logs?q=caf%C3%A9&userId=%E2%9C%93")
    assert fine.status_code == 200


async def test_a_trailing_slash_is_redirected_relative_to_the_request(api: ApiClient) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}", "Host": "evil.example"}
    moved = await api.http.get(f"{API}/status/?a=1", headers=headers)
    assert moved.status_code == 307
    # Relative: never the host a client's Host header names (a cache could serve it to others).
    assert moved.headers["location"] == "../status?a=1"
    followed = await api.http.post(
        f"{API}/conversations/",
        json={"userId": "u", "message": "hi"},
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        follow_redirects=True,
    )
    assert followed.status_code == 200
    assert followed.url.path == f"{API}/conversations"
    assert (await api.get(f"{API}/nothing/")).status_code == 404
    # An encoded slash is part of the segment: `../status` from `/status%2F` named the parent's
    # sibling (`/api/v1/status`), a 404 one redirect later.
    encoded = await api.http.get(f"{API}/status%2F", headers=headers)
    assert encoded.status_code == 404
    assert_error_shape(encoded.json(), "not_found")


async def test_unknown_path_is_404_and_wrong_method_is_405(api: ApiClient) -> None:
    missing = await api.get(f"{API}/nothing-here")
    assert missing.status_code == 404
    assert_error_shape(missing.json(), "not_found")
    wrong = await api.get(f"{API}/conversations")
    assert wrong.status_code == 405
    assert_error_shape(wrong.json(), "method_not_allowed")
    assert "POST" in wrong.headers["allow"]


@pytest.mark.parametrize("path", ["conversations", "respond"])
@pytest.mark.parametrize("body", [{}, {"message": ""}, {"message": 5, "maxTokens": 0}])
async def test_a_missing_user_id_is_named_beside_the_other_problems(
    api: ApiClient, path: str, body: dict[str, Any]
) -> None:
    """An API key's caller must name the user; the 400 for another field says so too, so that
    one answer lists every problem, as its "a JSON pointer per problem" promises."""
    response = await api.post(f"{API}/{path}", body)
    assert response.status_code == 400
    pointers = [d["pointer"] for d in response.json()["error"]["details"]]
    assert pointers[0] == "/userId" and "/message" in pointers
    assert len(pointers) == len(set(pointers))


async def test_unknown_fields_are_ignored(api: ApiClient) -> None:
    response = await api.post(f"{API}/conversations", {"userId": "u", "message": "m", "future": 1})
    assert response.status_code == 200


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=1001", "limit=abc", "since=yesterday", "cursor=%%%"]
)
async def test_bad_log_queries_are_400(api: ApiClient, query: str) -> None:
    response = await api.get(f"{API}/logs?{query}")
    assert response.status_code == 400
    assert_error_shape(response.json(), "invalid_request")
    error = response.json()["error"]
    if query.startswith(("limit", "since")):
        name = query.split("=")[0]
        # The message names the parameter once, as its detail does.
        assert error["message"] == "Invalid input: " + error["details"][0]["message"]
        assert error["message"].startswith(f"Invalid input: query parameter {name}: ")


@pytest.mark.parametrize("path", ["logs", "usage"])
@pytest.mark.parametrize(
    "limit", ["1_0", "+5", "%205", "5%20", "5%0A", "10.0", "1e1", "0x10", "%D9%A3", "", "-"]
)
async def test_an_integer_query_parameter_is_digits_alone(
    api: ApiClient, path: str, limit: str
) -> None:
    """As the document's `type: integer` and a JSON body have it: an optional minus and ASCII
    digits; not what Python's int() also reads (`1_0`, `+5`, ` 5`, `10.0`, `٣`)."""
    response = await api.get(f"{API}/{path}?limit={limit}")
    assert response.status_code == 400, response.text
    assert response.json()["error"]["details"] == [
        {"pointer": "/limit", "message": "query parameter limit: must be an integer"}
    ]


@pytest.mark.parametrize("path", ["logs", "usage"])
async def test_an_integer_query_parameter_may_have_leading_zeros_and_a_minus(
    api: ApiClient, path: str
) -> None:
    assert (await api.get(f"{API}/{path}?limit=05")).status_code == 200
    negative = await api.get(f"{API}/{path}?limit=-5")
    assert negative.json()["error"]["details"] == [
        {"pointer": "/limit", "message": "query parameter limit: must be at least 1"}
    ]


async def test_a_json_body_without_a_content_type_is_read_as_json(api: ApiClient) -> None:
    headers = {"Authorization": "Bearer gpta_test_admin_key_0123456789abcdefghijklmnop"}
    request = api.http.build_request(
        "POST", f"{API}/conversations", content=b'{"userId": "u", "message": "m"}', headers=headers
    )
    assert "content-type" not in request.headers
    assert (await api.http.send(request)).status_code == 200
    empty = api.http.build_request(  # `Content-Type:` with no value is none either
        "POST",
        f"{API}/conversations",
        content=b'{"userId": "u", "message": "m"}',
        headers={**headers, "Content-Type": ""},
    )
    assert (await api.http.send(empty)).status_code == 200
    garbage = api.http.build_request(
        "POST", f"{API}/conversations", content=b"userId=u", headers=headers
    )
    assert (await api.http.send(garbage)).status_code == 400


async def test_a_bad_time_says_how_to_write_one(api: ApiClient) -> None:
    # An offset pasted into a URL: its + is read as a space.
    response = await api.get(f"{API}/logs?since=2026-11-26T00:00:00+01:00")
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert message.startswith("Invalid input: query parameter since: ")
    assert "2026-01-31T12:00:00Z" in message and "%2B" in message
    fine = await api.get(f"{API}/logs?since=2026-11-26T00:00:00%2B01:00")
    assert fine.status_code == 200, fine.text


async def test_an_unexpected_error_keeps_the_connection_open(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """A 500 is an answer like any other: the client's next request on the same keep-alive
    connection is served (the server used to close it, and that request met a reset), and the
    error is logged once."""
    fake = FakeBackend()
    fake.replies.append(RuntimeError("a defect"))
    body = json.dumps({"userId": "u", "message": "m"}).encode()
    request = (
        b"POST /api/v1/gpt/conversations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (ADMIN_KEY.encode(), len(body), body)
    )
    async with served(settings, fake) as server:
        host, port = server.url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            statuses, ids, messages = [], [], []
            for _ in range(2):
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
                answer = json.loads(await reader.readexactly(length))
                statuses.append((int(head.split()[1]), answer.get("error", {}).get("code")))
                ids.append(re.search(rb"(?i)x-request-id: (\S+)", head).group(1).decode())  # type: ignore[union-attr]
                messages.append(answer.get("error", {}).get("message"))
        finally:
            writer.close()
    assert statuses == [(500, "internal_error"), (200, None)]
    # The 500 names its request, as the answer's X-Request-ID and the server's log line do.
    assert messages[0] == f"internal error; the server log has the details (request {ids[0]})"
    logged = [r for r in caplog.records if r.exc_info is not None]
    assert [r.getMessage() for r in logged] == [
        f"unhandled error on POST /api/v1/gpt/conversations (request {ids[0]})"
    ]


async def test_an_error_stays_small_whatever_the_body_held(api: ApiClient) -> None:
    """One problem per bad field made a 400 of 3.8 million characters for a 559 KB body, past
    ChatGPT's 100,000; the list and every text in it are bounded."""
    fields = {f"f{n}": "bogus" for n in range(30_000)} | {"x" * 5000: "bogus"}
    body = {"action": "extract", "parameters": {"text": "hi", "fields": fields}}
    response = await api.post(f"{API}/actions", body)
    assert response.status_code == 400, response.text[:500]
    assert len(response.text) < 20_000
    details = response.json()["error"]["details"]
    assert len(details) == MAX_DETAILS
    assert details[-1]["pointer"] == ""
    more = re.fullmatch(r"and ([\d,]+) more problems", details[-1]["message"])
    assert more and int(more.group(1).replace(",", "")) >= 30_001 - (MAX_DETAILS - 1)
    assert all(len(d["pointer"]) <= 1000 and len(d["message"]) <= 1000 for d in details)
