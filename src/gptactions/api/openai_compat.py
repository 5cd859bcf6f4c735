"""The OpenAI-compatible API under /v1: chat completions and models, in OpenAI's exact shapes.

Any OpenAI client (the official SDKs, LangChain, LiteLLM…) works with a base URL of
`http://host:8000/v1` and one of this server's keys; the keys, scopes, tenants, rate limits and
the log are those of the rest of the API. Errors under /v1 are in OpenAI's shape,
`{"error": {"message", "type", "param", "code"}}`, because that is what OpenAI clients parse;
they are translated from the API's one error shape on their way out (`OpenAIErrors`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

from fastapi import APIRouter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gptactions.api.deps import AnyCaller, ChatCaller, ChatCompletionBody, RuntimeDep
from gptactions.api.direct import DirectRoute
from gptactions.api.errors import backend_status
from gptactions.api.sse import EventStreamResponse
from gptactions.llm.base import BackendError, ToolCall, Usage
from gptactions.services.completions import Completion, CompletionStream, ModelInfo

log = logging.getLogger(__name__)

PREFIX = "/v1"
TAG = "OpenAI-compatible"
router = APIRouter(prefix=PREFIX, tags=[TAG], route_class=DirectRoute)


@router.get("/models", operation_id="listModels")
async def list_models(_caller: AnyCaller, runtime: RuntimeDep) -> dict[str, Any]:
    """List the models: the configured backends, the default first."""
    return {"object": "list", "data": [_model(m) for m in runtime.completions.models()]}


@router.get("/models/{model}", operation_id="retrieveModel")
async def retrieve_model(model: str, _caller: AnyCaller, runtime: RuntimeDep) -> dict[str, Any]:
    """Retrieve one model by its id."""
    return _model(runtime.completions.model(model))


@router.post("/chat/completions", operation_id="createChatCompletion")
async def create_chat_completion(
    body: ChatCompletionBody, caller: ChatCaller, runtime: RuntimeDep
) -> Any:
    """Create a chat completion, whole or streamed (`stream: true`), as OpenAI's API does."""
    call, legacy = body.to_call(), body.legacy_functions
    if body.stream:
        stream = await runtime.completions.open_stream(caller, call)
        return EventStreamResponse(
            completion_events(stream, include_usage=body.include_usage, legacy=legacy),
            on_close=stream.aclose,
        )
    return _completion(await runtime.completions.complete(caller, call), legacy=legacy)


def _model(info: ModelInfo) -> dict[str, Any]:
    return {"id": info.id, "object": "model", "created": info.created, "owned_by": info.owned_by}


def _usage(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        # As OpenAI reports its prompt cache (LiteLLM and others read it for costs).
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    }


def _tool_call(call: ToolCall, *, piece: bool = False) -> dict[str, Any]:
    """A tool call as a message carries it, or (`piece`) as a stream's delta does."""
    wire: dict[str, Any] = {"index": call.index} if piece else {}
    function: dict[str, str] = {}
    if call.id or not piece:
        wire.update(id=call.id, type="function")
    if call.name or not piece:
        function["name"] = call.name
    function["arguments"] = call.arguments
    wire["function"] = function
    return wire


def _function_call(call: ToolCall, *, piece: bool = False) -> dict[str, str]:
    """A call in OpenAI's legacy form, `function_call`: its name (in a stream's first piece
    only) and arguments."""
    wire = {"name": call.name} if call.name or not piece else {}
    wire["arguments"] = call.arguments
    return wire


def _finish(reason: str, *, legacy: bool) -> str:
    """How the reply ended; a call is `function_call` in the legacy form."""
    return "function_call" if legacy and reason == "tool_calls" else reason


def _completion(completion: Completion, *, legacy: bool = False) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": None if completion.tool_calls and not completion.text else completion.text,
        "refusal": None,
    }
    if completion.tool_calls and legacy:
        # The legacy form has one call per reply: the first.
        message["function_call"] = _function_call(completion.tool_calls[0])
    elif completion.tool_calls:
        message["tool_calls"] = [_tool_call(call) for call in completion.tool_calls]
    return {
        "id": completion.id,
        "object": "chat.completion",
        "created": completion.created,
        "model": completion.model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": _finish(completion.finish_reason, legacy=legacy),
            }
        ],
        "usage": _usage(completion.usage),
    }


