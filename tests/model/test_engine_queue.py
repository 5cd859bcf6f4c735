"""Requests cancelled while they wait for a sequence leave the embedded model's queue at once:
they neither keep new requests out with a 503 nor show in the queue depth."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from gptactions.llm.base import Chunk
from gptactions.llm.local import LocalBackend
from tests.model.test_batching import endless_job, first_piece

pytestmark = pytest.mark.model

MAX_QUEUE = 3


@pytest.fixture(scope="module")
def small_backend() -> Iterator[LocalBackend]:
    """One sequence, a few requests allowed to wait."""
    backend = LocalBackend(parallel=1, max_queue=MAX_QUEUE, context_window=512, threads=1)
    asyncio.run(backend.start())
    yield backend
    asyncio.run(backend.close())


async def test_cancelled_waiting_requests_free_the_queue_while_the_sequences_stay_busy(
    small_backend: LocalBackend,
) -> None:
    engine = small_backend.engine
    holders = [endless_job(small_backend, f"Say x {n}.") for n in range(small_backend.parallel)]
    queued = [endless_job(small_backend, f"Say y {n}.") for n in range(MAX_QUEUE)]
    newcomer = endless_job(small_backend, "Say hi.")
    newcomer.max_tokens = 2
    try:
        for job in holders:
            engine.submit(job)
        for job in holders:
            assert isinstance(await first_piece(job), Chunk)  # every sequence is taken
        for job in queued:
            engine.submit(job)
        assert engine.stats().queue_depth == MAX_QUEUE
        for job in queued:
            engine.cancel(job)  # the clients went away (or reached their deadline)

        state = engine.stats()
        assert (state.sequences_in_use, state.queue_depth) == (small_backend.parallel, 0)
        engine.submit(newcomer)  # not refused: nobody is waiting
        state = engine.stats()
        assert (state.sequences_in_use, state.queue_depth) == (small_backend.parallel, 1)
        assert all(not job.cancelled for job in holders)  # the long generations go on
        assert all(job.outbox.queue.empty() for job in queued)  # nothing for those who left
    finally:
        for job in holders:
            engine.cancel(job)
    pieces = [await asyncio.wait_for(first_piece(newcomer), timeout=300) for _ in range(3)]
    assert [p.done for p in pieces if isinstance(p, Chunk)] == [False, False, True]
    assert all(job.fed == 0 for job in queued)  # the cancelled ones were never admitted
