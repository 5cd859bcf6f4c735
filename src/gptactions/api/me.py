"""The caller's own identity and data: GET /me, GET /me/export, DELETE /me/data."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from gptactions.api.deps import AnyCaller, RuntimeDep
from gptactions.api.logs import log_model, rfc3339
from gptactions.api.responses import Erasure, ExportedConversation, MeResponse, MyDataExport
from gptactions.api.schemas import USER_ID_FILTER_MAX_LENGTH

router = APIRouter(prefix="/api/v1/gpt")

UserIdQuery = Annotated[str | None, Query(min_length=1, max_length=USER_ID_FILTER_MAX_LENGTH)]


@router.get("/me", operation_id="getMe")
async def me(caller: AnyCaller) -> dict[str, Any]:
    """Who the caller is: the signed-in user of an OAuth token, or an API key."""
    return MeResponse(
        user_id=caller.user_id,
        authentication="oauth" if caller.user_id is not None else "apiKey",
        name=caller.name,
        tenant=caller.tenant,
        scopes=sorted(caller.scopes),
    ).wire()


@router.get("/me/export", operation_id="exportMyData")
async def export(
    caller: AnyCaller, runtime: RuntimeDep, userId: UserIdQuery = None
) -> dict[str, Any]:
    """Everything stored about the user: their conversations and interactions."""
    data = await runtime.personal.export(caller, userId)
    return MyDataExport(
        user_id=data.user_id,
        conversations=[
            ExportedConversation(
                conversation_id=c.id,
                created_at=rfc3339(c.created_at),
                updated_at=rfc3339(c.updated_at),
            )
            for c in data.conversations
        ],
        interactions=[log_model(entry) for entry in data.interactions],
    ).wire()


@router.delete("/me/data", operation_id="deleteMyData")
async def erase(
    caller: AnyCaller, runtime: RuntimeDep, userId: UserIdQuery = None
) -> dict[str, Any]:
    """Erase the user's conversations and interactions (the erasure is logged, not the content)."""
    erased = await runtime.personal.erase(caller, userId)
    return Erasure(
        user_id=erased.user_id,
        deleted_conversations=erased.conversations,
        deleted_interactions=erased.interactions,
    ).wire()
