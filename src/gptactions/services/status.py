"""Server status: uptime, version, backends and database health."""

from __future__ import annotations

import time
from dataclasses import dataclass

from gptactions import __version__
from gptactions.llm.base import BackendState
from gptactions.llm.router import BackendRouter
from gptactions.services.keys import Principal
from gptactions.store.db import Database


def human_duration(seconds: float) -> str:
    """`3h 12m 5s`, `2d 0h 1m 0s`, `42s`: the largest unit first, down to seconds."""
    remaining = int(seconds)
    days, remaining = divmod(remaining, 86_400)
    hours, remaining = divmod(remaining, 3_600)
    minutes, secs = divmod(remaining, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m")]
    while parts and parts[0][0] == 0:
        parts.pop(0)
    return " ".join(f"{value}{unit}" for value, unit in [*parts, (secs, "s")])


@dataclass(frozen=True)
class Status:
    """What `GET /status` reports."""

    status: str
    uptime: str
    uptime_seconds: int
    version: str
    backend: str
    model: str
    database: str
    backends: list[BackendState]


class StatusService:
    """Answers `GET /status`."""

    def __init__(self, database: Database, router: BackendRouter) -> None:
        self._database = database
        self._router = router
        self._started = time.monotonic()

    async def problems(self) -> dict[str, str]:
        """What keeps the server from taking requests, by dependency; empty when it is ready."""
        if not await self._database.ping():
            return {"database": f"unreachable: {self._database.outage.last_error}"}
        if not self._database.ready:
            return {"database": self._database.waiting_for}
        return {}

    async def status(self, caller: Principal) -> Status:
        """`online` when the database answers and a backend is reachable.

        Only admin keys see the backends' errors: an upstream's error text may quote the request
        that caused it, which may be another tenant's.
        """
        database_ok = await self._database.ping()
        states = await self._router.states()
        default = states[0]
        healthy = database_ok and any(state.reachable for state in states)
        uptime = time.monotonic() - self._started
        return Status(
            status="online" if healthy else "degraded",
            uptime=human_duration(uptime),
            uptime_seconds=int(uptime),
            version=__version__,
            backend=default.name,
            model=default.model,
            database="ok" if database_ok else "unreachable",
            backends=[state.for_caller(details=caller.is_admin) for state in states],
        )
