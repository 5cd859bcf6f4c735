"""Dependencies of the routes: the runtime, the caller's key checked for a scope, the body."""

from __future__ import annotations

import json
from typing import Annotated, Any, TypeVar
from urllib.parse import unquote_to_bytes

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from gptactions.api.disconnect import generation_deadline
from gptactions.api.openai_schemas import ChatCompletionRequest
from gptactions.api.schemas import ActionRequest, ConversationRequest
from gptactions.runtime import Runtime
from gptactions.services.errors import Problem, ServiceError, check_text
from gptactions.services.keys import Principal, parse_authorization, unread_scheme
from gptactions.services.limits import check_rate
from gptactions.services.oauth import ACCESS_PREFIX

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="gptactions"'}


async def get_runtime(request: Request) -> Runtime:
    """The runtime the app was built with.

    `async` although it does not wait: FastAPI runs a plain `def` dependency in its thread pool,
    a hand-off to another thread and back on every request (~4% of the main thread under load).
    """
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def identify(runtime: Runtime, secret: str) -> Principal | None:
    """Whose API key or OAuth access token `secret` is; None when it is not a valid one."""
    if secret.startswith(ACCESS_PREFIX):
        return await runtime.oauth.authenticate(secret)
    return await runtime.keys.authenticate(secret)


async def get_principal(request: Request, runtime: RuntimeDep) -> Principal:
    """The caller, from the key in the Authorization header; 401 without a valid key."""
    principal = await uncounted_principal(request, runtime)
    try:
        await check_rate(runtime.limiter, principal)
    except ServiceError:
        runtime.metrics.rate_limited.inc()
        raise
    return principal


async def uncounted_principal(request: Request, runtime: Runtime) -> Principal:
    """The caller as `get_principal` finds it, without counting the request against its rate
    limit: for what costs the caller nothing worth limiting (the console's readiness check)."""
    headers = request.headers.getlist("authorization")
    if len(headers) > 1:
        # Which one would count is anybody's guess (a proxy may add its own): neither does.
        raise ServiceError(
            "send one Authorization header; this request has several",
            400,
            "invalid_request",
            details=[Problem("/headers/Authorization", "must be sent once")],
        )
    secret = parse_authorization(headers[0] if headers else None)
    if secret is None:
        raise ServiceError(
            "an API key or an OAuth access token is required: send "
            "'Authorization: Bearer <key or token>'",
            401,
            "unauthorized",
            headers=_CHALLENGE,
        )
    runtime.require_database()
    principal = await identify(runtime, secret)
    if principal is None:
        scheme = unread_scheme(headers[0])
        raise ServiceError(
            "the API key or access token is not valid (unknown, expired or revoked)"
            + (
                f"; the scheme {scheme!r} is not one this server reads: send "
                "'Authorization: Bearer <key or token>', or the key alone"
                if scheme
                else ""
            ),
            401,
            "unauthorized",
            headers={"WWW-Authenticate": 'Bearer realm="gptactions", error="invalid_token"'},
        )
    request.state.principal = principal
    if request.scope["query_string"]:
        check_query_encoding(request.scope["query_string"])
    return principal


def check_query_encoding(raw: bytes) -> None:
    """A 400 for a query string that is not UTF-8 once its %-escapes are decoded.

    Starlette decodes such bytes as U+FFFD: `DELETE /me/data?userId=%FF` erased the data of the
    user named "\ufffd", whichever invalid bytes were sent. Checked once the key is (a request
    without one is a 401 whatever it carries).
    """
    try:
        unquote_to_bytes(raw.replace(b"+", b" ")).decode("utf-8")
    except UnicodeDecodeError:
        raise ServiceError(
            "the query string is not valid UTF-8 once its %-escapes are decoded",
            400,
            "invalid_request",
            details=[Problem("/query", "must be UTF-8, %-encoded")],
        ) from None


def lacks_scope(principal: Principal, scope: str) -> ServiceError:
    """The 403 of a caller without `scope`, naming what it holds: a key, or a user's token."""
    held = "access token" if principal.user_id is not None else "API key"
    # RFC 6750, 3.1: the scope a token needs, for a client that would ask for it.
    challenge = f'Bearer realm="gptactions", error="insufficient_scope", scope="{scope}"'
    return ServiceError(
        f"this {held} lacks the '{scope}' scope",
        403,
        "forbidden",
        headers={"WWW-Authenticate": challenge},
    )


