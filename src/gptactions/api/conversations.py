"""The seed's conversation operations: POST /api/v1/gpt/conversations and /respond."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from gptactions.api.deps import ChatCaller, ConversationBody, RuntimeDep
from gptactions.api.responses import ConversationResponse, Usage
from gptactions.api.schemas import ConversationRequest
from gptactions.api.sse import stream_reply, wants_event_stream
from gptactions.runtime import Runtime
from gptactions.services.conversations import Reply, Turn
from gptactions.services.errors import Problem, invalid
from gptactions.services.keys import Principal

router = APIRouter(prefix="/api/v1/gpt")


def _turn(
    body: ConversationRequest, caller: Principal, runtime: Runtime, *, continuing: bool
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
    )


def _reply(reply: Reply) -> dict[str, Any]:
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
    ).wire()


async def _converse(
    request: Request, body: ConversationRequest, caller: Principal, runtime: Runtime, *, new: bool
) -> Any:
    """A whole JSON reply, or Server-Sent Events when the client accepts them."""
    turn = _turn(body, caller, runtime, continuing=not new)
    if wants_event_stream(request):
        stream = await runtime.conversations.open_stream(caller, turn, new=new)
        return stream_reply(stream, _reply)
    if new:
        return _reply(await runtime.conversations.start(caller, turn))
    return _reply(await runtime.conversations.respond(caller, turn))


@router.post("/conversations", operation_id="startConversation")
async def start_conversation(
    request: Request, caller: ChatCaller, body: ConversationBody, runtime: RuntimeDep
) -> Any:
    """Start a new GPT conversation."""
    return await _converse(request, body, caller, runtime, new=True)


@router.post("/respond", operation_id="respond")
async def respond(
    request: Request, caller: ChatCaller, body: ConversationBody, runtime: RuntimeDep
) -> Any:
    """Process a user input and return GPT's response."""
    return await _converse(request, body, caller, runtime, new=False)
