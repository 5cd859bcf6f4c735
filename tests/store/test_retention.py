"""Retention: old interactions go in small batches with the conversations left empty, the space
comes back (SQLite), replicas take turns; by hand (`logs purge`), in the background, and backups
(restored as the README says)."""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import subprocess
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, insert, make_url, select, update

from gptactions.config import Settings
from gptactions.llm.base import Chunk, Generation, GenerationRequest
from gptactions.llm.fake import FakeBackend
from gptactions.store.db import Database
from gptactions.store.models import Conversation, Interaction, utcnow
from gptactions.store.retention import purge
from tests.conftest import ADMIN_KEY, fresh_postgres_database, running_app
from tests.test_cli import Ran, gptactions

from .rows import BASE_TIME, Shape, bulk_insert, interaction_rows

SHAPE = Shape(conversations=50)


async def _add_recent(database: Database) -> None:
    """One conversation of today, with one interaction."""
    now = utcnow()
    async with database.session() as session:
        await session.execute(
            insert(Conversation),
            [{"id": "conv-new", "tenant": "tenant-0", "user_id": "u", "updated_at": now}],
        )
        row = next(interaction_rows(1, SHAPE)) | {"conversation_id": "conv-new", "created_at": now}
        await session.execute(insert(Interaction), [row])


async def _counts(database: Database) -> tuple[int, int]:
    async with database.session() as session:
        interactions = await session.scalar(select(func.count()).select_from(Interaction))
        conversations = await session.scalar(select(func.count()).select_from(Conversation))
    return interactions or 0, conversations or 0


async def test_purge_deletes_old_rows_in_batches_and_empty_conversations(
    database_url: str,
) -> None:
    settings = Settings(database_url=database_url, api_key=ADMIN_KEY)
    async with running_app(settings, FakeBackend()) as api:
        database = api.runtime.database
        await bulk_insert(database, 1200, SHAPE)  # one a second from BASE_TIME
        await _add_recent(database)

        # The first 600 go, 100 a batch; every old conversation still has rows.
        done = await purge(database, BASE_TIME + timedelta(seconds=600), batch=100)
        assert (done.interactions, done.conversations) == (600, 0)
        assert await _counts(database) == (601, 51)

        done = await api.runtime.retention.purge_older_than(86_400)
        assert (done.interactions, done.conversations) == (600, 50)
        assert await _counts(database) == (1, 1)
        rows = (await api.get("/api/v1/gpt/logs")).json()
        assert [row["conversationId"] for row in rows] == ["conv-new"]

    if database.is_sqlite:  # a new file gives its pages back after a purge
        with sqlite3.connect(database.location) as connection:
            assert connection.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
            assert connection.execute("PRAGMA freelist_count").fetchone()[0] == 0
        connection.close()


async def test_replicas_purging_together_delete_each_row_once(database_url: str) -> None:
    settings = Settings(database_url=database_url, api_key=ADMIN_KEY)
    async with running_app(settings, FakeBackend()) as api:
        await bulk_insert(api.runtime.database, 1000, SHAPE)
        other = Database(database_url)  # a second replica's engine
        try:
            cutoff = BASE_TIME + timedelta(days=1)
            results = await asyncio.gather(
                purge(api.runtime.database, cutoff, batch=50), purge(other, cutoff, batch=50)
            )
        finally:
            await other.close()
        # Whichever replica got each batch, no row is counted twice and none is left.
        assert sum(r.interactions for r in results) <= 1000
        assert sum(r.conversations for r in results) <= 50
        left = await _counts(api.runtime.database)
        if left != (0, 0):  # a replica that skipped its turn leaves the rest for the next round
            done = await purge(api.runtime.database, cutoff)
            assert sum(r.interactions for r in results) + done.interactions == 1000
        assert await _counts(api.runtime.database) == (0, 0)


async def test_the_background_task_applies_the_retention(database_url: str) -> None:
    settings = Settings(database_url=database_url, api_key=ADMIN_KEY)
    async with running_app(settings, FakeBackend()) as api:
        await bulk_insert(api.runtime.database, 100, SHAPE)
        await _add_recent(api.runtime.database)
    keeping = Settings(database_url=database_url, api_key=ADMIN_KEY, log_retention="30d")
    async with running_app(keeping, FakeBackend()) as api:
        for _ in range(600):  # the first purge runs as the server starts
            if await _counts(api.runtime.database) == (1, 1):
                break
            await asyncio.sleep(0.05)
        assert await _counts(api.runtime.database) == (1, 1)


