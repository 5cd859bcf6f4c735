"""The API's one error shape, `{"error": {"code", "message", "details"}}`, produced here only.

The OAuth endpoints whose callers are OAuth clients (token, revocation) answer every error in
RFC 6749's shape instead, `{"error", "error_description"}`, also produced here only: which shape
an error takes is decided by its path, in `error_response`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gptactions.api.methods import allowed_methods, slash_twin
from gptactions.llm.base import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    DeadlineReached,
    PromptTooLong,
)
from gptactions.metrics import CLIENT_CLOSED_REQUEST
from gptactions.services.errors import Problem, ServiceError, invalid_input, json_pointer
from gptactions.store.outage import DatabaseUnavailable

log = logging.getLogger(__name__)

_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    500: "internal_error",
    502: "bad_gateway",
    503: "unavailable",
    504: "gateway_timeout",
}


# The HTTP status and code of each backend failure, looked up by its nearest class (the way
# Starlette finds the handler of an exception): 503 is for a backend that is down or saturated,
# 502 for one that answered with something unusable.
BACKEND_STATUSES: dict[type[BackendError], tuple[int, str]] = {
    PromptTooLong: (400, "prompt_too_long"),
    DeadlineReached: (503, "deadline_exceeded"),
    BackendUnavailable: (503, "backend_unavailable"),
    BackendTimeout: (504, "backend_timeout"),
    BackendError: (502, "bad_gateway"),
}


def backend_status(error: BackendError) -> tuple[int, str]:
    """The HTTP status and error code the API answers a backend's failure with."""
    for cls in type(error).__mro__:
        if cls in BACKEND_STATUSES:
            return BACKEND_STATUSES[cls]
    raise AssertionError("BackendError is in the table")  # pragma: no cover


MAX_DETAILS = 50
"""Problems an error lists; the last entry of a longer list says how many more there were."""
MAX_ERROR_TEXT = 1000
"""Characters of an error's message, and of each problem's pointer and message, at most."""


def error_body(
    status: int, message: str, *, code: str | None = None, details: Sequence[Problem] = ()
) -> dict[str, Any]:
    """The JSON body of an error, bounded whatever the input held: a body of 30,000 bad fields
    was answered with 3.8 million characters, far past ChatGPT's 100,000."""
    listed = [{"pointer": _bounded(p.pointer), "message": _bounded(p.message)} for p in details]
    if len(listed) > MAX_DETAILS:
        more = len(listed) - (MAX_DETAILS - 1)
        listed[MAX_DETAILS - 1 :] = [{"pointer": "", "message": f"and {more:,} more problems"}]
    return {
        "error": {
            "code": code or _CODES.get(status, "error"),
            "message": _bounded(message),
            "details": listed,
        }
    }


def _bounded(text: str) -> str:
    return text if len(text) <= MAX_ERROR_TEXT else text[: MAX_ERROR_TEXT - 1] + "…"


def error_response(
    status: int,
    message: str,
    *,
    code: str | None = None,
    details: Sequence[Problem] = (),
    headers: dict[str, str] | None = None,
    path: str = "",
) -> JSONResponse:
    """An error as a response: in the API's shape, or in OAuth's at an OAuth endpoint (`path`)."""
    if path in OAUTH_ENDPOINTS:
        error = _OAUTH_CODES.get(status, "invalid_request")
        return oauth_error_response(error, message, status, headers)
    return JSONResponse(
        error_body(status, message, code=code, details=details), status, headers=headers
    )


OAUTH_ENDPOINTS = frozenset({"/oauth/token", "/oauth/revoke"})
"""The paths whose every error is in RFC 6749's shape (5.2; RFC 7009, 2.2.1 for revocation)."""

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
"""What an OAuth endpoint's answers carry (RFC 6749, 5.1): no cache keeps a token or code."""

# RFC 6749's codes for the statuses of errors that are not the endpoints' own; any other is
# an `invalid_request` (a wrong method, a body too large: the request is malformed).
_OAUTH_CODES = {500: "server_error", 503: "temporarily_unavailable"}


def oauth_error_response(
    error: str, description: str, status: int = 400, headers: dict[str, str] | None = None
) -> JSONResponse:
    """An OAuth endpoint's error (RFC 6749, 5.2), never cached."""
    body = {"error": error, "error_description": description}
    return JSONResponse(body, status, headers=NO_STORE | (headers or {}))


