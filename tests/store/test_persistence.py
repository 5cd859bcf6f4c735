"""What the API writes stays written: across restarts, concurrent writers, and replicas."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from gptactions.config import Settings
from gptactions.llm.fake import FakeBackend
from gptactions.services.keys import hash_key
from gptactions.store.db import Database
from tests.conftest import ADMIN_KEY, running_app

Factory = Callable[..., Any]


async def _logs(api: Any, key: str = ADMIN_KEY, **params: Any) -> list[dict[str, Any]]:
    response = await api.get("/api/v1/gpt/logs", key, params={"limit": 1000, **params})
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()
    return rows


async def test_interactions_survive_a_restart(app_factory: Factory) -> None:
    async with app_factory() as api:
        started = await api.post("/api/v1/gpt/conversations", {"userId": "u1", "message": "one"})
        assert started.status_code == 200, started.text
        conversation = started.json()["conversationId"]
        body = {"userId": "u1", "message": "two", "conversationId": conversation}
        assert (await api.post("/api/v1/gpt/respond", body)).status_code == 200
        before = await _logs(api)

    fake = FakeBackend()
    async with app_factory(fake) as api:
        after = await _logs(api)
        body = {"userId": "u1", "message": "three", "conversationId": conversation}
        assert (await api.post("/api/v1/gpt/respond", body)).status_code == 200

    assert [row["message"] for row in after] == ["two", "one"]
    assert after == before
    # The restarted app built its prompt from the stored history.
    shown = [m.content for m in fake.requests[0].messages if m.role == "user"]
    assert shown == ["one", "two", "three"]


async def test_concurrent_writers_lose_nothing(app_factory: Factory) -> None:
    count = 20
    async with app_factory(FakeBackend(delay=0.01)) as api:
        responses = await asyncio.gather(
            *(
                api.post("/api/v1/gpt/conversations", {"userId": f"u{n % 3}", "message": f"m{n}"})
                for n in range(count)
            )
        )
        assert [r.status_code for r in responses] == [200] * count, [r.text for r in responses]
        rows = await _logs(api)

    assert sorted(row["message"] for row in rows) == sorted(f"m{n}" for n in range(count))
    conversations = {r.json()["conversationId"] for r in responses}
    assert len(conversations) == count
    assert {row["conversationId"] for row in rows} == conversations
    assert len({row["id"] for row in rows}) == count


async def test_concurrent_writers_in_two_instances_lose_nothing(app_factory: Factory) -> None:
    # Two apps on one database: worker processes on one SQLite file, or replicas on PostgreSQL.
    count = 30
    async with app_factory(FakeBackend(delay=0.01)) as a, app_factory(FakeBackend()) as b:
        instances = (a, b)
        responses = await asyncio.gather(
            *(
                instances[n % 2].post(
                    "/api/v1/gpt/conversations", {"userId": f"u{n % 4}", "message": f"m{n}"}
                )
                for n in range(count)
            )
        )
        assert [r.status_code for r in responses] == [200] * count, [r.text for r in responses]
        rows_a, rows_b = await _logs(a), await _logs(b)

    assert rows_a == rows_b
    assert sorted(row["message"] for row in rows_a) == sorted(f"m{n}" for n in range(count))


async def test_concurrent_turns_of_one_conversation_are_all_kept(app_factory: Factory) -> None:
    async with app_factory() as api:
        started = await api.post("/api/v1/gpt/conversations", {"userId": "u", "message": "first"})
        conversation = started.json()["conversationId"]
        responses = await asyncio.gather(
            *(
                api.post(
                    "/api/v1/gpt/respond",
                    {"userId": "u", "message": f"m{n}", "conversationId": conversation},
                )
                for n in range(10)
            )
        )
        assert [r.status_code for r in responses] == [200] * 10
        rows = await _logs(api, conversationId=conversation)
    assert len(rows) == 11
    assert {row["message"] for row in rows} == {"first"} | {f"m{n}" for n in range(10)}


async def _stored_text(database_url: str) -> bytes:
    """Everything the database holds, as bytes: the SQLite files, or every PostgreSQL row."""
    if database_url.startswith("sqlite"):
        path = Path(database_url.split(":///", 1)[1])
        files = [path, *path.parent.glob(path.name + "-*")]  # -wal and -shm too
        return b"".join(f.read_bytes() for f in files if f.exists())
    database = Database(database_url)
    try:
        async with database.engine.connect() as connection:
            chunks = []
            for table in ("api_keys", "conversations", "interactions", "alembic_version"):
                result = await connection.execute(text(f"SELECT t::text FROM {table} t"))
                chunks.extend(row[0].encode() for row in result)
        return b"\n".join(chunks)
    finally:
        await database.close()


async def test_api_keys_are_stored_only_as_hashes(
    app_factory: Factory, migrated_database_url: str
) -> None:
    async with app_factory() as api:
        secret = await api.key(tenant="acme", name="stored")
        # The key works, so the hash we are about to find is the one authentication uses.
        status = await api.get("/api/v1/gpt/status", secret)
        assert status.status_code == 200

    stored = await _stored_text(migrated_database_url)
    for key in (secret, ADMIN_KEY):
        assert key.encode() not in stored
        assert key[12:].encode() not in stored  # not even the part after the visible prefix
        assert hash_key(key).encode() in stored


@pytest.mark.postgres
async def test_two_replicas_serving_one_conversation_keep_one_history(
    postgres_url: str,
) -> None:
    settings = Settings(database_url=postgres_url, api_key=ADMIN_KEY)
    backends = [FakeBackend(name="a"), FakeBackend(name="b")]
    async with running_app(settings, backends[0]) as a, running_app(settings, backends[1]) as b:
        replicas = [a, b]
        started = await a.post("/api/v1/gpt/conversations", {"userId": "u", "message": "t0"})
        conversation = started.json()["conversationId"]
        for turn in range(1, 8):
            replica = replicas[turn % 2]
            # Odd turns name the conversation; even ones rely on "the user's latest".
            body: dict[str, Any] = {"userId": "u", "message": f"t{turn}"}
            if turn % 2:
                body["conversationId"] = conversation
            response = await replica.post("/api/v1/gpt/respond", body)
            assert response.status_code == 200, response.text
            assert response.json()["conversationId"] == conversation
        logs_a = await _logs(a, conversationId=conversation)
        logs_b = await _logs(b, conversationId=conversation)

    assert logs_a == logs_b
    assert [row["message"] for row in reversed(logs_a)] == [f"t{n}" for n in range(8)]
    # Each replica's last prompt held every earlier turn, whichever replica had stored it.
    for backend, last in zip(backends, (6, 7), strict=True):
        shown = [m.content for m in backend.requests[-1].messages if m.role == "user"]
        assert shown == [f"t{n}" for n in range(last + 1)]
