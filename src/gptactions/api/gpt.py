"""The seed's conversation, status and log operations under /api/v1/gpt."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from gptactions.api.deps import AnyCaller, ChatCaller, LogsCaller, RuntimeDep
from gptactions.api.schemas import ConversationRequest
from gptactions.api.sse import stream_reply, wants_event_stream
from gptactions.runtime import Runtime
from gptactions.services.conversations import Reply, Turn
from gptactions.services.errors import Problem, invalid
from gptactions.services.interactions import LogEntry, LogQuery
from gptactions.services.keys import Principal

router = APIRouter(prefix="/api/v1/gpt")


def rfc3339(moment: datetime) -> str:
    """`2026-11-25T18:03:04.123Z`: UTC, millisecond precision."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _turn(body: ConversationRequest, runtime: Runtime, *, continuing: bool) -> Turn:
    body.check_limits(runtime.settings)
    return Turn(
        user_id=body.userId,
        message=body.message,
        conversation_id=body.conversationId if continuing else None,
        max_tokens=body.maxTokens,
        temperature=body.temperature,
        model=body.model,
    )


def _reply(reply: Reply) -> dict[str, Any]:
    return {
        "conversationId": reply.conversation_id,
        "reply": reply.reply,
        "model": reply.model,
        "usage": {
            "promptTokens": reply.usage.prompt_tokens,
            "completionTokens": reply.usage.completion_tokens,
        },
        "latencyMs": reply.latency_ms,
    }


async def _converse(
    request: Request, body: ConversationRequest, caller: Principal, runtime: Runtime, *, new: bool
) -> Any:
    """A whole JSON reply, or Server-Sent Events when the client accepts them."""
    turn = _turn(body, runtime, continuing=not new)
    if wants_event_stream(request):
        stream = await runtime.conversations.open_stream(caller, turn, new=new)
        return stream_reply(stream, _reply)
    if new:
        return _reply(await runtime.conversations.start(caller, turn))
    return _reply(await runtime.conversations.respond(caller, turn))


@router.post("/conversations", operation_id="startConversation")
async def start_conversation(
    request: Request, body: ConversationRequest, caller: ChatCaller, runtime: RuntimeDep
) -> Any:
    """Start a new GPT conversation."""
    return await _converse(request, body, caller, runtime, new=True)


@router.post("/respond", operation_id="respond")
async def respond(
    request: Request, body: ConversationRequest, caller: ChatCaller, runtime: RuntimeDep
) -> Any:
    """Process a user input and return GPT's response."""
    return await _converse(request, body, caller, runtime, new=False)


@router.get("/status", operation_id="getStatus")
async def status(_caller: AnyCaller, runtime: RuntimeDep) -> dict[str, Any]:
    """Retrieve server or service status."""
    state = await runtime.status.status()
    return {
        "status": state.status,
        "uptime": state.uptime,
        "uptimeSeconds": state.uptime_seconds,
        "version": state.version,
        "backend": state.backend,
        "model": state.model,
        "database": state.database,
        "backends": [
            {
                "name": b.name,
                "kind": b.kind,
                "model": b.model,
                "reachable": b.reachable,
                "lastError": b.last_error,
                "latencyMs": None if b.latency_ms is None else round(b.latency_ms),
            }
            for b in state.backends
        ],
    }


def _log_item(entry: LogEntry) -> dict[str, Any]:
    return {
        "timestamp": rfc3339(entry.timestamp),
        "userId": entry.user_id,
        "message": entry.message,
        "reply": entry.reply,
        "id": entry.id,
        "conversationId": entry.conversation_id,
        "kind": entry.kind,
        "action": entry.action,
        "status": entry.status,
        "error": entry.error,
        "model": entry.model,
        "latencyMs": entry.latency_ms,
        "promptTokens": entry.prompt_tokens,
        "completionTokens": entry.completion_tokens,
    }


@router.get("/logs", operation_id="getLogs")
async def logs(
    request: Request,
    caller: LogsCaller,
    runtime: RuntimeDep,
    userId: Annotated[str | None, Query(min_length=1, max_length=1024)] = None,
    conversationId: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    since: Annotated[datetime | None, Query()] = None,
    until: Annotated[datetime | None, Query()] = None,
    limit: Annotated[int, Query(ge=1)] = 100,
    cursor: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
) -> JSONResponse:
    """Fetch interaction logs."""
    if limit > runtime.settings.logs_max_limit:
        maximum = runtime.settings.logs_max_limit
        raise invalid(
            f"Invalid input: limit: must be at most {maximum}",
            Problem("/limit", f"query parameter limit: must be at most {maximum}"),
        )
    page = await runtime.log.page(
        caller,
        LogQuery(
            user_id=userId,
            conversation_id=conversationId,
            since=_aware(since),
            until=_aware(until),
            limit=limit,
            cursor=cursor,
        ),
    )
    headers = {}
    if page.next_cursor:
        params = [(k, v) for k, v in request.query_params.multi_items() if k != "cursor"]
        params.append(("cursor", page.next_cursor))
        headers["Link"] = f'<{request.url.path}?{urlencode(params)}>; rel="next"'
    return JSONResponse([_log_item(e) for e in page.entries], headers=headers)


def _aware(moment: datetime | None) -> datetime | None:
    """Times without an offset are read as UTC."""
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment
