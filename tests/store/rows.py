"""Bulk rows for storage tests: interactions inserted in one executemany, not through the API."""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert

from gptactions.store.db import Database
from gptactions.store.models import Conversation, Interaction

BASE_TIME = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Shape:
    """How generated rows spread over tenants, users, conversations and timestamps."""

    tenants: int = 1
    users: int = 10
    conversations: int = 50
    rows_per_timestamp: int = 1
    skewed: bool = False

    def tenant(self, conversation: int) -> str:
        """The tenant of a conversation: round-robin, or (skewed) tenant k holding 2^(k-1)."""
        if self.skewed:
            return f"tenant-{min(conversation.bit_length(), self.tenants - 1)}"
        return f"tenant-{conversation % self.tenants}"


def interaction_row(seconds: int, message: str, reply: str = "", **fields: Any) -> dict[str, Any]:
    """One interaction `seconds` after BASE_TIME, of user `someone` in tenant `default`, unless
    `fields` say otherwise."""
    return {
        "created_at": BASE_TIME + timedelta(seconds=seconds),
        "tenant": "default",
        "key_id": None,
        "user_id": "someone",
        "conversation_id": None,
        "kind": "conversation",
        "action": None,
        "message": message,
        "reply": reply,
        "status": "ok",
        "error": None,
        "backend": "fake",
        "model": "fake-model",
        "latency_ms": 1,
        "prompt_tokens": 1,
        "completion_tokens": 1,
        **fields,
    }


def interaction_rows(count: int, shape: Shape = Shape()) -> Iterator[dict[str, Any]]:
    """`count` interactions; `rows_per_timestamp` consecutive rows share one `created_at`."""
    for n in range(count):
        conversation = n % shape.conversations
        yield interaction_row(
            n // shape.rows_per_timestamp,
            f"message {n}",
            f"reply {n}",
            tenant=shape.tenant(conversation),
            user_id=f"user-{conversation % shape.users}",
            conversation_id=f"conv-{conversation}",
        )


def conversation_rows(shape: Shape) -> list[dict[str, Any]]:
    """The conversations `interaction_rows` refers to, in the same tenants and users."""
    return [
        {
            "id": f"conv-{c}",
            "tenant": shape.tenant(c),
            "user_id": f"user-{c % shape.users}",
            "created_at": BASE_TIME,
            "updated_at": BASE_TIME,
        }
        for c in range(shape.conversations)
    ]


async def bulk_insert(
    database: Database,
    count: int,
    shape: Shape = Shape(),
    *,
    shuffle: bool = False,
    batch: int = 5_000,
) -> None:
    """Insert the conversations and `count` interactions, `batch` rows per executemany.

    `shuffle` inserts the rows out of time order, so that ids do not follow `created_at`.
    """
    async with database.session() as session:
        await session.execute(insert(Conversation), conversation_rows(shape))
    rows: Iterable[dict[str, Any]] = interaction_rows(count, shape)
    if shuffle:
        rows = list(rows)
        random.Random(count).shuffle(rows)
    for chunk in _chunks(rows, batch):
        async with database.session() as session:
            await session.execute(insert(Interaction), chunk)


def _chunks(rows: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