class Require:
    """A dependency that lets only callers holding `scope` (or admin) through; 403 otherwise.

    A class, so the document can tell which scope each route needs (`api/document.py`).
    """

    def __init__(self, scope: str) -> None:
        self.scope = scope

    async def __call__(self, principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        """The caller, when it holds the scope."""
        if not principal.allows(self.scope):
            raise lacks_scope(principal, self.scope)
        return principal


def require(scope: str) -> Require:
    """The dependency that checks for `scope`."""
    return Require(scope)


async def deadline(request: Request) -> float | None:
    """The loop time by which the request's generation must end (GPTACTIONS_REQUEST_DEADLINE).

    `async` for the reason `get_runtime` is: a plain `def` went through the thread pool.
    """
    return generation_deadline(request.scope)


Deadline = Annotated[float | None, Depends(deadline)]
ChatCaller = Annotated[Principal, Depends(require("chat"))]
ActionsCaller = Annotated[Principal, Depends(require("actions"))]
LogsCaller = Annotated[Principal, Depends(require("logs"))]
AnyCaller = Annotated[Principal, Depends(get_principal)]


Model = TypeVar("Model", bound=BaseModel)


def json_body(model: type[Model]) -> Any:
    """A dependency that reads the request's body as `model`, once the caller's key is checked.

    FastAPI reads a body parameter before any dependency runs, so a malformed body was a 400
    before a missing key was a 401; routes take their bodies through this instead, and an
    unauthenticated caller learns nothing of how bodies are read. Then, in order: a compressed
    body (any Content-Encoding but identity) is a 415, a media type other than JSON a 415 (no
    Content-Type is read as JSON), malformed JSON a 400, any string with a lone surrogate a 400
    (no database stores it), and the model's own checks a 400.
    """

    async def read(request: Request, caller: AnyCaller) -> Model:
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            # Read as it is, a gzip body is "not UTF-8": a 400 that hides what to change.
            raise ServiceError(
                f"the body must not be compressed (Content-Encoding: {encoding}); send it as is",
                415,
                "unsupported_media_type",
                headers={"Accept-Encoding": "identity"},
            )
        content_type = request.headers.get("content-type", "").strip()
        if content_type and not is_json(content_type):  # an empty one is none
            raise ServiceError(
                f"the body must be JSON (Content-Type: application/json), got {content_type}",
                415,
                "unsupported_media_type",
            )
        data = _parse_json(await request.body())
        check_text(("", data))
        try:
            return model.model_validate(data)
        except ValidationError as error:
            problems = [{**problem, "loc": ("body", *problem["loc"])} for problem in error.errors()]
            required = getattr(model, "required_of", None)
            if required is not None and isinstance(data, dict):
                missing = [name for name in required(caller) if name not in data]
                problems[:0] = [
                    {"type": "missing", "loc": ("body", name), "msg": "Field required"}
                    for name in missing
                ]
            raise RequestValidationError(problems) from None

    return Depends(read)


def is_json(content_type: str) -> bool:
    """Whether a Content-Type is JSON: `application/json`, or `application/<x>+json`."""
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and "+json" in media)


class _NotJson(ValueError):
    """A token Python's parser accepts and JSON does not."""


def _refuse_constant(name: str) -> Any:
    # Python reads NaN and Infinity, which JSON (RFC 8259) does not have; no check compares them.
    raise _NotJson(f"{name} is not a JSON number")


def _parse_json(raw: bytes) -> Any:
    """The JSON value of a body; the same 400s FastAPI gives for a missing or malformed one."""
    if not raw.strip():
        raise RequestValidationError([{"type": "missing", "loc": ("body",), "msg": "required"}])
    try:
        return json.loads(raw, parse_constant=_refuse_constant)
    except json.JSONDecodeError as error:
        reason = f"{error.msg} (line {error.lineno}, column {error.colno})"
    except UnicodeDecodeError:
        reason = "it is not UTF-8"
    except _NotJson as error:
        reason = str(error)
    except ValueError:  # an integer past Python's limit on digits (sys.get_int_max_str_digits)
        reason = "a number in it has too many digits"
    except RecursionError:
        reason = "it is nested too deeply"
    raise RequestValidationError(
        [{"type": "json_invalid", "loc": ("body",), "msg": "JSON", "ctx": {"error": reason}}]
    )


ConversationBody = Annotated[ConversationRequest, json_body(ConversationRequest)]
ActionBody = Annotated[ActionRequest, json_body(ActionRequest)]
ChatCompletionBody = Annotated[ChatCompletionRequest, json_body(ChatCompletionRequest)]
