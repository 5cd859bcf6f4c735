"""The caller's own identity and data: GET /me, GET /me/export, DELETE /me/data."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from gptactions.api.deps import AnyCaller, RuntimeDep
from gptactions.api.direct import DirectRoute
from gptactions.api.logs import LONGEST_CURSOR, log_item, next_link, rfc3339
from gptactions.api.responses import Erasure, ExportedConversation, MeResponse, MyDataExport
from gptactions.api.schemas import CURSOR_MAX_LENGTH, NulFree, check_user_id
from gptactions.services.personal import Export, conversations_after, interactions_after
from gptactions.services.sizing import fit, json_length

router = APIRouter(prefix="/api/v1/gpt", route_class=DirectRoute)

UserIdQuery = Annotated[NulFree, Query(min_length=1)]
"""Whose data an API key asks for; at most GPTACTIONS_MAX_USER_ID_LENGTH (`check_user_id`)."""


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
    request: Request,
    caller: AnyCaller,
    runtime: RuntimeDep,
    userId: UserIdQuery = None,
    cursor: Annotated[str | None, Query(min_length=1, max_length=CURSOR_MAX_LENGTH)] = None,
) -> JSONResponse:
    """Everything stored about the user: their conversations, then their interactions, in pages
    within GPTACTIONS_MAX_RESPONSE_CHARS, the next one's cursor in `nextCursor` (and the Link
    header, as /logs)."""
    check_user_id(userId, runtime.settings)
    data = await runtime.personal.export(caller, userId, cursor)
    budget = runtime.settings.max_response_chars
    body, next_cursor = _export_page(data, budget, None)
    if next_cursor is not None:
        # Measured again with room for the cursor, which the body carries in place of null.
        body, next_cursor = _export_page(data, budget, LONGEST_CURSOR)
    return JSONResponse(
        {**body, "nextCursor": next_cursor}, headers=next_link(request, next_cursor)
    )


def _export_page(
    data: Export, budget: int, cursor: str | None
) -> tuple[dict[str, Any], str | None]:
    """The page of `data` that fits `budget` with `cursor` as its `nextCursor`, and the cursor of
    the page that follows it (None when it is the last)."""
    body = MyDataExport(
        user_id=data.user_id, conversations=[], interactions=[], next_cursor=cursor
    ).wire()
    rows = [
        ExportedConversation(
            conversation_id=c.id,
            created_at=rfc3339(c.created_at),
            updated_at=rfc3339(c.updated_at),
        ).wire()
        for c in data.conversations
    ]
    # Each list's brackets are counted by `fit` as well as in the empty body.
    body["conversations"], cut_short = fit(rows, budget - json_length(body) + 2)
    if cut_short or data.more_conversations:
        return body, conversations_after(data.conversations[len(body["conversations"]) - 1])
    room = budget - json_length(body) + 2
    items = [log_item(entry) for entry in data.interactions]
    if items and body["conversations"] and json_length(items[:1]) > room:
        # Conversations filled this page: the interactions start on the next one.
        return body, interactions_after(None)
    body["interactions"], cut_short = fit(items, room)
    if cut_short or data.more_interactions:
        return body, interactions_after(data.interactions[len(body["interactions"]) - 1])
    return body, None


@router.delete("/me/data", operation_id="deleteMyData")
async def erase(
    caller: AnyCaller, runtime: RuntimeDep, userId: UserIdQuery = None
) -> dict[str, Any]:
    """Erase the user's conversations and interactions (the erasure is logged, not the content)."""
    check_user_id(userId, runtime.settings)
    erased = await runtime.personal.erase(caller, userId)
    return Erasure(
        user_id=erased.user_id,
        deleted_conversations=erased.conversations,
        deleted_interactions=erased.interactions,
    ).wire()
