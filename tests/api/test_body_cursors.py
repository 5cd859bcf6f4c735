"""Paging by the body alone: ChatGPT hands the model the response body, never its headers.

`GET /logs` (an array, as the seed has it) puts the next page's cursor on its last item
(`nextCursor`, absent on the last page); `GET /me/export` and `GET /actions` (objects) carry
`nextCursor`, null on the last page. The `Link` header says the same, for HTTP clients.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import insert

from gptactions.config import Settings
from gptactions.llm.fake import FakeBackend
from gptactions.store.db import Database
from gptactions.store.models import Interaction
from tests.conftest import ApiClient, running_app
from tests.store.rows import interaction_row

Factory = Callable[..., Any]
API = "/api/v1/gpt"
LOGS = f"{API}/logs"


async def insert_rows(database: Database, lengths: list[int], *, per_second: int = 5) -> None:
    """One interaction per length, whose message and reply have about that many characters;
    `per_second` share each timestamp and the ids do not follow time, so only (time, id) orders
    them and page boundaries fall between rows of equal time."""
    rows = [
        interaction_row(n // per_second, f"{n:05d} " + "m" * length, "r" * length, user_id="u")
        for n, length in enumerate(lengths)
    ]
    random.Random(len(rows)).shuffle(rows)
    async with database.session() as session:
        await session.execute(insert(Interaction), rows)


def link_cursor(answer: httpx.Response) -> str | None:
    """The cursor of the Link header's next page, which the body's must equal."""
    link = answer.headers.get("link")
    return httpx.URL(link.split(";")[0].strip("<>")).params["cursor"] if link else None


async def log_pages(
    api: ApiClient, params: dict[str, Any], max_chars: int
) -> list[list[dict[str, Any]]]:
    """Every page of `GET /logs`, each from the last item's `nextCursor` of the one before."""
    pages: list[list[dict[str, Any]]] = []
    cursor: str | None = None
    while len(pages) < 500:  # a cursor that does not advance must fail, not hang
        answer = await api.get(LOGS, params=params | ({"cursor": cursor} if cursor else {}))
        assert answer.status_code == 200, answer.text
        assert len(answer.text) <= max_chars
        items: list[dict[str, Any]] = answer.json()
        assert items, "an empty page"
        assert not [item for item in items[:-1] if "nextCursor" in item]
        cursor = items[-1].pop("nextCursor", None)
        assert link_cursor(answer) == cursor
        pages.append(items)
        if cursor is None:
            return pages
    raise AssertionError("nextCursor never ended")


def messages(pages: list[list[dict[str, Any]]]) -> list[int]:
    return [int(item["message"][:5]) for page in pages for item in page]


