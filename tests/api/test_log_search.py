"""`GET /logs?q=`: full-text search over message and reply, with the filters, pages and tenants."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from alembic import command
from sqlalchemy import insert, text
from sqlalchemy.engine import Connection

from gptactions.services.interactions import SEARCH_MAX_LENGTH, SEARCH_MAX_WORDS
from gptactions.services.keys import USERS_TENANT
from gptactions.services.retention import Retention
from gptactions.store import queries, search
from gptactions.store.db import Database, alembic_config
from gptactions.store.models import Interaction, utcnow
from tests.api.test_me import token
from tests.api.test_oauth import PASSWORD
from tests.conftest import ADMIN_KEY, ApiClient
from tests.store.rows import BASE_TIME
from tests.store.rows import interaction_row as row
from tests.store.test_log_pages import next_link

Factory = Callable[..., Any]
LOGS = "/api/v1/gpt/logs"


# SQLite reads few matches by id, many by walking a time index: both ways, whatever the count.
BOTH_SQLITE_PLANS = pytest.mark.parametrize(
    "few_matches", [search.SQLITE_FEW_MATCHES, 0], ids=["by-id", "walk"]
)


async def store(database: Database, rows: list[dict[str, Any]]) -> None:
    async with database.session() as session:
        await session.execute(insert(Interaction), rows)


async def found(api: ApiClient, q: str, key: str = ADMIN_KEY, **params: Any) -> list[str]:
    """The messages GET /logs?q= returns, newest first."""
    response = await api.get(LOGS, key, params={"q": q, "limit": 1000, **params})
    assert response.status_code == 200, response.text
    return [item["message"] for item in response.json()]


ROWS = [
    row(1, "Where is my refund?", "Your refund was sent on Monday."),
    row(2, "Send the INVOICE please", "Here is invoice 4711."),
    row(3, "refund and invoice", "both"),
    row(4, "unrelated", "nothing to see"),
    row(5, "Café au lait", "naïve résumé"),
    row(6, "my_snake_case word", "email me at someone@example.com"),
]


@BOTH_SQLITE_PLANS
async def test_every_word_in_message_or_reply_in_any_case(
    app_factory: Factory, few_matches: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(search, "SQLITE_FEW_MATCHES", few_matches)
    async with app_factory() as api:
        await store(api.runtime.database, ROWS)
        assert await found(api, "refund") == ["refund and invoice", "Where is my refund?"]
        assert await found(api, "REFUND Invoice") == ["refund and invoice"]
        # One word in the message and the other in the reply is a match.
        assert await found(api, "invoice 4711") == ["Send the INVOICE please"]
        assert await found(api, "sent refund") == ["Where is my refund?"]
        assert await found(api, "refund nowhere") == []
        # Whole words: no stemming, no prefixes.
        assert await found(api, "refunds") == []
        assert await found(api, "inv") == []
        assert await found(api, "café") == ["Café au lait"]
        assert await found(api, "snake") == ["my_snake_case word"]
        # Each database splits the search as it splits the text: an address is found whole.
        assert await found(api, "someone@example.com") == ["my_snake_case word"]


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        # Punctuation separates words and is otherwise ignored.
        ("refund, invoice!", ["refund and invoice"]),
        ('"refund', ["refund and invoice", "Where is my refund?"]),
        ("refund*", ["refund and invoice", "Where is my refund?"]),
        ("message:refund", []),  # "message" is a word to find, not a column
        # FTS5 and tsquery operators are plain words too.
        ("refund AND invoice", ["refund and invoice"]),
        ("refund OR unrelated", []),
        ("NEAR(refund invoice)", []),
        ("refund & !invoice | (x)", []),
        ("-refund", ["refund and invoice", "Where is my refund?"]),
        ("^refund", ["refund and invoice", "Where is my refund?"]),
        ("refund NOT invoice", []),
    ],
)
async def test_query_syntax_is_read_as_plain_words(
    app_factory: Factory, q: str, expected: list[str]
) -> None:
    async with app_factory() as api:
        await store(api.runtime.database, ROWS)
        assert await found(api, q) == expected


@pytest.mark.parametrize(
    ("q", "problem"),
    [
        ("", "at least one word"),
        ("   ", "at least one word"),
        ('!"*()^:-', "at least one word"),
        ("\x00", "U+0000"),  # the document's pattern for q, as for userId
        ("a\x00b", "U+0000"),
        ("w" * (SEARCH_MAX_LENGTH + 1), f"at most {SEARCH_MAX_LENGTH} characters"),
        (" ".join(f"w{n}" for n in range(SEARCH_MAX_WORDS + 1)), f"at most {SEARCH_MAX_WORDS}"),
    ],
)
async def test_a_search_without_words_or_too_long_is_a_400(
    app_factory: Factory, q: str, problem: str
) -> None:
    async with app_factory() as api:
        response = await api.get(LOGS, params={"q": q})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert error["details"][0]["pointer"] == "/q"
    assert problem in error["details"][0]["message"]


async def test_the_longest_search_allowed_is_answered(app_factory: Factory) -> None:
    words = " ".join(f"w{n}" for n in range(SEARCH_MAX_WORDS))
    longest = words + " " * (SEARCH_MAX_LENGTH - len(words))
    async with app_factory() as api:
        await store(api.runtime.database, [row(1, words)])
        assert await found(api, longest) == [words]
        assert await found(api, "w" * SEARCH_MAX_LENGTH) == []


@BOTH_SQLITE_PLANS
async def test_search_with_filters_pages_through_the_link_header(
    app_factory: Factory, few_matches: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(search, "SQLITE_FEW_MATCHES", few_matches)
    # 60 rows, 3 users; every third row mentions the word, so do some replies.
    rows = [
        row(
            n,
            f"turn {n}" + (" needle" if n % 3 == 0 else ""),
            "needle" if n % 5 == 0 else "hay",
            user_id=f"user-{n % 2}",
        )
        for n in range(60)
    ]
    expected = [n for n in reversed(range(60)) if (n % 3 == 0 or n % 5 == 0) and n % 2 == 1]
    async with app_factory() as api:
        await store(api.runtime.database, rows)
        params = {"q": "needle", "userId": "user-1", "limit": 4}
        response = await api.get(LOGS, params=params)
        pages = []
        while True:
            assert response.status_code == 200, response.text
            pages.append([int(item["message"].split()[1]) for item in response.json()])
            link = next_link(response)
            if link is None:
                break
            assert "q=needle" in link and "userId=user-1" in link
            response = await api.get(link)
        windowed = await api.get(
            LOGS,
            params={
                "q": "needle",
                "since": (BASE_TIME + timedelta(seconds=10)).isoformat(),
                "until": (BASE_TIME + timedelta(seconds=20)).isoformat(),
                "limit": 100,
            },
        )
    assert [n for page in pages for n in page] == expected
    assert all(len(page) == 4 for page in pages[:-1])
    assert [int(i["message"].split()[1]) for i in windowed.json()] == [
        n for n in reversed(range(10, 20)) if n % 3 == 0 or n % 5 == 0
    ]


@BOTH_SQLITE_PLANS
async def test_a_tenants_key_finds_only_its_own_tenants_rows(
    app_factory: Factory, few_matches: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(search, "SQLITE_FEW_MATCHES", few_matches)
    async with app_factory() as api:
        await store(
            api.runtime.database,
            [
                row(1, "secret plan of a", tenant="a"),
                row(2, "secret plan of b", tenant="b"),
                row(3, "secret plan of b, user two", tenant="b", user_id="two"),
            ],
        )
        key_a = await api.key(tenant="a", scopes=("logs",))
        key_b = await api.key(tenant="b", scopes=("logs",))
        assert await found(api, "secret plan", key_a) == ["secret plan of a"]
        assert await found(api, "secret plan", key_b) == [
            "secret plan of b, user two",
            "secret plan of b",
        ]
        assert await found(api, "secret b", key_a) == []
        assert await found(api, "secret", key_b, userId="two") == ["secret plan of b, user two"]
        assert len(await found(api, "secret")) == 3  # an admin key: every tenant


async def test_an_oauth_user_finds_only_their_own_rows(api: ApiClient) -> None:
    await api.runtime.users.create("alice", PASSWORD)
    alice = await token(api, "alice")
    await store(
        api.runtime.database,
        [
            row(1, "shared word from alice", user_id="alice", tenant=USERS_TENANT),
            row(2, "shared word from bob", tenant=USERS_TENANT, user_id="bob"),
            row(3, "shared word from a key's alice", user_id="alice"),  # tenant default
        ],
    )
    assert await found(api, "shared word", alice) == ["shared word from alice"]
    other = await api.get(LOGS, alice, params={"q": "shared", "userId": "someone"})
    assert other.status_code == 403


async def test_deleted_rows_leave_the_index(app_factory: Factory) -> None:
    async with app_factory() as api:
        database = api.runtime.database
        await store(
            database, [row(1, "ancient history"), row(0, "recent history", created_at=utcnow())]
        )
        purged = await Retention(database).purge_older_than(3600)
        assert purged.interactions == 1
        assert await found(api, "history") == ["recent history"]
        if database.is_sqlite:
            # The trigger took the row out of the FTS index itself, not only out of the answer.
            async with database.engine.connect() as connection:
                indexed = await connection.scalar(
                    text(
                        "SELECT count(*) FROM interactions_fts WHERE interactions_fts MATCH 'history'"
                    )
                )
            assert indexed == 1


async def test_rows_stored_before_the_migration_are_found(database_url: str) -> None:
    database = Database(database_url)
    try:

        def before_search(connection: Connection) -> None:
            command.upgrade(alembic_config(connection), "0006")

        async with database.engine.begin() as connection:
            await connection.run_sync(before_search)
        await store(database, [row(1, "stored before search existed", "an old reply")])
        await database.upgrade()
        await store(database, [row(2, "stored after search existed")])
        await database.catch_up_search()  # what a search through the log service does first
        async with database.session() as session:
            old = await queries.list_interactions(
                session, queries.LogFilter(tenant=None, search="existed")
            )
            reply = await queries.list_interactions(
                session, queries.LogFilter(tenant=None, search="old")
            )
    finally:
        await database.close()
    assert [r.message for r in old] == [
        "stored after search existed",
        "stored before search existed",
    ]
    assert [r.message for r in reply] == ["stored before search existed"]
