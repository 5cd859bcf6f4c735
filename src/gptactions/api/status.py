"""The seed's status operation, GET /api/v1/gpt/status."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from gptactions.api.deps import AnyCaller, RuntimeDep

router = APIRouter(prefix="/api/v1/gpt")


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