def newest_first(count: int, per_second: int = 5) -> list[int]:
    """The order of `GET /logs` of rows `insert_rows` wrote: time descending, then id (random)."""
    return sorted(range(count), key=lambda n: -(n // per_second))


async def test_logs_pages_cut_by_size_or_limit_give_every_row_once(app_factory: Factory) -> None:
    """limit=1000 with rows of about 3,000 characters: the 20,000-character cap cuts each page,
    and only the body says where the next one starts. On SQLite and PostgreSQL."""
    async with app_factory(max_response_chars=20_000) as api:
        await insert_rows(api.runtime.database, [1_500] * 47)
        by_size = await log_pages(api, {"limit": 1000, "userId": "u"}, 20_000)
        by_limit = await log_pages(api, {"limit": 4}, 20_000)
    assert len(by_size) > 5 and all(len(page) < 1000 for page in by_size)
    assert [len(page) for page in by_limit] == [4] * 11 + [3]
    for pages in (by_size, by_limit):
        seen = messages(pages)
        assert sorted(seen) == list(range(47))  # each row once
        times = [n // 5 for n in seen]
        assert times == sorted(times, reverse=True)  # newest first across pages


async def test_one_page_has_no_cursor(api: ApiClient) -> None:
    await insert_rows(api.runtime.database, [10] * 3)
    answer = await api.get(LOGS)
    assert [item for item in answer.json() if "nextCursor" in item] == []
    assert "link" not in answer.headers


async def test_the_cursor_on_the_last_item_never_takes_a_page_past_the_limit(
    settings: Settings, fake: FakeBackend
) -> None:
    """Pages fitted to the character, for many limits: the cursor a page carries is within it."""
    lengths = [random.Random(n).randrange(50, 700) for n in range(40)]
    async with running_app(settings, fake) as api:
        await insert_rows(api.runtime.database, lengths)
        for max_chars in range(1_000, 6_000, 173):
            api.runtime.settings.max_response_chars = max_chars
            pages = await log_pages(api, {"limit": 1000}, max_chars)
            ids = [item["id"] for page in pages for item in page]  # a long row is shortened
            assert len(ids) == len(set(ids)) == 40, max_chars


async def object_pages(
    api: ApiClient, path: str, params: dict[str, str], max_chars: int, most: int
) -> list[dict[str, Any]]:
    """Every page of an object body (`/me/export`, `GET /actions`), each from the `nextCursor`
    of the one before: null on the last page, never absent, and the same as `Link`'s."""
    pages: list[dict[str, Any]] = []
    cursor: str | None = None
    while len(pages) < most:
        answer = await api.get(path, params=params | ({"cursor": cursor} if cursor else {}))
        assert answer.status_code == 200, answer.text
        assert len(answer.text) <= max_chars
        page: dict[str, Any] = answer.json()
        assert "nextCursor" in page
        cursor = page["nextCursor"]
        assert link_cursor(answer) == cursor
        pages.append(page)
        if cursor is None:
            return pages
    raise AssertionError("nextCursor never ended")


async def export_pages(api: ApiClient, user: str, max_chars: int) -> list[dict[str, Any]]:
    """Every page of a user's export."""
    return await object_pages(api, f"{API}/me/export", {"userId": user}, max_chars, 500)


async def test_an_export_followed_by_its_body_gives_every_row_once(
    settings: Settings, fake: FakeBackend, database_url: str
) -> None:
    tight = settings.model_copy(update={"database_url": database_url, "max_response_chars": 3_000})
    async with running_app(tight, fake) as api:
        conversations = set()
        for n in range(30):
            body = {"userId": "u", "message": f"{n:03d} " + "m" * (40 * (n % 9))}
            answer = await api.post(f"{API}/conversations", body)
            assert answer.status_code == 200, answer.text
            conversations.add(answer.json()["conversationId"])
        await api.post(f"{API}/conversations", {"userId": "other", "message": "not u's"})
        pages = await export_pages(api, "u", 3_000)
    assert len(pages) > 3
    exported = [c["conversationId"] for page in pages for c in page["conversations"]]
    assert sorted(exported) == sorted(conversations)
    interactions = [i["message"][:3] for page in pages for i in page["interactions"]]
    assert sorted(interactions) == [f"{n:03d}" for n in range(30)]
    assert not [i for page in pages for i in page["interactions"] if "nextCursor" in i]


async def test_a_whole_export_says_there_is_no_next_page(api: ApiClient) -> None:
    await api.post(f"{API}/conversations", {"userId": "u", "message": "hi"})
    answer = await api.get(f"{API}/me/export", params={"userId": "u"})
    assert answer.json()["nextCursor"] is None and "link" not in answer.headers


def actions_file(path: Path, count: int, length: int) -> Path:
    path.write_text(
        "actions:\n"
        + "".join(
            f"  - name: act{n:02d}\n"
            f"    description: {'d' * (length + n * 37)}\n"
            "    parameters: {type: object, properties: {topic: {type: string}}}\n"
            '    prompt: "About {{ topic }}."\n'
            "    output: text\n"
            for n in range(count)
        )
    )
    return path


async def action_pages(api: ApiClient, max_chars: int) -> list[list[str]]:
    """The names on every page of `GET /actions`."""
    pages = await object_pages(api, f"{API}/actions", {}, max_chars, 100)
    assert all(page["actions"] for page in pages), "an empty page"
    return [[a["name"] for a in page["actions"]] for page in pages]


async def test_the_action_list_followed_by_its_body_gives_every_action_once(
    settings: Settings, fake: FakeBackend, tmp_path: Path
) -> None:
    configured = settings.model_copy(
        update={"actions_file": actions_file(tmp_path / "actions.yaml", 14, 500)}
    )
    async with running_app(configured, fake) as api:
        expected = sorted(d.name for d in api.runtime.registry)
        for max_chars in range(1_300, 4_000, 59):
            api.runtime.settings.max_response_chars = max_chars
            pages = await action_pages(api, max_chars)
            assert [name for page in pages for name in page] == expected, max_chars


async def test_a_whole_action_list_says_there_is_no_next_page(api: ApiClient) -> None:
    listed = (await api.get(f"{API}/actions")).json()
    assert listed["nextCursor"] is None and listed["actions"]


# --- the document says where the cursor is -----------------------------------------------------


async def test_the_document_points_at_the_body_for_the_next_page(api: ApiClient) -> None:
    document = (await api.http.get("/openapi.json")).json()
    paths = document["paths"]
    for path in ("/logs", "/me/export", "/actions"):
        operation = paths[API + path]["get"]
        assert "nextCursor" in operation["description"], path
        assert len(operation["description"]) <= 300, path
        (cursor,) = [p for p in operation["parameters"] if p["name"] == "cursor"]
        assert "nextCursor" in cursor["description"], path
        assert "from the Link header" not in cursor["description"], path
    logs = paths[LOGS]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert logs["type"] == "array"  # the seed's answer stays an array of its items
    item = logs["items"]
    assert {"timestamp", "userId", "message", "reply"} <= set(item["properties"])
    assert "nextCursor" not in item.get("required", [])
    assert item["properties"]["nextCursor"]["type"] == "string"
    assert "last item" in item["properties"]["nextCursor"]["description"]
    schemas = document["components"]["schemas"]
    for name in ("MyDataExport", "ActionList"):
        assert "nextCursor" in schemas[name]["required"], name
        assert schemas[name]["properties"]["nextCursor"]["nullable"] is True, name
    # The export's interactions are whole pages' rows: no cursor on them.
    assert "nextCursor" not in schemas["LogItem"]["properties"]
    assert "LogPageItem" not in schemas


def test_the_logs_export_command_has_no_cursor_column() -> None:
    from gptactions.api.logs import EXPORT_FIELDS

    assert "nextCursor" not in EXPORT_FIELDS and "truncatedFields" not in EXPORT_FIELDS


async def test_a_key_follows_pages_with_the_cursor_of_the_body(api: ApiClient) -> None:
    """The cursor works for any caller that may read the log, as the Link header's does."""
    await insert_rows(api.runtime.database, [10] * 5)
    key = await api.key(scopes=("logs",))
    first = (await api.get(LOGS, key, params={"limit": 2})).json()
    cursor = first[-1]["nextCursor"]
    rest = (await api.get(LOGS, key, params={"limit": 10, "cursor": cursor})).json()
    assert len(rest) == 3 and "nextCursor" not in rest[-1]
