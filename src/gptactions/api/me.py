"""The caller's own identity and data: GET /me, GET /me/export, DELETE /me/data."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from gptactions.api.deps import AnyCaller, RuntimeDep
from gptactions.api.logs import log_item, rfc3339
from gptactions.api.schemas import USER_ID_FILTER_MAX_LENGTH

router = APIRouter(prefix="/api/v1/gpt")

UserIdQuery = Annotated[str | None, Query(min_length=1, max_length=USER_ID_FILTER_MAX_LENGTH)]


@router.get("/me", operation_id="getMe")
async def me(caller: AnyCaller) -> dict[str, Any]:
    """Who the caller is: the signed-in user of an OAuth token, or an API key."""
    return {
        "userId": caller.user_id,
        "authentication": "oauth" if caller.user_id is not None else "apiKey",
        "name": caller.name,
        "tenant": caller.tenant,
        "scopes": sorted(caller.scopes),
    }


@router.get("/me/export", operation_id="exportMyData")
async def export(caller: AnyCaller, runtime: RuntimeDep, userId: UserIdQuery = None) -> Any:
    """Everything stored about the user: their conversations and interactions."""
    data = await runtime.personal.export(caller, userId)
    return {
        "userId": data.user_id,
        "conversations": [
            {
                "conversationId": c.id,
                "createdAt": rfc3339(c.created_at),
                "updatedAt": rfc3339(c.updated_at),
            }
            for c in data.conversations
        ],
        "interactions": [log_item(entry) for entry in data.interactions],
    }


@router.delete("/me/data", operation_id="deleteMyData")
async def erase(caller: AnyCaller, runtime: RuntimeDep, userId: UserIdQuery = None) -> Any:
    """Erase the user's conversations and interactions (the erasure is logged, not the content)."""
    erased = await runtime.personal.erase(caller, userId)
    return {
        "userId": erased.user_id,
        "deletedConversations": erased.conversations,
        "deletedInteractions": erased.interactions,
    }
