"""Conversation ids: `conv_` and a UUIDv7, so ids made one after the other sort in that order."""

from __future__ import annotations

import uuid

from gptactions.services.conversations import _new_conversation_id, uuid7_hex


def test_a_conversation_id_is_conv_and_a_version_7_uuid() -> None:
    ident = _new_conversation_id()
    assert ident.startswith("conv_") and len(ident) == 37
    parsed = uuid.UUID(ident.removeprefix("conv_"))
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122


def test_ids_follow_their_time_and_differ_within_one_millisecond() -> None:
    moments = [1_700_000_000_000 + step for step in (0, 1, 2, 1000, 86_400_000)]
    ids = [uuid7_hex(moment) for moment in moments]
    assert ids == sorted(ids)
    assert all(int(ident[:12], 16) == moment for ident, moment in zip(ids, moments, strict=True))
    same = {uuid7_hex(1_700_000_000_000) for _ in range(1000)}
    assert len(same) == 1000  # 74 random bits each