def _gptactions(*args: str, cwd: Path, url: str | None = None, stdin: str | None = None) -> Ran:
    env = {"GPTACTIONS_DATABASE_URL": url} if url else None
    return gptactions(*args, cwd=cwd, env=env, stdin=stdin)


def test_logs_purge_and_db_backup_from_the_command_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'server.db'}"

    async def load() -> None:
        settings = Settings(database_url=url, api_key=ADMIN_KEY)
        async with running_app(settings, FakeBackend()) as api:
            await bulk_insert(api.runtime.database, 100, SHAPE)
            await _add_recent(api.runtime.database)

    asyncio.run(load())
    purged = _gptactions("logs", "purge", "--older-than", "30d", cwd=tmp_path)
    assert purged.returncode == 0, purged.stderr
    assert "deleted 100 interaction(s)" in purged.stdout
    assert "50 empty conversation(s)" in purged.stdout
    bad = _gptactions("logs", "purge", "--older-than", "soon", cwd=tmp_path)
    assert bad.returncode == 2 and "not a duration" in bad.stderr
    # A duration no date can be taken from is refused as it is read, not as a traceback.
    huge = _gptactions("logs", "purge", "--older-than", "99999999d", cwd=tmp_path)
    assert huge.returncode == 2 and "is too long: at most 36500d" in huge.stderr, huge.stderr

    backed = _gptactions("db", "backup", "copy/backup.db", cwd=tmp_path)
    assert backed.returncode == 0, backed.stderr
    # Every conversation and the keys' hashes: the owner's only, the database and its copy alike.
    for private in ("server.db", "server.db-wal", "copy/backup.db"):
        if (tmp_path / private).exists():
            assert (tmp_path / private).stat().st_mode & 0o777 == 0o600, private
    with sqlite3.connect(tmp_path / "copy" / "backup.db") as copy:
        assert copy.execute("SELECT count(*) FROM interactions").fetchone()[0] == 1
    copy.close()
    again = _gptactions("db", "backup", "copy/backup.db", cwd=tmp_path)
    assert again.returncode == 1 and "exists" in again.stderr

    printed = _gptactions(
        "db", "backup", "dump.pgc", cwd=tmp_path, url="postgresql://app:secret@db.local:5432/gpt"
    )
    # A line that works pasted as it is: no password on it, nor a placeholder pg_dump would send.
    assert printed.stdout.strip() == (
        "pg_dump --format=custom --file=dump.pgc --host=db.local --port=5432 --username=app gpt"
    )
    assert "secret" not in printed.stdout + printed.stderr
    assert "pg_dump asks for the password of app" in printed.stderr
    assert "export PGPASSWORD or add it to ~/.pgpass" in printed.stderr
    # TLS settings in the URL are pg_dump's too (asyncpg's `ssl` is libpq's `sslmode`).
    tls = _gptactions(
        "db",
        "backup",
        "dump.pgc",
        cwd=tmp_path,
        url="postgresql+asyncpg://app@db.local/gpt?ssl=verify-full&sslrootcert=/etc/ca.pem",
    )
    assert tls.stdout.strip() == (
        "pg_dump --format=custom --file=dump.pgc --host=db.local --username=app "
        "'--dbname=dbname=gpt sslmode=verify-full sslrootcert=/etc/ca.pem'"
    )
    assert tls.stderr == ""  # no password in the URL: nothing to say about one


def _usernames(cwd: Path, url: str | None = None) -> list[str]:
    listed = _gptactions("users", "list", "--json", cwd=cwd, url=url)
    assert listed.returncode == 0, listed.stderr
    return [user["username"] for user in json.loads(listed.stdout)]


def test_a_sqlite_backup_restores_as_the_readme_says(tmp_path: Path) -> None:
    """Stop the server, remove what is left of its -wal and -shm files, copy the backup back."""
    for name in ("alice", "bob"):
        made = _gptactions(
            "users", "create", "--username", name, cwd=tmp_path, stdin="pw-12345678\n"
        )
        assert made.returncode == 0, made.stderr
        if name == "alice":
            assert _gptactions("db", "backup", "backup.db", cwd=tmp_path).returncode == 0
    assert _usernames(tmp_path) == ["alice", "bob"]

    for leftover in ("server.db-wal", "server.db-shm"):
        (tmp_path / leftover).unlink(missing_ok=True)
    shutil.copyfile(tmp_path / "backup.db", tmp_path / "server.db")

    assert _usernames(tmp_path) == ["alice"]


