"""The request deadline with the embedded model's queue full: a 503 with Retry-After in time."""

from __future__ import annotations

import asyncio

import pytest

from gptactions.config import Settings
from gptactions.llm.base import Chunk
from gptactions.llm.local import LocalBackend
from tests.conftest import _KeepLoaded, running_app
from tests.model.test_batching import endless_job, first_piece

pytestmark = pytest.mark.model

API = "/api/v1/gpt"


async def test_a_request_still_queued_at_its_deadline_is_a_503_with_retry_after(
    settings: Settings, local_backend: LocalBackend
) -> None:
    quick = settings.model_copy(update={"request_deadline": 3.0})
    engine = local_backend.engine
    holders = [endless_job(local_backend, f"Say x {n}.") for n in range(local_backend.parallel)]
    async with running_app(quick, _KeepLoaded(local_backend)) as api:  # type: ignore[arg-type]
        try:
            for job in holders:
                engine.submit(job)
            for job in holders:
                assert isinstance(await first_piece(job), Chunk)  # every sequence is taken
            for operation in ("conversations", "respond"):
                answer = await api.post(f"{API}/{operation}", {"userId": "u", "message": "Hello"})
                assert answer.status_code == 503, answer.text
                assert int(answer.headers["retry-after"]) >= 1
                assert answer.json()["error"]["code"] == "deadline_exceeded"
            assert all(not job.cancelled for job in holders)  # only the late ones were withdrawn
        finally:
            for job in holders:
                engine.cancel(job)
        # With the sequences free again, the model answers as usual.
        answer = await asyncio.wait_for(
            api.post(f"{API}/conversations", {"userId": "u", "message": "Hi", "maxTokens": 4}),
            timeout=300,
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["finishReason"] in ("stop", "length")
        logged = (await api.get(f"{API}/logs?kind=conversation")).json()
        assert [entry["status"] for entry in logged] == ["ok", "error", "error"]
