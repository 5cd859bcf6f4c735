"""Running actions, for the API and the command line alike: check the call, run it, record it."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from gptactions.llm.base import BackendError, tracked_progress
from gptactions.llm.router import BackendRouter, UnknownModel
from gptactions.services.actions.parameters import PreparedParameters
from gptactions.services.actions.registry import (
    ActionContext,
    ActionDefinition,
    ActionOutcome,
    ActionRegistry,
    UnknownAction,
)
from gptactions.services.errors import Problem, check_text, invalid_input, unknown_model
from gptactions.services.interactions import (
    FinishReason,
    InteractionKind,
    InteractionLog,
    InteractionStatus,
    NewInteraction,
)
from gptactions.services.keys import Principal
from gptactions.services.limits import estimate_tokens, give_back
from gptactions.services.templates import TemplateRenderer


@dataclass(frozen=True)
class ActionCall:
    """A request to run an action."""

    action: str
    parameters: dict[str, Any]
    user_id: str | None = None
    model: str | None = None
    deadline: float | None = None
    """The loop time by which generation must end (`GenerationRequest.deadline`)."""
    max_tokens: int | None = None
    """The request's `maxTokens`: the most tokens any one generation of the action may take."""


class ActionService:
    """Runs actions from the registry and records every call in the log."""

    def __init__(
        self,
        registry: ActionRegistry,
        router: BackendRouter,
        log: InteractionLog,
        *,
        max_tokens_limit: int | None = None,
        templates: TemplateRenderer | None = None,
    ) -> None:
        self.registry = registry
        self._templates = templates
        self._router = router
        self._max_tokens = max_tokens_limit
        self._log = log

    def definition(self, name: str) -> ActionDefinition:
        """The action by name; a 400 naming the available ones if there is none."""
        try:
            return self.registry.get(name)
        except UnknownAction as error:
            raise invalid_input(
                Problem("/action", f"must be one of: {', '.join(error.available)}")
            ) from None

    def check(self, call: ActionCall) -> ActionDefinition:
        """The call's action, once its parameters and model are known good; a 400 if not."""
        return self._prepare(call)[0]

    def _prepare(self, call: ActionCall) -> tuple[ActionDefinition, PreparedParameters]:
        """The call's action and the parameters its handler gets; a 400 when they are bad."""
        check_text(
            ("/action", call.action),
            ("/parameters", call.parameters),
            ("/userId", call.user_id),
            ("/model", call.model),
        )
        definition = self.definition(call.action)
        prepared = self.registry.prepare(call.action, call.parameters)
        if prepared.problems:
            raise invalid_input(*prepared.problems)
        if call.model is not None:
            try:
                self._router.resolve(call.model)
            except UnknownModel as error:
                raise unknown_model(error) from None
        return definition, prepared

    async def run(self, principal: Principal, call: ActionCall) -> ActionOutcome:
        """Run the action; the outcome is returned once its interaction is committed.

        The call is admitted first, against the caller's token limit: it reserves its worst
        case, its parameters' tokens (estimated: the action's prompt holds them) and the most
        one generation may take (its maxTokens, else the server's `max_tokens_limit`).
        Recording the call settles the reservation; a call that ends with nothing recorded
        gives it back.
        """
        limits = [n for n in (self._max_tokens, call.max_tokens) if n is not None]
        most = min(limits, default=None)
        reservation = await self._log.admit(principal, lambda: self._worst_case(call, most))
        try:
            definition, prepared = self._prepare(call)
            started = time.perf_counter()
            context = ActionContext(
                self._router,
                call.model,
                most,
                self._templates,
                call.deadline,
                server_max_tokens=self._max_tokens,
                cache_scope=principal.cache_scope,
            )
            try:
                with tracked_progress() as progress:
                    outcome = await definition.handler(
                        context, definition.normalized(prepared.parameters)
                    )
            except asyncio.CancelledError:
                # The client went away (or the server is stopping): record the abandoned call,
                # with what the model had written and the tokens its generations used (a
                # retry's too).
                partial = await progress.so_far()
                generated = ActionOutcome(
                    False,
                    partial.text,
                    usage=partial.usage,
                    backend=partial.backend,
                    model=partial.model,
                )
                await self._log.record_abandoned(
                    _interaction(principal, call, started, generated), reservation=reservation
                )
                raise
            except Exception as error:
                # A backend's failure, or a defect (the answer is a 500): in the log all the same.
                said = error.message if isinstance(error, BackendError) else "internal error"
                spent = ActionOutcome(False, "", usage=(await progress.so_far()).usage)
                failed = _interaction(principal, call, started, spent)
                await self._log.record(
                    replace(failed, status=InteractionStatus.ERROR, error=said),
                    reservation=reservation,
                )
                raise
            if prepared.warnings:
                outcome = replace(outcome, warnings=(*prepared.warnings, *outcome.warnings))
            await self._log.record(
                _interaction(principal, call, started, outcome), reservation=reservation
            )
            return outcome
        finally:
            await give_back(reservation)  # recorded: settled, and this does nothing

    def _worst_case(self, call: ActionCall, most: int | None) -> int:
        """The tokens a call may take: its parameters' (estimated) and one generation's most
        (the default model's context window when nothing else caps it)."""
        parameters = json.dumps(call.parameters, ensure_ascii=False, default=str)
        return estimate_tokens(parameters) + (most or self._router.context_window())


def _interaction(
    principal: Principal, call: ActionCall, started: float, outcome: ActionOutcome | None = None
) -> NewInteraction:
    """The call as an interaction of the log: `ok`, or `failed` when its output was out of form.

    Without an outcome (the call ended in an error) the reply is empty.
    """
    outcome = outcome or ActionOutcome(False, "")
    return NewInteraction(
        principal=principal,
        kind=InteractionKind.ACTION,
        action=call.action,
        user_id=call.user_id or principal.name,
        message=json.dumps(call.parameters, ensure_ascii=False, sort_keys=True),
        reply=outcome.result,
        status=InteractionStatus.OK if outcome.success else InteractionStatus.FAILED,
        error=None if outcome.success else outcome.result,
        backend=outcome.backend or None,
        model=outcome.model or None,
        latency_ms=round((time.perf_counter() - started) * 1000),
        usage=outcome.usage,
        finish_reason=FinishReason.of(outcome.finish_reason) if outcome.finish_reason else None,
    )


def parse_parameter_options(
    definition: ActionDefinition, pairs: Iterable[str], params_json: str | None = None
) -> dict[str, Any]:
    """Parameters from the command line: a JSON object, then `key=value` pairs over it.

    A value is taken as text when the schema says the property is a string, and as JSON
    otherwise (so `maxWords=50` is a number and `labels=["a","b"]` a list); a value that is not
    JSON stays text, for the schema check to report.
    """
    parameters: dict[str, Any] = {}
    if params_json:
        try:
            loaded = json.loads(params_json)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--params-json is not valid JSON: {exc.msg}") from None
        if not isinstance(loaded, dict):
            raise ValueError("--params-json must be a JSON object")
        parameters.update(loaded)
    properties = definition.parameters.get("properties", {})
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--param {pair!r} is not of the form key=value")
        kind = (
            properties.get(key, {}).get("type") if isinstance(properties.get(key), dict) else None
        )
        if kind == "string":
            parameters[key] = raw
            continue
        try:
            parameters[key] = json.loads(raw)
        except json.JSONDecodeError:
            parameters[key] = raw
    return parameters
