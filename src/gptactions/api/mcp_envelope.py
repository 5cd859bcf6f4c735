"""What `/mcp` answers itself, before the MCP SDK reads a message: JSON-RPC 2.0 errors.

An MCP client reads the body of a refused POST only when it is a JSON-RPC error object (the
`mcp` SDK's client: anything else becomes "Server returned an error response"), so every
refusal here is one, at its HTTP status and with its headers (`Retry-After`). Messages are one
line in the server's words: the SDK's own answer to a malformed message was a -32602 carrying a
multi-line pydantic report, and to a body that is not JSON a plain-text 400.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import mcp_types as types
import pydantic_core
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS
from pydantic import ValidationError
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import Message, Receive, Scope

from gptactions.api.deps import is_json
from gptactions.services.errors import ServiceError

REFUSED = -32010
"""A request the endpoint refused before the MCP server took it (no valid key, the rate limit, the
database down): `data.code` says why, in the API's words. In JSON-RPC's implementation-defined
range, the part MCP leaves to implementations (-32000 to -32019)."""

PROTOCOL_VERSIONS = (*HANDSHAKE_PROTOCOL_VERSIONS, *MODERN_PROTOCOL_VERSIONS)
"""The revisions served: those of the `initialize` handshake, and the per-request ones."""
VERSION_HEADER = "mcp-protocol-version"
_LONGEST_SHOWN = 64

RequestId = str | int


@dataclass(frozen=True)
class Unparsed:
    """A body that is not JSON, and where its parser stopped."""

    reason: str


def decoded(body: bytes) -> Any:
    """The body as JSON (parsed as the SDK parses it), or `Unparsed`."""
    try:
        return pydantic_core.from_json(body)
    except ValueError as error:
        return Unparsed(str(error).splitlines()[0] if str(error) else "unreadable")


def request_id(message: Any) -> RequestId | None:
    """The id of a request, to answer it with; None when there is no usable one."""
    if not isinstance(message, dict):
        return None
    value = message.get("id")
    # JSON-RPC's ids, as MCP narrows them: a string or an integer (not null, not true).
    return value if isinstance(value, str) or type(value) is int else None


def jsonrpc_error(
    status: int,
    code: int,
    message: str,
    *,
    answering: RequestId | None = None,
    data: Any = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """A JSON-RPC error object as an HTTP answer."""
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    body = {"jsonrpc": "2.0", "id": answering, "error": error}
    return JSONResponse(body, status, headers=headers)


def refused(error: ServiceError, answering: RequestId | None) -> JSONResponse:
    """A refusal of the endpoint itself (401, 429, 503...), as a JSON-RPC error: its message,
    and in `data` the API's code, status and problems, and when to retry (seconds)."""
    data: dict[str, Any] = {
        "code": error.code,
        "status": error.status,
        "details": [{"pointer": p.pointer, "message": p.message} for p in error.details],
    }
    wait = retry_after(error)
    if wait is not None:
        data["retryAfter"] = wait
    return jsonrpc_error(
        error.status,
        REFUSED,
        error.message,
        answering=answering,
        data=data,
        headers=error.headers or None,
    )


def retry_after(error: ServiceError) -> int | None:
    """The seconds after which to retry, as the error's `Retry-After` says; None without one."""
    value = (error.headers or {}).get("Retry-After", "")
    return int(value) if value.isascii() and value.isdigit() else None


def media_refusal(headers: Headers, answering: RequestId | None) -> JSONResponse | None:
    """A 415 for a body the REST API would refuse as one (compressed, or not JSON), as a
    JSON-RPC error; None for a JSON body (no Content-Type is read as JSON, as REST reads it).

    The SDK answered a Content-Type other than JSON with a plain-text 400, and took a body said
    to be gzip as it was, and a gzip one as "not valid JSON".
    """
    encoding = headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        error = ServiceError(
            f"the body must not be compressed (Content-Encoding: {encoding}); send it as is",
            415,
            "unsupported_media_type",
            headers={"Accept-Encoding": "identity"},
        )
        return refused(error, answering)
    content_type = (headers.get("content-type") or "").strip()
    if content_type and not is_json(content_type):  # an empty one is none
        error = ServiceError(
            f"the body must be JSON (Content-Type: application/json), got {content_type}",
            415,
            "unsupported_media_type",
        )
        return refused(error, answering)
    return None