def _pointer(location: Sequence[int | str]) -> str:
    parts = list(location)
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    return json_pointer(parts)


def validation_problems(errors: Sequence[Any]) -> list[Problem]:
    """Pydantic's errors as the API's problems, each at the place in the body it names.

    A value that matches none of a union's members gets an error from each member, located
    under the member's name (`stop/str`, `stop/list[str]`), which is not in the body. They are
    one problem of the field: "stop: must be a string or an array". When a member took the value
    and failed inside it (`stop/list[str]/1`), that deeper problem is the one to fix.
    """
    order: list[Problem | tuple[Any, ...]] = []
    unions: dict[tuple[Any, ...], list[Problem]] = {}
    for error in errors:
        location = tuple(error.get("loc", ()))
        members = [_is_union_member(part) for part in location]
        plain = tuple(part for part, member in zip(location, members, strict=True) if not member)
        problem = validation_problem({**error, "loc": plain})
        if not any(members):
            order.append(problem)
            continue
        union = location[: members.index(True)]
        if union not in unions:
            unions[union] = []
            order.append(union)
        unions[union].append(problem)
    problems: list[Problem] = []
    for entry in order:
        problems += _union_problems(unions[entry]) if isinstance(entry, tuple) else [entry]
    return problems


def _union_problems(members: list[Problem]) -> list[Problem]:
    """One union's problems: the deepest ones, or the members' words for the field, joined."""
    deepest = max(_depth(problem) for problem in members)
    if any(_depth(problem) < deepest for problem in members):
        return [problem for problem in members if _depth(problem) == deepest]
    first, *others = dict.fromkeys(problem.message for problem in members)
    words = [first, *(message.removeprefix("must be ") for message in others)]
    return [Problem(members[0].pointer, " or ".join(words))]


def _depth(problem: Problem) -> int:
    """How many steps into the body the problem is (its pointer's segments, not its length)."""
    return problem.pointer.count("/")


def _is_union_member(part: Any) -> bool:
    """Whether a location's part names a union's member (pydantic's `str`, `list[str]`,
    `literal['none','auto']`, `ToolChoice`) rather than a field or an index."""
    return isinstance(part, str) and (
        part in _MEMBER_TYPES or (part.endswith("]") and "[" in part) or part[:1].isupper()
    )


_MEMBER_TYPES = frozenset({"str", "int", "float", "bool", "list", "dict", "none", "bytes"})


def validation_problem(error: dict[str, Any]) -> Problem:
    """One of pydantic's errors as a problem of the one error shape, in the API's words."""
    location = error.get("loc", ())
    where = location[0] if location else "body"
    message = str(error.get("msg", "is invalid"))
    if error.get("type") == "json_invalid":
        return Problem("", "the body is not valid JSON: " + str(error.get("ctx", {}).get("error")))
    pointer = _pointer(location)
    if error.get("type") == "missing":
        message = "a JSON object is required as the body" if not pointer else "is required"
    elif error.get("type") in _NOT_AN_OBJECT:
        # Pydantic says "a valid dictionary or instance of ConversationRequest": Python's words.
        message = "the body must be a JSON object" if not pointer else "must be a JSON object"
    elif message.startswith("Value error, "):
        message = message.removeprefix("Value error, ")
    else:
        message = _in_api_words(error) or message
    if where == "query":
        if str(error.get("type", "")).startswith(("datetime_", "date_")):
            # "+01:00" pasted into a URL arrives as " 01:00": the parser's words do not say so.
            message += f"; write a time like {TIME_EXAMPLE}, with a + offset as %2B in a URL"
        message = f"query parameter {location[-1]!s}: {message}"
    return Problem(pointer, message)


TIME_EXAMPLE = "2026-01-31T12:00:00Z"

