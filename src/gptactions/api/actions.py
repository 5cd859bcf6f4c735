"""The seed's action operation: POST /api/v1/gpt/actions."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from gptactions.api.deps import ActionsCaller, RuntimeDep
from gptactions.api.schemas import ActionRequest
from gptactions.services.action_runs import ActionCall

router = APIRouter(prefix="/api/v1/gpt")


@router.post("/actions", operation_id="triggerAction")
async def trigger_action(
    body: ActionRequest, caller: ActionsCaller, runtime: RuntimeDep
) -> dict[str, Any]:
    """Trigger a specific GPT action."""
    outcome = await runtime.actions.run(
        caller,
        ActionCall(body.action, body.parameters, user_id=body.userId, model=body.model),
    )
    return {"success": outcome.success, "result": outcome.result, "data": outcome.data}