def as_json(scope: Scope) -> Scope:
    """The request with the Content-Type the SDK requires (`application/json` exactly), for a body
    `media_refusal` let through: without one, or with a JSON type spelled otherwise."""
    headers = [(name, value) for name, value in scope["headers"] if name != b"content-type"]
    return {**scope, "headers": [*headers, (b"content-type", b"application/json")]}


def envelope_refusal(headers: Headers, message: Any) -> JSONResponse | None:
    """A 400 for a protocol version not served or a body that is not one JSON-RPC message, a
    -32602 for a `tools/call` without a tool's name as a string or arguments as an object;
    None for anything the SDK is to read."""
    version = headers.get(VERSION_HEADER)
    if version is not None and version not in PROTOCOL_VERSIONS:
        supported = ", ".join(PROTOCOL_VERSIONS)
        shown = version if len(version) <= _LONGEST_SHOWN else version[:_LONGEST_SHOWN] + "…"
        return jsonrpc_error(
            400,
            types.UNSUPPORTED_PROTOCOL_VERSION,
            f"unsupported MCP protocol version {shown!r} (MCP-Protocol-Version header); "
            f"this server supports {supported}",
            answering=request_id(message),
            # The shape MCP's -32022 has, from which a client picks a version to retry with.
            data={"supported": list(PROTOCOL_VERSIONS), "requested": version},
        )
    if isinstance(message, Unparsed):
        why = f"Parse error: the body is not valid JSON ({message.reason})"
        return jsonrpc_error(400, types.PARSE_ERROR, why, answering=None)
    if _is_valid(message):
        wrong = _tool_call_problem(message)
        if wrong is None:
            return None
        # The SDK's -32602 said "Invalid request parameters", and nothing of which one; at the
        # status it answered with (an unknown tool's -32602 has it too).
        return jsonrpc_error(
            200, types.INVALID_PARAMS, f"Invalid params: {wrong}", answering=request_id(message)
        )
    return jsonrpc_error(
        400,
        types.INVALID_REQUEST,
        f"Invalid Request: {_invalid_because(message)}",
        answering=request_id(message),
    )


def _is_valid(message: Any) -> bool:
    """Whether the SDK can read `message` as it was meant: a request whose id is not one
    (null, a list) would be read as a notification, and never answered."""
    if (
        isinstance(message, dict)
        and "method" in message
        and "id" in message
        and request_id(message) is None
    ):
        return False
    try:
        types.jsonrpc_message_adapter.validate_python(message, by_name=False)
    except ValidationError:
        return False
    return True


def _tool_call_problem(message: dict[str, Any]) -> str | None:
    """What is wrong with a `tools/call` request's params, in a line; None if nothing is."""
    if message.get("method") != "tools/call" or "id" not in message:
        return None
    params = message.get("params") or {}
    if "name" not in params:
        return "params.name: is required (the tool to call)"
    if not isinstance(params["name"], str):
        return "params.name: must be a string"
    if not isinstance(params.get("arguments"), dict | None):
        return "params.arguments: must be an object"
    return None


def _invalid_because(message: Any) -> str:
    """Why a JSON body is not a JSON-RPC 2.0 message, in a line."""
    if isinstance(message, list):
        return "batches (JSON arrays) are not accepted; send one JSON-RPC message per request"
    if not isinstance(message, dict):
        return "the body must be a JSON-RPC 2.0 message, a JSON object"
    if message.get("jsonrpc") != "2.0":
        return 'the member "jsonrpc" must be exactly "2.0"'
    if "method" in message:
        if not isinstance(message["method"], str):
            return 'the member "method" must be a string'
        if "id" in message and request_id(message) is None:
            return 'the member "id" must be a string or an integer'
        if not isinstance(message.get("params"), dict | None):
            return 'the member "params" must be an object'
    elif "result" not in message and "error" not in message:
        return 'the member "method" is missing'
    return "not a JSON-RPC 2.0 request, notification or response"


def replaying(body: bytes, receive: Receive) -> Receive:
    """`receive` for an app that reads a body already read: the body, then what comes next
    (the client's disconnection)."""
    pending = True

    async def replay() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