@pytest.mark.postgres
@pytest.mark.skipif(shutil.which("pg_restore") is None, reason="PostgreSQL's tools are not here")
def test_the_printed_pg_dump_line_pasted_backs_up_and_pg_restore_restores(tmp_path: Path) -> None:
    """The line `db backup` prints, run by a shell as it is, then the README's restore: the dump
    loaded into a new database, which the command line then uses."""
    with fresh_postgres_database() as source, fresh_postgres_database() as target:
        made = _gptactions(
            "users",
            "create",
            "--username",
            "alice",
            cwd=tmp_path,
            url=source,
            stdin="pw-12345678\n",
        )
        assert made.returncode == 0, made.stderr
        printed = _gptactions("db", "backup", "dump.pgc", cwd=tmp_path, url=source)
        assert printed.returncode == 0, printed.stderr
        dumped = subprocess.run(
            printed.stdout, shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=120
        )
        assert dumped.returncode == 0, dumped.stderr
        new = make_url(target)
        restored = subprocess.run(
            [
                "pg_restore", f"--host={new.host}", f"--port={new.port}",
                f"--username={new.username}", f"--dbname={new.database}", "--no-owner",
                "--exit-on-error", "dump.pgc",
            ],
            cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert restored.returncode == 0, restored.stderr

        assert _usernames(tmp_path, target) == ["alice"]
        upgrade = _gptactions("db", "upgrade", cwd=tmp_path, url=target)
        assert upgrade.returncode == 0 and "nothing to do" in upgrade.stdout, upgrade.stdout


class _Gated(FakeBackend):
    """Answers only once `gate` is set; `entered` is set when a request has reached it."""

    def __init__(self) -> None:
        super().__init__()
        self.entered, self.gate = asyncio.Event(), asyncio.Event()

    async def _wait(self) -> None:
        self.entered.set()
        await self.gate.wait()

    async def generate(self, request: GenerationRequest) -> Generation:
        await self._wait()
        return await super().generate(request)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        await self._wait()
        async for chunk in super().stream(request):
            yield chunk


@pytest.mark.parametrize("streamed", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("deleted_by", ["retention", "erasure"])
async def test_a_turn_whose_conversation_is_deleted_meanwhile_is_a_404(
    database_url: str, streamed: bool, deleted_by: str
) -> None:
    """Found, then deleted while the model answers (purged, or its user's data erased): the
    turn's row would break the conversation's foreign key. The answer is the 404 it would have
    been a moment earlier (a 500 before), in the error shape, and the turn is not stored."""
    backend = _Gated()
    backend.gate.set()
    settings = Settings(database_url=database_url, api_key=ADMIN_KEY)
    async with running_app(settings, backend) as api:
        started = await api.post("/api/v1/gpt/conversations", {"userId": "u", "message": "hi"})
        conversation = started.json()["conversationId"]
        old = utcnow() - timedelta(days=30)
        async with api.runtime.database.session() as session:
            await session.execute(update(Interaction).values(created_at=old))
            await session.execute(update(Conversation).values(updated_at=old))
        backend.gate.clear()
        backend.entered.clear()
        headers = {"Accept": "text/event-stream"} if streamed else {}
        body = {"userId": "u", "conversationId": conversation, "message": "still there?"}
        turn = asyncio.create_task(api.post("/api/v1/gpt/respond", body, headers=headers))
        await backend.entered.wait()
        if deleted_by == "retention":
            done = await api.runtime.retention.purge_older_than(86_400)
            assert (done.interactions, done.conversations) == (1, 1)
        else:
            erased = await api.http.delete(
                "/api/v1/gpt/me/data",
                params={"userId": "u"},
                headers={"Authorization": f"Bearer {ADMIN_KEY}"},
            )
            assert erased.status_code == 200, erased.text
        backend.gate.set()
        answer = await turn

        if streamed:
            assert answer.status_code == 200  # sent before the turn was stored
            name, data = answer.text.strip().split("\n\n")[-1].split("\n")[:2]
            assert name == "event: error"
            error = json.loads(data.removeprefix("data: "))["error"]
        else:
            assert answer.status_code == 404
            error = answer.json()["error"]
        assert error["code"] == "not_found"
        assert "was deleted while this turn ran" in error["message"]
        # Only the answer itself is in the log, where the JSON one was a rejection (a 404).
        logged = (await api.get("/api/v1/gpt/logs")).json()
        assert [(row["kind"], row["httpStatus"]) for row in logged] == (
            [] if streamed else [("rejected", 404)]
        )
        assert (await _counts(api.runtime.database))[1] == 0
        # The user's next message starts afresh.
        again = await api.post("/api/v1/gpt/respond", {"userId": "u", "message": "hello?"})
        assert again.status_code == 200 and again.json()["conversationId"] != conversation
