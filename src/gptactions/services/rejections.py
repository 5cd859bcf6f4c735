"""Requests refused before the model, kept in the log so a GPT's builder sees what it sent.

Only an authenticated caller's refusals are recorded (in its tenant, as its user); the body is
kept up to `MAX_BODY_BYTES`, with a visible marker where it was cut.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from gptactions.services.interactions import (
    InteractionKind,
    InteractionLog,
    InteractionStatus,
    NewInteraction,
)
from gptactions.services.keys import Principal
from gptactions.services.sizing import marker
from gptactions.store.text import has_unpaired_surrogate, storable

RECORDED_STATUSES = frozenset({400, 403, 404, 413, 415, 429})
"""The refusals that are recorded: the caller can fix what it sent, and should see it."""

MAX_BODY_BYTES = 8 * 1024
"""The most of a refused request's body (and of its error answer) the log keeps."""

_MAX_USER_ID = 256

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rejection:
    """A refused request: what it called, what it sent, and the error it got."""

    method: str
    path: str
    """The path called, with its query string."""
    status: int
    body: bytes
    """The body as received, at least its first `MAX_BODY_BYTES` bytes."""
    body_size: int
    """How many bytes the body had (or announced, when it was refused unread)."""
    answer: bytes
    """The error answer as sent."""
    latency_ms: int = 0


async def record_rejection(log: InteractionLog, principal: Principal, rejection: Rejection) -> None:
    """Record the refusal in the caller's log; one that cannot be is one warning line (the
    refusal is answered all the same; a traceback here would hold the body, as parameters)."""
    try:
        await log.record(rejected_interaction(principal, rejection))
    except Exception as error:
        logger.warning("a rejected request could not be recorded: %s", type(error).__name__)
        logger.debug("a rejected request could not be recorded", exc_info=True)


def rejected_interaction(principal: Principal, rejection: Rejection) -> NewInteraction:
    """The refusal as an interaction of kind `rejected`, in the caller's tenant."""
    error = _error_text(rejection.answer) or f"HTTP {rejection.status}"
    return NewInteraction(
        principal=principal,
        kind=InteractionKind.REJECTED,
        user_id=_user_id(principal, rejection),
        message=_bounded(rejection.body, rejection.body_size),
        reply=_bounded(rejection.answer, len(rejection.answer)),
        status=InteractionStatus.REJECTED,
        error=error,
        latency_ms=rejection.latency_ms,
        http_status=rejection.status,
        endpoint=storable(f"{rejection.method} {rejection.path}"[:300]),
    )


def _bounded(raw: bytes, size: int) -> str:
    """The bytes as text, cut at `MAX_BODY_BYTES` with a marker; storable in either database."""
    kept = raw[:MAX_BODY_BYTES]
    text = kept.decode("utf-8", errors="replace").replace("\x00", "\ufffd")
    if size > len(kept):
        text += marker(size - len(kept), "bytes")
    return text


def _error_text(answer: bytes) -> str | None:
    """`code: message` of an answer in the one error shape."""
    try:
        error = json.loads(answer)["error"]
        text = f"{error['code']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        return None
    return None if has_unpaired_surrogate(text) else text


def _user_id(principal: Principal, rejection: Rejection) -> str:
    """An OAuth token's own user; else the body's `userId` when it has a usable one; else the
    key's name, as for actions called without one."""
    if principal.user_id is not None:
        return principal.user_id
    try:
        body = json.loads(rejection.body) if len(rejection.body) == rejection.body_size else None
    except (ValueError, RecursionError):
        body = None
    # `userId` of the API's bodies, `user` of OpenAI's (/v1).
    user_id = (body.get("userId") or body.get("user")) if isinstance(body, dict) else None
    # Not one PostgreSQL cannot store (NUL) or UTF-8 cannot encode (a lone surrogate): the
    # refusal would be lost, with a traceback holding the body.
    if (
        isinstance(user_id, str)
        and user_id
        and "\x00" not in user_id
        and not has_unpaired_surrogate(user_id)
    ):
        return user_id[:_MAX_USER_ID]
    return principal.name
