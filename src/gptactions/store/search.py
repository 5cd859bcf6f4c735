"""Full-text search over interactions' message and reply.

SQLite: an FTS5 table with external content (it stores only the index; the text stays in
`interactions`). It catches up with the log rather than following each insert: a trigger that
indexed each row in the transaction storing it wrote a new FTS5 segment per commit, twice the
pages (and the sync) of a request alone. The index records how far it goes
(`interactions_fts_state`); each batch the group writer commits indexes the rows past it with its
own (`SQLITE_CATCH_UP`), a request committed alone on the event loop leaves that to a thread every
so often (store/writer.py), and a search first indexes what is left (`catch_up`), so it always
sees every row. Triggers keep deletions and edits of indexed rows in step (migration 0013).
PostgreSQL: a GIN index over the `tsvector` of the same text, matched with `plainto_tsquery`.
Both use the `simple` way of splitting words (no stemming, no stop words: the log holds every
language) and match every word given.

The migrations that create them (0007, 0013) spell the same SQL: keep them in step, or the
PostgreSQL planner no longer recognises the index's expression (tests/store/test_query_plans.py
fails when it does not).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from sqlalchemy import ColumnElement, TextClause, select, table, text
from sqlalchemy.ext.asyncio import AsyncSession

from gptactions.store.models import Interaction

FTS_TABLE = "interactions_fts"
PG_INDEX = "ix_interactions_search"
# PostgreSQL refuses a tsvector over 1 MB: a row's text is indexed up to this many characters of
# message and of reply (far above the default message limit), so no insert can fail on it.
PG_INDEXED_CHARS = 100_000
PG_DOCUMENT = (
    f"to_tsvector('simple'::regconfig, left(message, {PG_INDEXED_CHARS}) || ' ' || "
    f"left(reply, {PG_INDEXED_CHARS}))"
)
SQLITE_TOKENIZER = "unicode61 remove_diacritics 0"
FTS_STATE = "interactions_fts_state"

SQLITE_CATCH_UP = (
    "INSERT INTO interactions_fts (rowid, message, reply)"
    " SELECT id, message, reply FROM interactions"
    " WHERE id > (SELECT indexed_to FROM interactions_fts_state WHERE id = 1) ORDER BY id",
    "UPDATE interactions_fts_state SET indexed_to = (SELECT coalesce(max(id), 0) FROM interactions)"
    " WHERE id = 1 AND indexed_to < (SELECT coalesce(max(id), 0) FROM interactions)",
)
"""SQLite: the rows past the index's mark into the index, and the mark moved past them (in the
transaction of the writes they follow, or one of their own: plain SQL, run by the writer's
process too, which imports nothing of the server's)."""
_SQLITE_BEHIND = (
    "SELECT EXISTS (SELECT 1 FROM interactions"
    " WHERE id > (SELECT indexed_to FROM interactions_fts_state WHERE id = 1))"
)

SCHEMA_NAMES = frozenset(
    {
        FTS_TABLE,
        *(f"{FTS_TABLE}_{shadow}" for shadow in ("data", "idx", "docsize", "config")),
        FTS_STATE,
        PG_INDEX,
    }
)
"""What search adds to the schema outside the models (a virtual table and its shadow tables, an
expression index): comparisons of the schema with the models leave these out."""


# A word as FTS5's unicode61 splits text: letters and digits (`_` and the rest separate words).
_WORD = re.compile(r"[^\W_]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def words(search: str) -> list[str]:
    """The different words of a search, lowercased, in order."""
    return list(dict.fromkeys(word.lower() for word in _WORD.findall(search)))


def fts5_query(words: Sequence[str]) -> str:
    """Every word quoted, so that FTS5 reads none of them as syntax (AND, NEAR, *, column:)."""
    return " ".join('"' + word.replace('"', '""') + '"' for word in words)


_SQLITE_COUNT = (
    "SELECT count(*) FROM (SELECT rowid FROM interactions_fts"
    " WHERE interactions_fts MATCH :search_words LIMIT :most)"
)
_SQLITE_WALK = (
    "+interactions.id IN (SELECT rowid FROM interactions_fts"
    " WHERE interactions_fts MATCH :search_words)"
)
SQLITE_FEW_MATCHES = 10_000
"""Up to this many rows holding the words, SQLite reads each of them by its id and keeps the
newest; beyond, reading them all would cost more than walking the filter's time index newest
first and keeping the rows whose id the FTS5 index listed (a list it builds without reading a
row), which stops at the page's end. A count that stops past this number picks the plan."""


async def behind(session: AsyncSession) -> bool:
    """SQLite: whether the search index lacks rows (`catch_up` adds them)."""
    return bool(await session.scalar(text(_SQLITE_BEHIND)))


async def catch_up(session: AsyncSession) -> None:
    """SQLite: the rows the search index lacks, indexed (in `session`'s transaction, which its
    first statement, a write, begins as a writer: no read to upgrade)."""
    for statement in SQLITE_CATCH_UP:
        await session.execute(text(statement))


async def matching(session: AsyncSession, search: str) -> ColumnElement[bool] | TextClause:
    """The condition that an interaction's message and reply, together, hold every word of
    `search`, each database splitting the search into words as it splits the stored text (so
    an e-mail address is one word to PostgreSQL, three to SQLite, and found by both).

    PostgreSQL's planner picks between the GIN index and a walk of a time index by how common
    the words are (its statistics say); SQLite's cannot tell, so it is told (SQLITE_FEW_MATCHES).
    """
    if session.get_bind().dialect.name != "sqlite":
        # plainto_tsquery reads no operator; PostgreSQL's text holds no NUL.
        match = text(f"{PG_DOCUMENT} @@ plainto_tsquery('simple'::regconfig, :search_words)")
        return match.bindparams(search_words=_CONTROL.sub(" ", search))
    query = fts5_query(words(search))
    counted = await session.scalar(
        text(_SQLITE_COUNT), {"search_words": query, "most": SQLITE_FEW_MATCHES + 1}
    )
    if (counted or 0) <= SQLITE_FEW_MATCHES:
        return Interaction.id.in_(
            select(text("rowid"))
            .select_from(table(FTS_TABLE))
            .where(text(f"{FTS_TABLE} MATCH :search_words").bindparams(search_words=query))
        )
    # `+`: not the id's index (the rowid), so that SQLite walks a time index instead.
    return text(_SQLITE_WALK).bindparams(search_words=query)