def _data(payload: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()


async def completion_events(
    stream: CompletionStream, *, include_usage: bool, legacy: bool = False
) -> AsyncGenerator[bytes, None]:
    """The `chat.completion.chunk` events of a streamed completion, then `data: [DONE]`;
    `legacy`: a call as `function_call` pieces (the first call's), as OpenAI's legacy form.

    A failure after the stream began is an event carrying an OpenAI error, which OpenAI's SDKs
    raise, in place of the rest of the stream.
    """

    def chunk(delta: dict[str, Any], finish: str | None = None, *, choices: bool = True) -> bytes:
        payload: dict[str, Any] = {
            "id": stream.id,
            "object": "chat.completion.chunk",
            "created": stream.created,
            "model": stream.model,
            "system_fingerprint": None,
            "choices": (
                [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
                if choices
                else []
            ),
        }
        if include_usage:
            payload["usage"] = None
        return _data(payload)

    yield chunk({"role": "assistant", "content": ""})
    try:
        async with aclosing(stream.chunks()) as pieces:
            async for piece in pieces:
                if piece.done:
                    break
                delta: dict[str, Any] = {}
                if piece.text:
                    delta["content"] = piece.text
                calls = piece.tool_calls
                if calls and legacy:
                    first = [c for c in calls if c.index == 0]
                    if first:
                        delta["function_call"] = _function_call(first[0], piece=True)
                elif calls:
                    delta["tool_calls"] = [_tool_call(c, piece=True) for c in calls]
                if delta or not calls:
                    yield chunk(delta)
    except BackendError as error:
        status, code = backend_status(error)
        yield _data(openai_error(status, error.message, code))
        return
    except Exception:
        log.exception("a streamed completion failed")
        yield _data(openai_error(500, "internal error; the server log has the details"))
        return
    completion = stream.completion
    assert completion is not None
    yield chunk({}, _finish(completion.finish_reason, legacy=legacy))
    if include_usage:
        final = json.loads(chunk({}, choices=False).decode().removeprefix("data: "))
        final["usage"] = _usage(completion.usage)
        yield _data(final)
    yield b"data: [DONE]\n\n"


# Errors in OpenAI's shape

_TYPES = {
    401: "invalid_request_error",
    403: "permission_error",
    429: "requests",
}
_CODES = {
    "invalid_request": None,
    "unauthorized": "invalid_api_key",
    "forbidden": "insufficient_permissions",
    "not_found": "unknown_url",
    "rate_limited": "rate_limit_exceeded",
    "token_limit_exceeded": "rate_limit_exceeded",
}


def _param(pointer: str) -> str | None:
    """`/messages/0/content` as OpenAI names parameters: `messages[0].content`."""
    param = ""
    for part in pointer.split("/")[1:]:
        part = part.replace("~1", "/").replace("~0", "~")
        param += f"[{part}]" if part.isdigit() else f".{part}"
    return param.lstrip(".") or None


def openai_error(
    status: int, message: str, code: str | None = None, pointer: str | None = None
) -> dict[str, Any]:
    """An error body in OpenAI's shape."""
    kind = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    if code == "token_limit_exceeded":
        kind = "tokens"  # OpenAI's type for a tokens-per-window limit; "requests" for a rate
    return {
        "error": {
            "message": message,
            "type": kind,
            "param": _param(pointer) if pointer else None,
            "code": _CODES.get(code, code) if code else None,
        }
    }


def _translate(status: int, body: bytes) -> bytes:
    """An error body of the API's one shape, in OpenAI's."""
    try:
        error = json.loads(body)["error"]
        details = error.get("details") or []
        pointer = details[0].get("pointer") if details else None
        translated = openai_error(status, str(error["message"]), error.get("code"), pointer)
    except (ValueError, KeyError, TypeError, AttributeError, IndexError):
        translated = openai_error(status, body.decode("utf-8", "replace") or "error")
    return json.dumps(translated).encode()


class OpenAIErrors:
    """Answers errors under /v1 in OpenAI's shape, whatever produced them.

    Routes, dependencies, the body guard and the router all answer in the API's one shape; this
    outermost middleware rewrites those answers (and an unexpected exception's 500) for /v1, so
    the one shape stays produced in one place and OpenAI's is derived from it here.
    """

    def __init__(self, app: ASGIApp, *, prefix: str = PREFIX) -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path != self.prefix and not path.startswith(self.prefix + "/"):
            await self.app(scope, receive, send)
            return
        held: Message | None = None
        parts: list[bytes] = []
        started = False

        async def translating_send(message: Message) -> None:
            nonlocal held, started
            if message["type"] == "http.response.start":
                started = True
                headers = dict(message.get("headers", []))
                is_json = headers.get(b"content-type", b"").startswith(b"application/json")
                if message["status"] >= 400 and is_json:
                    held = message
                    return
            elif message["type"] == "http.response.body" and held is not None:
                parts.append(message.get("body", b""))
                if message.get("more_body", False):
                    return
                body = _translate(held["status"], b"".join(parts))
                kept = [(k, v) for k, v in held.get("headers", []) if k != b"content-length"]
                kept.append((b"content-length", str(len(body)).encode()))
                await send({**held, "headers": kept})
                await send({"type": "http.response.body", "body": body})
                held = None
                return
            await send(message)

        try:
            await self.app(scope, receive, translating_send)
        except Exception:
            if not started:
                body = json.dumps(
                    openai_error(500, "internal error; the server log has the details")
                ).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
            raise
