"""The seed's conversation operations: POST /api/v1/gpt/conversations and /respond."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from gptactions.api.deps import ChatCaller, ConversationBody, Deadline, RuntimeDep
from gptactions.api.direct import DirectRoute
from gptactions.api.responses import ConversationResponse, Usage
from gptactions.api.schemas import ConversationRequest
from gptactions.api.sse import stream_reply, wants_event_stream
from gptactions.runtime import Runtime
from gptactions.services.conversations import Reply, Turn
from gptactions.services.errors import Problem, invalid
from gptactions.services.interactions import FinishReason
from gptactions.services.keys import Principal
from gptactions.services.sizing import cap

router = APIRouter(prefix="/api/v1/gpt", route_class=DirectRoute)


def _turn(
    body: ConversationRequest,
    caller: Principal,
    runtime: Runtime,
    deadline: float | None,
    *,
    continuing: bool,
) -> Turn:
    user_id = caller.acting_as(body.userId)
    if user_id is None:
        raise invalid("Invalid input: userId: is required", Problem("/userId", "is required"))
    body.check_limits(runtime.settings)
    return Turn(
        user_id=user_id,
        message=body.message,
        conversation_id=body.conversationId if continuing else None,
        max_tokens=body.maxTokens,
        temperature=body.temperature,
        repeat_penalty=body.repeatPenalty,
        model=body.model,
        deadline=deadline,
    )


def _body(reply: Reply) -> ConversationResponse:
    return ConversationResponse(
        conversation_id=reply.conversation_id,
        reply=reply.reply,
        model=reply.model,
        usage=Usage(
            prompt_tokens=reply.usage.prompt_tokens,
            completion_tokens=reply.usage.completion_tokens,
            cached_tokens=reply.usage.cached_tokens,
        ),
        latency_ms=reply.latency_ms,
        finish_reason=reply.finish_reason,
        truncated=reply.finish_reason in (FinishReason.LENGTH, FinishReason.DEADLINE),
    )


def _capped(body: ConversationResponse, max_chars: int) -> dict[str, Any]:
    return cap(body.wire(), max_chars, ("reply",))


def reply_body(reply: Reply, max_chars: int) -> dict[str, Any]:
    """The answer's body (and a stream's `done` event), within the response size limit."""
    return _capped(_body(reply), max_chars)


def _answer(reply: Reply, max_chars: int) -> Response | dict[str, Any]:
    """The JSON answer: written once, straight from the model, when its text fits the size
    limit; else shortened as `_reply` does."""
    body = _body(reply)
    written = body.wire_json()
    if len(written) > max_chars:
        return _capped(body, max_chars)
    return Response(written, media_type="application/json")


async def _converse(
    request: Request,
    body: ConversationRequest,
    caller: Principal,
    runtime: Runtime,
    deadline: float | None,
    *,
    new: bool,
) -> Any:
    """A whole JSON reply, or Server-Sent Events when the client accepts them."""
    turn = _turn(body, caller, runtime, deadline, continuing=not new)
    max_chars = runtime.settings.max_response_chars
    if wants_event_stream(request):
        stream = await runtime.conversations.open_stream(caller, turn, new=new)
        return stream_reply(stream, lambda reply: reply_body(reply, max_chars))
    if new:
        return _answer(await runtime.conversations.start(caller, turn), max_chars)
    return _answer(await runtime.conversations.respond(caller, turn), max_chars)


@router.post("/conversations", operation_id="startConversation")
async def start_conversation(
    request: Request,
    caller: ChatCaller,
    body: ConversationBody,
    runtime: RuntimeDep,
    deadline: Deadline,
) -> Any:
    """Start a new GPT conversation."""
    return await _converse(request, body, caller, runtime, deadline, new=True)


@router.post("/respond", operation_id="respond")
async def respond(
    request: Request,
    caller: ChatCaller,
    body: ConversationBody,
    runtime: RuntimeDep,
    deadline: Deadline,
) -> Any:
    """Process a user input and return GPT's response."""
    return await _converse(request, body, caller, runtime, deadline, new=False)
