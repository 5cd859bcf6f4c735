"""`GET /logs` over stored rows: cursor pages, the Link header, time windows, tenants."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from itertools import pairwise
from typing import Any

from gptactions.llm.fake import FakeBackend
from tests.conftest import ADMIN_KEY, ApiClient

from .rows import BASE_TIME, Shape, bulk_insert

Factory = Callable[..., Any]
LOGS = "/api/v1/gpt/logs"
# 40 rows share each timestamp, so most page boundaries fall between rows of equal time; rows
# are inserted shuffled, so ids do not follow time and only (time, id) orders them.
SHAPE = Shape(tenants=2, users=3, conversations=12, rows_per_timestamp=40)
COUNT = 230


def _n(row: dict[str, Any]) -> int:
    return int(row["message"].removeprefix("message "))


def _sort_key(row: dict[str, Any]) -> tuple[int, int]:
    """The order `GET /logs` promises, newest first: (time, id) descending."""
    return (_n(row) // SHAPE.rows_per_timestamp, row["id"])


def next_link(response: Any) -> str | None:
    link = response.headers.get("link")
    if link is None:
        return None
    match = re.fullmatch(r'<([^>]+)>; rel="next"', link)
    assert match, link
    return match.group(1)


async def _walk(api: ApiClient, key: str, params: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """Every page, following the Link header from the first."""
    pages = []
    response = await api.get(LOGS, key, params=params)
    while len(pages) < 1000:  # a cursor that does not advance must fail, not hang
        assert response.status_code == 200, response.text
        pages.append(response.json())
        link = next_link(response)
        if link is None:
            return pages
        assert f"limit={params['limit']}" in link
        response = await api.get(link, key)
    raise AssertionError("the Link header never ended")


def _assert_newest_first_without_gaps(rows: list[dict[str, Any]], expected: set[int]) -> None:
    keys = [_sort_key(row) for row in rows]
    assert all(a > b for a, b in pairwise(keys)), "not strictly newest first"
    assert [_n(row) for row in rows if _n(row) not in expected] == []
    assert len(rows) == len(expected), f"{len(expected) - len(rows)} rows missing"


async def test_pages_cover_every_row_once_newest_first(app_factory: Factory) -> None:
    async with app_factory() as api:
        await bulk_insert(api.runtime.database, COUNT, SHAPE, shuffle=True)
        pages = await _walk(api, ADMIN_KEY, {"limit": 7})

    assert [len(page) for page in pages] == [7] * (COUNT // 7) + [COUNT % 7]
    _assert_newest_first_without_gaps([r for p in pages for r in p], set(range(COUNT)))


async def test_pages_of_one_tenant_and_user_keep_the_filter(app_factory: Factory) -> None:
    async with app_factory() as api:
        await bulk_insert(api.runtime.database, COUNT, SHAPE, shuffle=True)
        key = await api.key(tenant="tenant-1", scopes=("logs",))
        pages = await _walk(api, key, {"limit": 9, "userId": "user-2"})

    rows = [r for p in pages for r in p]
    assert {row["userId"] for row in rows} == {"user-2"}
    # conversation c belongs to tenant c % 2 and user c % 3; row n to conversation n % 12.
    expected = {n for n in range(COUNT) if (n % 12) % 2 == 1 and (n % 12) % 3 == 2}
    _assert_newest_first_without_gaps(rows, expected)


async def test_rows_written_while_paging_do_not_shift_later_pages(app_factory: Factory) -> None:
    async with app_factory() as api:
        await bulk_insert(api.runtime.database, 100, SHAPE, shuffle=True)
        first = await api.get(LOGS, params={"limit": 30})
        for n in range(5):  # newer than every stored row
            await api.post("/api/v1/gpt/conversations", {"userId": "late", "message": f"late {n}"})
        rest = await _walk(api, ADMIN_KEY, {"limit": 30, "cursor": _cursor(first)})

    rows = first.json() + [r for p in rest for r in p]
    _assert_newest_first_without_gaps(rows, set(range(100)))


def _cursor(response: Any) -> str:
    link = next_link(response)
    assert link is not None
    match = re.search(r"[?&]cursor=([^&]+)", link)
    assert match
    return match.group(1)


async def test_since_is_inclusive_and_until_exclusive(app_factory: Factory) -> None:
    since = BASE_TIME + timedelta(seconds=1)
    until = BASE_TIME + timedelta(seconds=3)
    async with app_factory() as api:
        await bulk_insert(api.runtime.database, COUNT, SHAPE, shuffle=True)
        params = {"limit": 11, "since": since.isoformat(), "until": until.isoformat()}
        pages = await _walk(api, ADMIN_KEY, params)
        naive = await api.get(LOGS, params={"limit": 1000, "since": "2026-01-01T00:00:05"})
        offset = await api.get(LOGS, params={"limit": 1000, "since": "2026-01-01T02:00:05+02:00"})

    expected = {n for n in range(COUNT) if 1 <= n // SHAPE.rows_per_timestamp < 3}
    _assert_newest_first_without_gaps([r for p in pages for r in p], expected)
    # Times without an offset are UTC; other offsets are converted.
    late = {n for n in range(COUNT) if n // SHAPE.rows_per_timestamp >= 5}
    assert {_n(row) for row in naive.json()} == late
    assert {_n(row) for row in offset.json()} == late


async def test_a_cursor_not_made_by_the_server_is_refused(app_factory: Factory) -> None:
    async with app_factory() as api:
        response = await api.get(LOGS, params={"cursor": "not-a-cursor"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"


async def test_a_tenants_key_sees_only_its_tenants_rows(app_factory: Factory) -> None:
    async with app_factory(FakeBackend()) as api:
        keys = {t: await api.key(tenant=t, scopes=("chat", "logs")) for t in ("a", "b")}
        conversations = {}
        for tenant, key in keys.items():
            for user in ("shared-user", f"only-{tenant}"):
                body = {"userId": user, "message": f"{tenant} {user}"}
                response = await api.post("/api/v1/gpt/conversations", body, key)
                assert response.status_code == 200, response.text
                conversations[tenant, user] = response.json()["conversationId"]

        seen = {t: await api.get(LOGS, k, params={"limit": 1000}) for t, k in keys.items()}
        admin = await api.get(LOGS, params={"limit": 1000})
        same_user = await api.get(LOGS, keys["a"], params={"userId": "shared-user"})
        other_user = await api.get(LOGS, keys["a"], params={"userId": "only-b"})
        other_conversation = await api.get(
            LOGS, keys["a"], params={"conversationId": conversations["b", "only-b"]}
        )
        continued = await api.post(
            "/api/v1/gpt/respond",
            {"userId": "only-b", "message": "x", "conversationId": conversations["b", "only-b"]},
            keys["a"],
        )

    for tenant in ("a", "b"):
        messages = {row["message"] for row in seen[tenant].json()}
        assert messages == {f"{tenant} shared-user", f"{tenant} only-{tenant}"}
    assert len(admin.json()) == 4
    assert [row["message"] for row in same_user.json()] == ["a shared-user"]
    assert other_user.json() == []
    assert other_conversation.json() == []
    assert continued.status_code == 404
