"""`Database.ping`: callers at once share one probe, and each reads the probe it waited for."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gptactions.store.db import Database


async def test_callers_waking_after_a_new_probe_began_read_the_one_they_waited_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A probe ends; before the callers it answered wake up, another caller starts the next
    one. Each woken caller answered from the probe it waited for (it read the newest, not yet
    done: InvalidStateError, a 500 from /status under load)."""
    database = Database(f"sqlite:///{tmp_path}/p.db")
    probes = 0

    async def probe() -> bool:
        nonlocal probes
        probes += 1
        await asyncio.sleep(0)
        return True

    monkeypatch.setattr(database, "_ping", probe)

    async def caller() -> list[bool]:
        # The first caller a probe wakes asks again at once: a new probe, before the others
        # the same probe answered have woken.
        return [await database.ping() for _ in range(50)]

    try:
        answers = await asyncio.gather(*(caller() for _ in range(10)))
        assert answers == [[True] * 50] * 10
        assert probes < 50 * 10  # shared, not one probe per caller
    finally:
        await database.close()
