"""The seed's status operation, GET /api/v1/gpt/status."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from gptactions.api.deps import AnyCaller, RuntimeDep
from gptactions.api.direct import DirectRoute
from gptactions.api.responses import BackendStatus, StatusResponse
from gptactions.services.sizing import cap, json_length, shorten

router = APIRouter(prefix="/api/v1/gpt", route_class=DirectRoute)


@router.get("/status", operation_id="getStatus")
async def status(caller: AnyCaller, runtime: RuntimeDep) -> dict[str, Any]:
    """Retrieve server or service status."""
    state = await runtime.status.status(caller)
    body = StatusResponse(
        status=state.status,
        uptime=state.uptime,
        uptime_seconds=state.uptime_seconds,
        version=state.version,
        backend=state.backend,
        model=state.model,
        database=state.database,
        backends=[],
    ).wire()
    body["backends"] = [
        BackendStatus(
            name=b.name,
            kind=b.kind,
            model=b.model,
            reachable=b.reachable,
            state=b.state,
            last_error=b.last_error,
            latency_ms=None if b.latency_ms is None else round(b.latency_ms),
            sequences=b.sequences,
            sequences_in_use=b.sequences_in_use,
            queue_depth=b.queue_depth,
            tokens_per_second=b.tokens_per_second,
        ).wire()
        for b in state.backends
    ]
    return within(body, runtime.settings.max_response_chars)


def within(body: dict[str, Any], budget: int) -> dict[str, Any]:
    """The status within `budget` characters: an upstream's error text (which may quote what it
    answered) shortened in each backend, named in its `truncatedFields`; then `database`'s."""
    if json_length(body) <= budget:
        return body
    backends, body = body["backends"], {**body, "backends": []}
    body = cap(body, budget // 2, ("database",))
    share = (budget - json_length(body)) // max(1, len(backends)) - 1
    body["backends"] = [shorten(b, share, ("lastError",)) for b in backends]
    return body
