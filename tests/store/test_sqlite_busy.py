"""A SQLite file locked by another process: requests wait GPTACTIONS_SQLITE_BUSY_TIMEOUT, then
fail with 503 and Retry-After (not after 30 s), and are served again once the lock is gone."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from gptactions.config import Settings
from gptactions.llm.fake import FakeBackend
from tests.conftest import ADMIN_KEY, running_app

CONVERSATIONS = "/api/v1/gpt/conversations"
BODY = {"userId": "locked", "message": "hello"}


async def test_a_locked_file_is_a_503_after_the_busy_timeout_then_served(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    settings = Settings(
        database_url=f"sqlite:///{path}", api_key=ADMIN_KEY, sqlite_busy_timeout=0.2
    )
    async with running_app(settings, FakeBackend()) as api:
        async with api.runtime.database.engine.connect() as connection:
            waits = (await connection.exec_driver_sql("PRAGMA busy_timeout")).scalar()
        assert waits == 200  # milliseconds: the setting reaches every connection
        assert (await api.post(CONVERSATIONS, BODY)).status_code == 200
        # Another process holding the write lock, as a long `sqlite3` session or a backup would.
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            locked = await api.post(CONVERSATIONS, BODY)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert locked.status_code == 503, locked.text
        assert locked.json()["error"]["code"] == "database_unavailable"
        assert int(locked.headers["retry-after"]) >= 1
        assert (await api.post(CONVERSATIONS, BODY)).status_code == 200
        rows = (await api.get("/api/v1/gpt/logs", params={"userId": "locked"})).json()
    assert len(rows) == 2  # the refused call left nothing behind
