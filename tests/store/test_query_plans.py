"""The queries of `GET /logs` use the indexes of models.py (EXPLAIN over 20,000 rows)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text

from gptactions.config import Settings
from gptactions.llm.fake import FakeBackend
from gptactions.store.db import Database
from tests.conftest import (
    ADMIN_KEY,
    ApiClient,
    copy_sqlite,
    fresh_postgres_database,
    postgres_reachable,
    running_app,
)

from .rows import Shape, bulk_insert

# Tenants of very different sizes, as in a real deployment: tenant-6 holds 32 conversations
# (3% of the rows), tenant-10 holds 488 (49%). (For a tenant of a few hundred rows PostgreSQL
# rightly prefers a bitmap scan and a sort; for half the table, the time index.)
SHAPE = Shape(tenants=11, users=200, conversations=1_000, skewed=True)
ROWS = 20_000
SMALL, LARGE = "tenant-6", "tenant-10"


async def _plan_of_logs(api: ApiClient, key: str, params: dict[str, Any]) -> str:
    """The query plan of the SELECT that `GET /logs` ran with these parameters."""
    database = api.runtime.database
    captured: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        # The page's SELECT (not SQLite's count of a search's matches in interactions_fts, nor
        # its index's catch-up, which reads `interactions_fts_state`).
        if re.search(r"FROM interactions\b", statement) and "_fts_state" not in statement:
            captured.append((statement, parameters))

    event.listen(database.engine.sync_engine, "before_cursor_execute", capture)
    try:
        response = await api.get("/api/v1/gpt/logs", key, params=params)
    finally:
        event.remove(database.engine.sync_engine, "before_cursor_execute", capture)
    assert response.status_code == 200, response.text
    assert response.json(), "the query should find rows"
    [(statement, parameters)] = captured
    return await _explain(database, statement, parameters)


async def _explain(database: Database, statement: str, parameters: Any) -> str:
    prefix = "EXPLAIN QUERY PLAN " if database.is_sqlite else "EXPLAIN "
    async with database.engine.connect() as connection:
        result = await connection.exec_driver_sql(prefix + statement, parameters)
        return "\n".join(str(row[-1]) for row in result)


def _assert_no_full_scan(plan: str) -> None:
    # PostgreSQL says "Seq Scan"; SQLite says "SCAN interactions" without "USING ... INDEX".
    full_scans = [
        line
        for line in plan.splitlines()
        if "Seq Scan" in line or ("SCAN interactions" in line and "INDEX" not in line)
    ]
    assert full_scans == [], plan


async def _load(url: str) -> None:
    """The schema, 20,000 interactions in tenants of skewed sizes, and planner statistics."""
    database = Database(url)
    try:
        await database.upgrade()
        await bulk_insert(database, ROWS, SHAPE)
        async with database.engine.connect() as connection:
            await connection.execute(text("ANALYZE"))
            await connection.commit()
    finally:
        await database.close()


# Loading is most of the cost: done once a module on each database, and copied for each test
# (SQLite's statistics are a table of the file, PostgreSQL's a catalog the copy takes along).
@pytest.fixture(scope="module")
def loaded_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("loaded") / "loaded.db"
    asyncio.run(_load(f"sqlite:///{path}"))
    return path


@pytest.fixture(scope="module")
def loaded_postgres() -> Iterator[str]:
    if not postgres_reachable():
        pytest.skip("PostgreSQL is not reachable")
    with fresh_postgres_database() as url:
        asyncio.run(_load(url))
        yield url.rsplit("/", 1)[1]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def loaded_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A copy of the loaded database, on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        copy_sqlite(request.getfixturevalue("loaded_sqlite"), tmp_path / "loaded.db")
        yield f"sqlite:///{tmp_path / 'loaded.db'}"
        return
    with fresh_postgres_database(request.getfixturevalue("loaded_postgres")) as url:
        yield url


@pytest.fixture
async def loaded(loaded_url: str) -> AsyncIterator[ApiClient]:
    """An app over 20,000 interactions in tenants of skewed sizes, with planner statistics."""
    settings = Settings(database_url=loaded_url, api_key=ADMIN_KEY)
    async with running_app(settings, FakeBackend()) as api:
        yield api


# (tenant, filters, the index its query must use). For the large tenant, half the rows are its
# own: walking the time index backwards is as good as its tenant index, and either is fine.
QUERIES = [
    (SMALL, {}, "ix_interactions_tenant_created"),
    (SMALL, {"userId": "user-40"}, "ix_interactions_tenant_user_created"),
    (SMALL, {"conversationId": "conv-40"}, "ix_interactions_conversation"),
    (LARGE, {}, "ix_interactions_"),
    (LARGE, {"userId": "user-7"}, "ix_interactions_tenant_user_created"),
    (LARGE, {"conversationId": "conv-607"}, "ix_interactions_conversation"),
    (None, {}, "ix_interactions_created"),  # an admin key: every tenant
]


async def test_each_log_query_uses_its_index(loaded: ApiClient) -> None:
    # One test over one loaded database: loading 20,000 rows is most of the cost.
    keys = {t: await loaded.key(tenant=t, scopes=("logs",)) for t in (SMALL, LARGE)}
    misses = []
    for tenant, params, index in QUERIES:
        key = ADMIN_KEY if tenant is None else keys[tenant]
        plan = await _plan_of_logs(loaded, key, {"limit": 100, **params})
        if index not in plan:
            misses.append(f"{tenant} {params}: expected {index} in\n{plan}")
        _assert_no_full_scan(plan)
    assert misses == [], "\n\n".join(misses)


async def test_a_later_page_seeks_the_index_to_its_cursor(loaded: ApiClient) -> None:
    key = await loaded.key(tenant=SMALL, scopes=("logs",))
    first = await loaded.get("/api/v1/gpt/logs", key, params={"limit": 50})
    cursor = first.headers["link"].split("cursor=", 1)[1].split(">", 1)[0]
    plan = await _plan_of_logs(loaded, key, {"limit": 50, "cursor": cursor})
    assert "ix_interactions_tenant_created" in plan, plan
    _assert_no_full_scan(plan)
    # The cursor bounds the index scan (a seek), instead of filtering every newer row out of
    # it: with a filter, page n costs as much as reading the n pages before it.
    bounded = [
        line
        for line in plan.splitlines()
        if ("Index Cond" in line and "ROW(created_at, id) <" in line)
        or ("SEARCH interactions USING" in line and "created_at<" in line)
    ]
    assert bounded, plan


# Searches: the numbers of "message n" are words found in one row each; "message" is in every
# row. (tenant, filters, what PostgreSQL's plan must hold, what SQLite's must.) PostgreSQL takes
# its GIN index when the search narrows most; with a user's or a small tenant's few hundred rows
# it may rather read those through their index and check each. SQLite reads the few rows of a
# rare word by their id, or checks the rows of a narrower index against the FTS5 index's list;
# for a word in more than SQLITE_FEW_MATCHES rows it walks a time index against that list.
GIN, ANY_INDEX = ["ix_interactions_search"], ["Index"]
FTS = ["VIRTUAL TABLE INDEX 0:M"]
BY_ID, WALK = [*FTS, "USING INTEGER PRIMARY KEY"], [*FTS, "USING INDEX ix_interactions_"]
SEARCHES = [
    (SMALL, {"q": "40"}, ANY_INDEX, BY_ID),
    (SMALL, {"q": "40", "userId": "user-40"}, ANY_INDEX, FTS),
    (LARGE, {"q": "607"}, GIN, BY_ID),
    (LARGE, {"q": "reply 607", "userId": "user-7"}, ANY_INDEX, FTS),
    (LARGE, {"q": "607", "conversationId": "conv-607"}, ANY_INDEX, FTS),
    (LARGE, {"q": "message"}, ANY_INDEX, WALK),
    (None, {"q": "message reply"}, ANY_INDEX, WALK),
    (None, {"q": "4711"}, GIN, BY_ID),  # an admin key: every tenant
]


async def test_each_search_uses_an_index(loaded: ApiClient) -> None:
    keys = {t: await loaded.key(tenant=t, scopes=("logs",)) for t in (SMALL, LARGE)}
    sqlite = loaded.runtime.database.is_sqlite
    misses = []
    for tenant, params, postgres_plan, sqlite_plan in SEARCHES:
        key = ADMIN_KEY if tenant is None else keys[tenant]
        plan = await _plan_of_logs(loaded, key, {"limit": 100, **params})
        expected = sqlite_plan if sqlite else postgres_plan
        if not all(part in plan for part in expected):
            misses.append(f"{tenant} {params}: expected {expected} in\n{plan}")
        _assert_no_full_scan(plan)
    assert misses == [], "\n\n".join(misses)


async def test_a_later_page_of_a_search_starts_at_its_cursor(loaded: ApiClient) -> None:
    key = await loaded.key(tenant=LARGE, scopes=("logs",))
    first = await loaded.get("/api/v1/gpt/logs", key, params={"limit": 50, "q": "message"})
    cursor = first.headers["link"].split("cursor=", 1)[1].split(">", 1)[0]
    plan = await _plan_of_logs(loaded, key, {"limit": 50, "q": "message", "cursor": cursor})
    _assert_no_full_scan(plan)


async def test_each_usage_query_is_an_indexed_aggregate(loaded: ApiClient) -> None:
    # Ten minutes of the log (600 of the 20,000 rows): a tenant's, a user's, every tenant's.
    window = {"since": "2026-01-01T00:16:40Z", "until": "2026-01-01T00:26:40Z"}
    small = await loaded.key(tenant=SMALL, scopes=("logs",))
    database = loaded.runtime.database
    captured: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "FROM interactions" in statement:
            captured.append((statement, parameters))

    for key, params in ((small, {}), (small, {"userId": "user-40"}), (ADMIN_KEY, {})):
        captured.clear()
        event.listen(database.engine.sync_engine, "before_cursor_execute", capture)
        try:
            response = await loaded.get("/api/v1/gpt/usage", key, params={**window, **params})
        finally:
            event.remove(database.engine.sync_engine, "before_cursor_execute", capture)
        assert response.status_code == 200, response.text
        assert response.json()["total"]["requests"] > 0, params
        assert len(captured) == 3  # the total, per key, per user: each one aggregate query
        for statement, parameters in captured:
            plan = await _explain(database, statement, parameters)
            assert "ix_interactions_" in plan, plan
            _assert_no_full_scan(plan)
