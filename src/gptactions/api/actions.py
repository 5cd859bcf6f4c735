"""The seed's action operation, POST /api/v1/gpt/actions, and the list of actions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from gptactions.api.deps import ActionBody, ActionsCaller, Deadline, RuntimeDep
from gptactions.api.direct import DirectRoute
from gptactions.api.logs import next_link
from gptactions.api.openapi_actions import describe_actions
from gptactions.api.responses import ActionResponse
from gptactions.services.actions import ActionCall, ActionOutcome
from gptactions.services.actions.registry import ACTION_NAME_PATTERN
from gptactions.services.interactions import FinishReason
from gptactions.services.sizing import cap, fit, json_length

router = APIRouter(prefix="/api/v1/gpt", route_class=DirectRoute)


@router.post("/actions", operation_id="triggerAction")
async def trigger_action(
    caller: ActionsCaller, body: ActionBody, runtime: RuntimeDep, deadline: Deadline
) -> dict[str, Any]:
    """Trigger a specific GPT action."""
    body.check_limits(runtime.settings)
    outcome = await runtime.actions.run(
        caller,
        ActionCall(
            body.action,
            body.parameters,
            user_id=caller.acting_as(body.userId),
            model=body.model,
            deadline=deadline,
            max_tokens=body.maxTokens,
        ),
    )
    return action_body(outcome, runtime.settings.max_response_chars)


def action_body(
    outcome: ActionOutcome, max_chars: int, warnings: Sequence[str] | None = None
) -> dict[str, Any]:
    """`POST /actions`' answer to `outcome` (MCP's action tools answer it too), within
    `max_chars`; `warnings` in place of the outcome's own (MCP names the arguments its way)."""
    finish = FinishReason.of(outcome.finish_reason) if outcome.finish_reason else None
    answer = ActionResponse(
        success=outcome.success,
        result=outcome.result,
        data=outcome.data,
        finish_reason=finish,
        truncated=outcome.cut(),
        warnings=list(outcome.warnings if warnings is None else warnings) or None,
    ).wire()
    # The parsed value repeats the result's text: it goes first when the answer is too long.
    return cap(answer, max_chars, ("result",), dropped=("data",))


CURSOR_PATTERN = f"^{ACTION_NAME_PATTERN.pattern}$"
"""What `GET /actions` takes as its cursor (an action's name); the document says the same."""
LIST_CURSOR_MAX_LENGTH = 64
"""The longest action name (`ACTION_NAME_PATTERN`), so the longest cursor of `GET /actions`."""


@router.get("/actions", operation_id="listActions")
async def list_actions(
    request: Request,
    caller: ActionsCaller,
    runtime: RuntimeDep,
    cursor: Annotated[
        str | None, Query(min_length=1, max_length=LIST_CURSOR_MAX_LENGTH, pattern=CURSOR_PATTERN)
    ] = None,
) -> JSONResponse:
    """List the available actions, with their descriptions and parameter schemas, by name, in
    pages within GPTACTIONS_MAX_RESPONSE_CHARS (the next one's cursor in `nextCursor`, and the
    Link header, as /logs)."""
    listed = describe_actions(runtime.registry)
    rows = [a for a in listed["actions"] if cursor is None or a["name"] > cursor]
    budget = runtime.settings.max_response_chars
    listed["actions"], cut_short = _fit_actions(listed, rows, budget, None)
    if cut_short:
        # Measured again with room for the cursor, which the body carries in place of null.
        listed["actions"], _ = _fit_actions(listed, rows, budget, "x" * LIST_CURSOR_MAX_LENGTH)
    listed["nextCursor"] = listed["actions"][-1]["name"] if cut_short else None
    return JSONResponse(listed, headers=next_link(request, listed["nextCursor"]))


def _fit_actions(
    listed: dict[str, Any], rows: list[dict[str, Any]], budget: int, cursor: str | None
) -> tuple[list[dict[str, Any]], bool]:
    """The leading `rows` that fit `budget` in `listed` with `cursor` as its `nextCursor`, and
    whether any was left out."""
    empty = json_length({**listed, "actions": [], "nextCursor": cursor})
    return fit(rows, budget - empty + 2, ("description",))
