"""GET /logs on 1,000,000 interactions against the same on 10,000: the indexes keep it flat.

Searches (`q`) look for a word held by NEEDLES rows in either database, so that the ratio shows
how the search scales with the table (it should not), and for a word in every row, which costs
what reading that word's entries costs (on SQLite, it grows with the rows that hold it).

Rows are bulk-inserted (executemany on SQLite, COPY on PostgreSQL), never through the API; the
requests go through the whole app in-process (routing, auth, service, store), so the ratio
isolates how the queries scale with the table. Run: .venv/bin/python bench/bench_logs.py
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from common import BENCH_KEY, postgres_databases, postgres_reachable, ratio, report, summary
from sqlalchemy import func, select

from gptactions.app import create_app
from gptactions.config import Settings
from gptactions.llm.fake import FakeBackend
from gptactions.llm.router import BackendRouter
from gptactions.runtime import Runtime
from gptactions.store.db import Database
from gptactions.store.models import Interaction
from gptactions.store.queries import LogCursor, as_utc

BASE_TIME = datetime(2026, 1, 1, tzinfo=UTC)
TENANTS, USERS, CONVERSATIONS = 10, 50, 500  # conversation c: tenant c % 10, user c % 50
TENANT, USER = "tenant-3", "user-13"  # user-13's conversations are all in tenant-3
PAGES, LIMIT = 10, 100
NEEDLES = 200  # rows holding the word "needle", whatever the table's size
COLUMNS = (
    "created_at", "tenant", "key_id", "user_id", "conversation_id", "kind", "action", "message",
    "reply", "status", "error", "backend", "model", "latency_ms", "prompt_tokens",
    "completion_tokens",
)  # fmt: skip


def needle_every(count: int) -> int:
    """Row n holds "needle" when n % this == 13: NEEDLES rows, all of TENANT's USER.

    A multiple of 50 (USERS, and CONVERSATIONS' divisor), so that n % 50 == 13 puts each in
    conversation c with c % 50 == 13: user-13, tenant-3.
    """
    return max(50, count // NEEDLES // 50 * 50)


def interactions(count: int, moment: Callable[[datetime], Any]) -> Iterator[tuple[Any, ...]]:
    """`count` rows in COLUMNS order, one second apart, spread over the conversations."""
    every = needle_every(count)
    for n in range(count):
        c = n % CONVERSATIONS
        message = f"message {n} needle" if n % every == 13 else f"message {n}"
        yield (
            moment(BASE_TIME + timedelta(seconds=n)), f"tenant-{c % TENANTS}", None,
            f"user-{c % USERS}", f"conv-{c}", "conversation", None, message,
            f"reply {n} " + "x" * 80, "ok", None, "fake", "fake-model", 12, 30, 20,
        )  # fmt: skip


def conversations(moment: Callable[[datetime], Any]) -> list[tuple[Any, ...]]:
    """The conversations the rows belong to."""
    return [
        (
            f"conv-{c}",
            f"tenant-{c % TENANTS}",
            f"user-{c % USERS}",
            moment(BASE_TIME),
            moment(BASE_TIME),
        )
        for c in range(CONVERSATIONS)
    ]


def sqlite_moment(moment: datetime) -> str:
    """How SQLAlchemy stores a DateTime in SQLite."""
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")


def fill_sqlite(path: Path, count: int) -> None:
    """Drop the indexes and the search's triggers, executemany the rows, rebuild the indexes and
    the search's (faster than keeping them up to date row by row)."""
    with sqlite3.connect(path) as db:
        kept = db.execute(
            "SELECT name, type, sql FROM sqlite_master WHERE type IN ('index', 'trigger')"
            " AND tbl_name = 'interactions' AND sql IS NOT NULL"
        ).fetchall()
        for name, kind, _sql in kept:
            db.execute(f"DROP {kind.upper()} {name}")
        db.executemany(
            "INSERT INTO conversations (id, tenant, user_id, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?)",
            conversations(sqlite_moment),
        )
        marks = ", ".join("?" for _ in COLUMNS)
        db.executemany(
            f"INSERT INTO interactions ({', '.join(COLUMNS)}) VALUES ({marks})",
            interactions(count, sqlite_moment),
        )
        for _name, _kind, sql in kept:
            db.execute(sql)
        db.execute("INSERT INTO interactions_fts (interactions_fts) VALUES ('rebuild')")
        db.execute("ANALYZE")


async def fill_postgres(url: str, count: int) -> None:
    """The same with COPY."""
    import asyncpg

    db = await asyncpg.connect(url)
    try:
        indexes = await db.fetch(
            "SELECT indexname, indexdef FROM pg_indexes"
            " WHERE tablename = 'interactions' AND indexname LIKE 'ix_%'"
        )
        for index in indexes:
            await db.execute(f"DROP INDEX {index['indexname']}")
        await db.copy_records_to_table(
            "conversations",
            records=conversations(lambda m: m),
            columns=["id", "tenant", "user_id", "created_at", "updated_at"],
        )
        await db.copy_records_to_table(
            "interactions", records=interactions(count, lambda m: m), columns=list(COLUMNS)
        )
        for index in indexes:
            await db.execute(index["indexdef"])
        await db.execute("ANALYZE")
    finally:
        await db.close()


@dataclass(frozen=True)
class Target:
    """One database behind the whole app: a client, a key of TENANT, a cursor 80% deep."""

    client: httpx.AsyncClient
    key: str
    deep_cursor: str


@asynccontextmanager
async def app_target(url: str) -> AsyncIterator[Target]:
    """The whole app in-process on `url`, and what the scenarios need to call it."""
    settings = Settings(database_url=url, api_key=BENCH_KEY)
    runtime = Runtime(settings, router=BackendRouter([FakeBackend()]))
    app = create_app(runtime=runtime)
    async with app.router.lifespan_context(app):
        key = (await runtime.keys.create("bench", scopes=("logs",), tenant=TENANT)).secret
        async with runtime.database.session() as session:
            total = await session.scalar(
                select(func.count()).select_from(Interaction).where(Interaction.tenant == TENANT)
            )
            row = (
                await session.execute(
                    select(Interaction.created_at, Interaction.id)
                    .where(Interaction.tenant == TENANT)
                    .order_by(Interaction.created_at.desc(), Interaction.id.desc())
                    .offset(int((total or 0) * 0.8))
                    .limit(1)
                )
            ).one()
        # The token the server would have put in the Link header of the page before.
        deep = LogCursor(as_utc(row.created_at), row.id).encode()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            yield Target(client, key, deep)


Scenario = Callable[[Target], Awaitable[int]]


def page(*, admin: bool = False, deep: bool = False, **params: Any) -> Scenario:
    """One GET /logs; returns how many rows came back."""

    async def run(target: Target) -> int:
        key = BENCH_KEY if admin else target.key
        query = {"limit": LIMIT, **params}
        if deep:
            query["cursor"] = target.deep_cursor
        response = await target.client.get(
            "/api/v1/gpt/logs", params=query, headers={"Authorization": f"Bearer {key}"}
        )
        response.raise_for_status()
        return len(response.json())

    return run


async def walk(target: Target) -> int:
    """PAGES pages, each from the previous one's Link header."""
    headers = {"Authorization": f"Bearer {target.key}"}
    url, rows = f"/api/v1/gpt/logs?limit={LIMIT}", 0
    for number in range(1, PAGES + 1):
        response = await target.client.get(url, headers=headers)
        response.raise_for_status()
        rows += len(response.json())
        if number < PAGES:
            url = response.headers["link"].split(">", 1)[0].lstrip("<")
    return rows


SCENARIOS: dict[str, tuple[Scenario, int]] = {
    "tenant, limit=100": (page(), 60),
    "tenant + userId": (page(userId=USER), 60),
    "admin (all tenants)": (page(admin=True), 60),
    f"{PAGES} pages via cursor": (walk, 15),
    "a page 80% deep (cursor)": (page(deep=True), 60),
    f"q: a word in {NEEDLES} rows": (page(q="needle"), 60),
    "q + userId": (page(q="needle", userId=USER), 60),
    "q: a word in every row": (page(q="message"), 15),
}


async def measure(urls: dict[str, str]) -> dict[str, dict[str, dict[str, float]]]:
    """Every scenario on every database, alternating between them so drift hits both alike."""
    async with AsyncExitStack() as stack:
        targets = {size: await stack.enter_async_context(app_target(u)) for size, u in urls.items()}
        results: dict[str, dict[str, dict[str, float]]] = {}
        for name, (scenario, repeats) in SCENARIOS.items():
            timings: dict[str, list[float]] = {size: [] for size in urls}
            counts: dict[str, int] = {}
            for attempt in range(repeats + 3):  # three warm-up rounds
                for size, target in targets.items():
                    started = time.perf_counter()
                    counts[size] = await scenario(target)
                    if attempt >= 3:
                        timings[size].append(time.perf_counter() - started)
            if len(set(counts.values())) != 1:
                raise RuntimeError(f"{name}: the databases returned {counts} rows")
            results[name] = {size: summary(t) for size, t in timings.items()}
        return results


async def prepare(engine: str, urls: dict[str, str], sizes: dict[str, int]) -> float:
    """Migrate and fill each database; returns the seconds it took."""
    started = time.perf_counter()
    for size, url in urls.items():
        database = Database(url)
        await database.upgrade()
        await database.close()
        if engine == "sqlite":
            await asyncio.to_thread(fill_sqlite, Path(url.split(":///", 1)[1]), sizes[size])
        else:
            await fill_postgres(url, sizes[size])
    return time.perf_counter() - started


async def main() -> None:
    """Fill, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--reference-rows", type=int, default=10_000)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    sizes = {"reference": args.reference_rows, "large": args.rows}

    results: dict[str, Any] = {"rows": sizes, "engines": {}}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        engines: list[tuple[str, Any]] = [("sqlite", None)]
        if not args.no_postgres and postgres_reachable():
            engines.append(("postgresql", postgres_databases(list(sizes))))
        for engine, databases in engines:
            async with AsyncExitStack() as stack:
                if databases is None:
                    urls = {size: f"sqlite:///{tmp}/{size}.db" for size in sizes}
                else:
                    urls = await stack.enter_async_context(databases)
                fill_seconds = await prepare(engine, urls, sizes)
                measured = await measure(urls)
            results["engines"][engine] = {"fill_seconds": round(fill_seconds, 1), **measured}
            for name, by_size in measured.items():
                small, large = by_size["reference"], by_size["large"]
                rows.append([
                    engine, name, small["median_ms"], large["median_ms"],
                    ratio(large["median_ms"], small["median_ms"]),
                    ratio(large["p95_ms"], small["p95_ms"]),
                ])  # fmt: skip
                by_size["ratio_median"] = ratio(large["median_ms"], small["median_ms"])
                by_size["ratio_p95"] = ratio(large["p95_ms"], small["p95_ms"])
        if len(engines) == 1:
            results["postgresql"] = "skipped: not reachable on 127.0.0.1:5432 (or --no-postgres)"
    header = [
        "engine", "GET /logs", f"{sizes['reference']:,} rows ms", f"{sizes['large']:,} rows ms",
        "ratio median", "ratio p95",
    ]  # fmt: skip
    report("logs", header, rows, results)


if __name__ == "__main__":
    asyncio.run(main())
