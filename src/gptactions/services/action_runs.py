"""Running actions: validate the parameters, run the handler, record the call."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

from gptactions.llm.base import BackendError, Usage
from gptactions.llm.router import BackendRouter, UnknownModel
from gptactions.services.actions import (
    ActionContext,
    ActionOutcome,
    ActionRegistry,
    UnknownAction,
)
from gptactions.services.errors import Problem, invalid, unknown_model
from gptactions.services.interactions import InteractionRecorder, NewInteraction
from gptactions.services.keys import Principal


@dataclass(frozen=True)
class ActionCall:
    """A request to run an action."""

    action: str
    parameters: dict[str, Any]
    user_id: str | None = None
    model: str | None = None


class ActionService:
    """Runs actions from the registry and records every call in the log."""

    def __init__(
        self,
        registry: ActionRegistry,
        router: BackendRouter,
        recorder: InteractionRecorder,
        *,
        max_tokens_limit: int | None = None,
    ) -> None:
        self.registry = registry
        self._router = router
        self._max_tokens = max_tokens_limit
        self._recorder = recorder

    async def run(self, principal: Principal, call: ActionCall) -> ActionOutcome:
        """Run the action; the outcome is returned once its interaction is committed."""
        try:
            definition = self.registry.get(call.action)
        except UnknownAction as error:
            available = ", ".join(error.available)
            raise invalid(
                f"unknown action {error.name!r}; available actions: {available}",
                Problem("/action", f"must be one of: {available}"),
            ) from None
        problems = self.registry.validate(call.action, call.parameters)
        if problems:
            raise invalid(
                f"invalid parameters for action {call.action!r}",
                *(Problem(p.pointer, p.message) for p in problems),
            )
        if call.model is not None:
            try:
                self._router.resolve(call.model)
            except UnknownModel as error:
                raise unknown_model(error) from None
        started = time.perf_counter()
        try:
            outcome = await definition.handler(
                ActionContext(self._router, call.model, self._max_tokens), call.parameters
            )
        except BackendError as error:
            await self._record(principal, call, "", "error", error.message, Usage(), started)
            raise
        except asyncio.CancelledError:
            # The client went away; the call is still recorded, shielded from the cancellation.
            await asyncio.shield(
                self._record(
                    principal, call, "", "cancelled", "the client disconnected", Usage(), started
                )
            )
            raise
        await self._record(
            principal,
            call,
            outcome.result,
            "ok" if outcome.success else "failed",
            None if outcome.success else outcome.result,
            outcome.usage,
            started,
            backend=outcome.backend,
            model=outcome.model,
        )
        return outcome

    async def _record(
        self,
        principal: Principal,
        call: ActionCall,
        reply: str,
        status: str,
        error: str | None,
        usage: Usage,
        started: float,
        *,
        backend: str = "",
        model: str = "",
    ) -> None:
        await self._recorder.record(
            NewInteraction(
                principal=principal,
                kind="action",
                action=call.action,
                user_id=call.user_id or principal.name,
                message=json.dumps(call.parameters, ensure_ascii=False, sort_keys=True),
                reply=reply,
                status=status,
                error=error,
                backend=backend or None,
                model=model or None,
                latency_ms=round((time.perf_counter() - started) * 1000),
                usage=usage,
            )
        )