# Pydantic's kinds of error, said as the rest of the API says them (the actions' parameters,
# `services.actions.registry`): "must be at most 64 characters", not "String should have at
# most 64 characters".
_KINDS = {
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "list_type": "must be an array",
    "bool_parsing": "must be true or false",
    "greater_than_equal": "must be at least {ge}",
    "greater_than": "must be more than {gt}",
    "less_than_equal": "must be at most {le}",
    "less_than": "must be less than {lt}",
    "string_too_long": "must be at most {max_length} characters",
    "too_long": "must be at most {max_length} characters",
    "string_pattern_mismatch": "must match the pattern {pattern}",
    "literal_error": "must be one of: {expected}",
    "enum": "must be one of: {expected}",
    "datetime_parsing": "must be a date and time",
    "datetime_from_date_parsing": "must be a date and time",
    "datetime_type": "must be a date and time",
}


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def _in_api_words(error: dict[str, Any]) -> str | None:
    """Pydantic's message for `error` in the API's words, if it is a kind that has them."""
    kind, context = str(error.get("type", "")), error.get("ctx") or {}
    text = kind.startswith("string_") or isinstance(error.get("input"), str)
    if kind in ("string_too_short", "too_short"):
        least = context.get("min_length", 1)
        if text:
            return "must not be empty" if least == 1 else f"must be at least {least} characters"
        return f"must have at least {_count(least, 'item')}"
    if kind == "too_long" and not text:
        return f"must have at most {_count(context.get('max_length', 0), 'item')}"
    template = _KINDS.get(kind)
    try:
        return template.format(**context) if template else None
    except (KeyError, IndexError):  # a context without what the words name: pydantic's own
        return None


# Pydantic's error types for a value that is not a JSON object where one is expected.
_NOT_AN_OBJECT = frozenset({"model_type", "model_attributes_type", "dict_type"})


async def _validation(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = validation_problems(exc.errors())
    error = invalid_input(*(problems or [Problem("", "invalid input")]))
    return error_response(400, error.message, details=problems)


async def _service(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    return error_response(
        exc.status, exc.message, code=exc.code, details=exc.details, headers=exc.headers or None
    )


async def _backend(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, BackendError)
    headers = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    status, code = backend_status(exc)
    return error_response(status, exc.message, code=code, headers=headers or None)


DATABASE_UNAVAILABLE = "the database is unavailable; retry shortly"
"""The message of every 503 `database_unavailable` (a JSON answer, a stream's error event, MCP)."""


async def _database(request: Request, exc: Exception) -> JSONResponse:
    # No traceback: the database's outage log has already said what is wrong, once.
    assert isinstance(exc, DatabaseUnavailable)
    return error_response(
        503,
        DATABASE_UNAVAILABLE,
        code="database_unavailable",
        headers={"Retry-After": str(exc.retry_after)},
        path=request.url.path,
    )


async def _http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    message = str(exc.detail)
    headers = dict(exc.headers or {})
    if status == 404:
        twin = slash_twin(request.app.router.routes, request.scope)
        if twin is not None:
            return RedirectResponse(twin, 307)
        message = f"no such path: {request.url.path}"
    elif status == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
        # Every route's methods at the path, not only those of the route tried first.
        headers["Allow"] = allowed_methods(request.app.router.routes, request.scope)
    return error_response(status, message, headers=headers or None, path=request.url.path)


async def _client_left(request: Request, _exc: Exception) -> Response:
    # The client closed its connection before its whole request arrived: nobody to answer,
    # nothing wrong here. The status is for the metrics, as nginx logs it ("client closed
    # request"); the server drops the answer.
    log.debug("the client left before sending all of %s %s", request.method, request.url.path)
    return Response(status_code=CLIENT_CLOSED_REQUEST)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    request_id = getattr(request.state, "request_id", None)
    log.exception(
        "unhandled error on %s %s (request %s)", request.method, request.url.path, request_id
    )
    message = (
        f"internal error; the server log has the details (request {request_id})"
        if request_id
        else "internal error; the server log has the details"
    )
    return error_response(500, message, path=request.url.path)


class UnexpectedErrors:
    """An unexpected error's 500, answered on a connection that stays open.

    Starlette's outermost middleware answers such an error as well (`_unexpected`), then raises
    it again for the server, which logs it a second time and closes the connection: a keep-alive
    client's next request on it met a reset. Here, just outside the app's exception handlers, it
    is logged once and answered. One raised after the answer started goes on up: that answer
    cannot be finished, and closing the connection is what tells the client.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception as error:
            if started:
                raise
            response = await _unexpected(Request(scope), error)
            await response(scope, receive, send)


def install_error_handlers(app: FastAPI) -> None:
    """Route every error the app can raise to the one shape (the middleware first added, so
    the innermost: every other one sees its 500 as an answer)."""
    app.add_middleware(UnexpectedErrors)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(ServiceError, _service)
    app.add_exception_handler(BackendError, _backend)
    app.add_exception_handler(DatabaseUnavailable, _database)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(ClientDisconnect, _client_left)
    app.add_exception_handler(Exception, _unexpected)
