"""`gptactions logs export`: the whole log, a keyset page at a time, as JSONL or CSV."""

from __future__ import annotations

import asyncio
import csv
import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import event, insert

from gptactions.api.logs import EXPORT_FIELDS
from gptactions.services.interactions import InteractionLog, LogQuery
from gptactions.store.db import Database
from gptactions.store.models import Interaction
from tests.conftest import ADMIN_KEY
from tests.test_cli import gptactions_process

from .rows import BASE_TIME, Shape, bulk_insert, interaction_row

Factory = Callable[..., Any]
# 25 rows share each timestamp and ids do not follow time: only (time, id) orders the pages.
SHAPE = Shape(tenants=3, users=4, conversations=30, rows_per_timestamp=25)
COUNT = 2_345


def _selects(database: Database) -> tuple[list[str], Callable[[], None]]:
    """The SELECTs over interactions run from now on, and how to stop recording them."""
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "FROM interactions" in statement:
            statements.append(statement)

    engine = database.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    return statements, lambda: event.remove(engine, "before_cursor_execute", record)


async def test_the_export_reads_the_log_one_keyset_page_at_a_time(database_url: str) -> None:
    database = Database(database_url)
    try:
        await database.upgrade()
        await bulk_insert(database, COUNT, SHAPE, shuffle=True)
        log = InteractionLog(database)
        selects, stop = _selects(database)
        try:
            entries = log.export(LogQuery(), page_size=100)
            first = await anext(entries)
            # The first row is out after one page: nothing waits for the whole log.
            assert len(selects) == 1
            rest = [entry async for entry in entries]
        finally:
            stop()
    finally:
        await database.close()

    exported = [first, *rest]
    assert len(exported) == COUNT
    assert len({entry.id for entry in exported}) == COUNT
    keys = [(entry.timestamp, entry.id) for entry in exported]
    assert keys == sorted(keys, reverse=True), "not newest first"
    # 24 pages of at most 101 rows (one more, to see whether a page follows); every page after
    # the first starts at the last one's (time, id): a seek of the index, not a skip over rows.
    assert len(selects) == -(-COUNT // 100)
    assert all("LIMIT" in s for s in selects)
    assert all("(interactions.created_at, interactions.id) <" in s for s in selects[1:])


async def test_the_export_keeps_to_the_tenant_user_and_window(database_url: str) -> None:
    database = Database(database_url)
    since, until = BASE_TIME + timedelta(seconds=10), BASE_TIME + timedelta(seconds=50)
    try:
        await database.upgrade()
        await bulk_insert(database, COUNT, SHAPE, shuffle=True)
        query = LogQuery(user_id="user-1", since=since, until=until)
        log = InteractionLog(database)
        exported = [e async for e in log.export(query, tenant="tenant-1", page_size=7)]
    finally:
        await database.close()
    # Row n: conversation n % 30, its tenant c % 3 and user c % 4; its time n // 25 seconds.
    expected = {
        n for n in range(COUNT) if (n % 30) % 3 == 1 and (n % 30) % 4 == 1 and 10 <= n // 25 < 50
    }
    assert {int(e.message.removeprefix("message ")) for e in exported} == expected
    assert len(exported) == len(expected)


TRICKY = [
    'a "quoted" word, a comma',
    "two\nlines\r\nand a tab\t",
    "=SUM(A1:A2) stays as written",
    "ünïcödé ✓ 😀",
]


async def test_the_command_writes_jsonl_and_csv_like_get_logs(
    app_factory: Factory, migrated_database_url: str, isolated: Path
) -> None:
    async with app_factory() as api:
        database = api.runtime.database
        async with database.session() as session:
            await session.execute(
                insert(Interaction),
                [
                    interaction_row(
                        n,
                        message,
                        f"reply {n}",
                        tenant=f"tenant-{n % 2}",
                        user_id=f"user-{n}",
                        kind="action" if n % 2 else "conversation",
                        action="summarize" if n % 2 else None,
                        latency_ms=n,
                        prompt_tokens=2 * n,
                        completion_tokens=3 * n,
                    )
                    for n, message in enumerate(TRICKY)
                ],
            )
        served = (await api.get("/api/v1/gpt/logs", ADMIN_KEY)).json()

        env = {"GPTACTIONS_DATABASE_URL": migrated_database_url}

        async def export(*options: str) -> Any:
            # Processes of their own: two of them export at once.
            return await asyncio.to_thread(
                gptactions_process, "logs", "export", *options, cwd=isolated, env=env
            )

        csv_options = (
            "--format",
            "csv",
            "--tenant",
            "tenant-0",
            "--output",
            str(isolated / "log.csv"),
        )
        jsonl, csv_file = await asyncio.gather(export(), export(*csv_options))
        late = await export("--since", "2026-01-01T00:00:02")
        bad = await export("--since", "yesterday")
        backwards = await export("--since", "2026-01-02", "--until", "2026-01-01")
        # The rows were stored past the search index's catch-up: the export catches it up.
        searched = await export("--q", "STAYS written")
        unsearchable = await export("--q", "!!!")

    assert jsonl.returncode == 0, jsonl.stderr
    lines = jsonl.stdout.splitlines()
    assert len(lines) == len(TRICKY)
    items = [json.loads(line) for line in lines]
    # GET /logs's items, field for field, and each one's tenant.
    assert [{k: v for k, v in i.items() if k != "tenant"} for i in items] == served
    assert [i["tenant"] for i in items] == ["tenant-1", "tenant-0", "tenant-1", "tenant-0"]
    assert "exported 4 interaction(s)" in jsonl.stderr

    assert csv_file.returncode == 0, csv_file.stderr
    assert csv_file.stdout == ""
    with (isolated / "log.csv").open(encoding="utf-8", newline="") as stream:
        reader = csv.DictReader(stream)
        assert tuple(reader.fieldnames or ()) == EXPORT_FIELDS
        rows = list(reader)
    assert [r["message"] for r in rows] == [TRICKY[2], TRICKY[0]]
    assert rows[1]["conversationId"] == "" and rows[1]["latencyMs"] == "0"
    assert rows[0]["action"] == "" and rows[0]["completionTokens"] == "6"

    assert late.returncode == 0, late.stderr
    assert [json.loads(line)["message"] for line in late.stdout.splitlines()] == TRICKY[:1:-1]
    assert bad.returncode != 0 and "yesterday" in bad.stderr
    assert searched.returncode == 0, searched.stderr
    assert [json.loads(line)["message"] for line in searched.stdout.splitlines()] == [TRICKY[2]]
    assert unsearchable.returncode != 0 and "Invalid input" in unsearchable.stderr
    assert (
        backwards.returncode != 0
        and "Invalid input: since: must not be after until" in backwards.stderr
    )
