"""Queries over the tables; every function takes the session (or connection) of the caller's
transaction."""

from __future__ import annotations

import base64
import binascii
import functools
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row, Table, func, literal, or_, select, tuple_, update
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.dialects.postgresql.base import PGDialect
from sqlalchemy.ext.asyncio import AsyncSession

from gptactions.store import search
from gptactions.store.models import (
    ApiKey,
    Conversation,
    Interaction,
    InteractionStatus,
    KeyVersion,
)
from gptactions.store.text import storable


def as_utc(moment: datetime) -> datetime:
    """SQLite returns naive datetimes; every stored time is UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


# --- API keys ---------------------------------------------------------------------------------


async def add_key(session: AsyncSession, key: ApiKey) -> ApiKey:
    """Store a new key record."""
    session.add(key)
    await session.flush()
    return key


async def key_by_hash(session: AsyncSession, key_hash: str) -> ApiKey | None:
    """The key with this hash, revoked or not."""
    return await session.scalar(select(ApiKey).where(ApiKey.key_hash == key_hash))


async def list_keys(session: AsyncSession) -> list[ApiKey]:
    """Every key, oldest first."""
    return list(await session.scalars(select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)))


async def count_keys(session: AsyncSession) -> int:
    """How many keys exist, revoked ones included."""
    return int(await session.scalar(select(func.count()).select_from(ApiKey)) or 0)


async def keys_by_id_or_prefix(session: AsyncSession, id_or_prefix: str) -> list[ApiKey]:
    """Every key whose id or visible prefix is this, oldest first (a prefix may be shared)."""
    query = select(ApiKey).where(or_(ApiKey.id == id_or_prefix, ApiKey.prefix == id_or_prefix))
    return list(await session.scalars(query.order_by(ApiKey.created_at, ApiKey.id)))


async def active_imported_keys(session: AsyncSession) -> list[ApiKey]:
    """The imported keys (GPTACTIONS_API_KEY) not yet revoked, oldest first."""
    query = select(ApiKey).where(ApiKey.imported.is_(True), ApiKey.revoked_at.is_(None))
    return list(await session.scalars(query.order_by(ApiKey.created_at, ApiKey.id)))


async def key_version(session: AsyncSession) -> int:
    """The number every revocation bumps (0 before the first)."""
    return int(await session.scalar(select(KeyVersion.version).where(KeyVersion.id == 1)) or 0)


async def bump_key_version(session: AsyncSession) -> None:
    """Tell every key cache, in this transaction, that a key was revoked."""
    await session.execute(
        update(KeyVersion).where(KeyVersion.id == 1).values(version=KeyVersion.version + 1)
    )


# --- conversations ----------------------------------------------------------------------------


async def conversation_by_id(session: AsyncSession, conversation_id: str) -> Conversation | None:
    """The conversation with this id, whoever owns it."""
    return await session.get(Conversation, conversation_id)


async def latest_conversation(
    session: AsyncSession, tenant: str, user_id: str
) -> Conversation | None:
    """The user's most recently active conversation in the tenant."""
    return await session.scalar(
        select(Conversation)
        .where(Conversation.tenant == tenant, Conversation.user_id == user_id)
        .order_by(Conversation.updated_at.desc(), Conversation.id.desc())
        .limit(1)
    )


# --- the group writer's statements (store/writer.py): plain SQL, many rows at once -------------
# On SQLite the writer runs the `sqlite_*` statements on its own connection, in its process or
# thread: the rows' values converted by their column types' own SQLAlchemy converters (a time is
# stored exactly as SQLAlchemy stores it); SQLAlchemy's statement machinery cost ~0.2 ms of the
# GIL per batch, on the path of every request's reply. On PostgreSQL it runs `postgres_write`.
# SQLite numbers the rows of one INSERT in the order of its VALUES (each rowid is one above the
# largest, and the writer's transaction holds the write lock), PostgreSQL in the order of its
# SELECT (one sequence): so the last id, or the ids sorted, give each row its own. A backend's
# reply may hold what no database stores (store/text.py): U+FFFD in its place
# (`_storable_texts`), rather than a failed commit for this request and the others of its batch.

_SQLITE = sqlite_dialect.dialect()
_POSTGRES = PGDialect()  # type: ignore[no-untyped-call]
_CONVERSATIONS = Conversation.metadata.tables["conversations"]
_INTERACTIONS = Interaction.metadata.tables["interactions"]


@functools.cache
def _sqlite_insert(table: Table, columns: tuple[str, ...], rows: int) -> str:
    """`INSERT INTO table (columns) VALUES (?, ...), ...` for `rows` rows."""
    one = "(" + ", ".join("?" * len(columns)) + ")"
    values = ", ".join([one] * rows)
    # Names from the table's own columns only (a row with another key is a KeyError before this).
    return f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES {values}"  # noqa: S608


@functools.cache
def _sqlite_converters(table: Table, columns: tuple[str, ...]) -> tuple[Any, ...]:
    """Each column's converter of Python values to SQLite's (None when it takes them as is)."""
    return tuple(table.c[name].type._cached_bind_processor(_SQLITE) for name in columns)


def _sqlite_values(table: Table, rows: list[dict[str, Any]]) -> tuple[tuple[str, ...], list[Any]]:
    """The columns of `rows` (the first row's, as SQLAlchemy takes them) and all their values."""
    columns = tuple(rows[0])
    converters = _sqlite_converters(table, columns)  # a name not of the table: KeyError
    values: list[Any] = []
    for row in rows:
        for name, convert in zip(columns, converters, strict=True):
            value = row[name]
            values.append(value if convert is None or value is None else convert(value))
    return columns, values


_SQLITE_TOUCH_CONVERSATIONS = "UPDATE conversations SET updated_at = ? WHERE id = ?"


def sqlite_insert_conversations(rows: list[dict[str, Any]]) -> tuple[str, list[Any]]:
    """SQLite's statement storing new conversations, and its parameters."""
    columns, values = _sqlite_values(_CONVERSATIONS, rows)
    return _sqlite_insert(_CONVERSATIONS, columns, len(rows)), values


_FREE_TEXT = ("message", "reply", "error")
"""The interaction's columns of free text, whose odd characters `storable` replaces."""


def _storable_texts(row: dict[str, Any]) -> dict[str, Any]:
    texts = {name: storable(row[name]) for name in _FREE_TEXT if isinstance(row.get(name), str)}
    return row if all(texts[name] is row[name] for name in texts) else row | texts


# On PostgreSQL a batch is ONE statement, always the same text (prepared once per connection),
# run in autocommit (its own transaction): the new conversations, the touches and the
# interactions as data-modifying CTEs over `unnest` of one array per column. One round trip per
# batch, where BEGIN, the three statements and COMMIT took five, each through SQLAlchemy's
# statement machinery on the event loop. The interactions' foreign key to a conversation
# inserted by the same statement holds: PostgreSQL checks it at the statement's end.


@functools.cache
def _postgres_types(table: Table) -> dict[str, str]:
    """Each column's PostgreSQL type, as its arrays are cast."""
    return {column.name: column.type.compile(dialect=_POSTGRES) for column in table.columns}


def _unnest(table: Table, columns: tuple[str, ...], first: int) -> tuple[str, str]:
    """`unnest($first::type[], ...)` over `columns`, and their names, comma-separated."""
    types = _postgres_types(table)
    arrays = ", ".join(f"${first + n}::{types[name]}[]" for n, name in enumerate(columns))
    return f"unnest({arrays})", ", ".join(columns)


_CONVERSATION_COLUMNS = ("id", "tenant", "user_id", "created_at", "updated_at")


@functools.cache
def _postgres_write(interaction_columns: tuple[str, ...]) -> str:
    conversations, names = _unnest(_CONVERSATIONS, _CONVERSATION_COLUMNS, 1)
    touches, _ = _unnest(_CONVERSATIONS, ("id", "updated_at"), 6)
    interactions, columns = _unnest(_INTERACTIONS, interaction_columns, 8)
    # Names from the tables' own columns only (another name is a KeyError in `_unnest`).
    return (
        f"WITH new AS (INSERT INTO conversations ({names}) SELECT * FROM {conversations}), "  # noqa: S608
        f"touched AS (UPDATE conversations SET updated_at = t.at FROM {touches} AS t(id, at) "
        "WHERE conversations.id = t.id) "
        f"INSERT INTO interactions ({columns}) SELECT {columns} FROM {interactions} "
        f"WITH ORDINALITY AS r({columns}, n) ORDER BY n RETURNING id"
    )


def postgres_write(
    conversations: list[dict[str, Any]],
    touches: list[tuple[str, datetime]],
    interactions: list[dict[str, Any]],
) -> tuple[str, tuple[list[Any], ...]]:
    """PostgreSQL's one statement storing a batch, and its parameters (one list per column).

    Its rows of `RETURNING id` are the interactions' ids; in ascending order they are in the
    order of `interactions` (inserted in that order: the ids come from one sequence).
    """
    rows = [_storable_texts(row) for row in interactions]
    columns = tuple(rows[0])
    latest: dict[str, datetime] = {}
    for conversation, at in touches:  # one update per conversation: its latest time
        latest[conversation] = max(at, latest.get(conversation, at))
    parameters = (
        *([row[name] for row in conversations] for name in _CONVERSATION_COLUMNS),
        list(latest),
        list(latest.values()),
        *([row[name] for row in rows] for name in columns),
    )
    return _postgres_write(columns), parameters


def sqlite_insert_interactions(rows: list[dict[str, Any]]) -> tuple[str, list[Any]]:
    """SQLite's one statement storing interactions, and its parameters. No RETURNING:
    `sqlite_ids` gives every id from the last row's, and the insert stays one step of SQLite."""
    columns, values = _sqlite_values(_INTERACTIONS, [_storable_texts(row) for row in rows])
    return _sqlite_insert(_INTERACTIONS, columns, len(rows)), values


def sqlite_ids(last: int, rows: int) -> list[int]:
    """The ids of the `rows` interactions one SQLite insert stored, the last one's `last`."""
    return list(range(last - rows + 1, last + 1))


def sqlite_touch_conversations(touches: list[tuple[str, datetime]]) -> tuple[str, list[Any]]:
    """SQLite's statement marking conversations active (for `executemany`), and its rows."""
    convert = _sqlite_converters(_CONVERSATIONS, ("updated_at",))[0]
    return _SQLITE_TOUCH_CONVERSATIONS, [(convert(at), c) for c, at in touches]


# --- interactions -----------------------------------------------------------------------------


async def conversation_turns(session: AsyncSession, conversation_id: str) -> list[tuple[str, str]]:
    """The conversation's successful turns as (message, reply), oldest first.

    Only the two columns, as plain tuples: this runs on every turn, and building ORM objects
    for a long history was a good part of its cost.
    """
    result = await session.execute(
        select(Interaction.message, Interaction.reply)
        .where(
            Interaction.conversation_id == conversation_id,
            Interaction.status == InteractionStatus.OK,
        )
        .order_by(Interaction.id)
    )
    return [(message, reply) for message, reply in result]


MAX_ID = 2**63 - 1
"""The largest id either database can hold (a signed 64-bit integer)."""

CONVERSATION_ID_LENGTH = 40
"""The longest conversation id the table holds."""


def _pack(moment: datetime, ident: str) -> str:
    """An opaque cursor token for a row's time and id."""
    raw = f"{as_utc(moment).isoformat()}|{ident}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unpack(token: str) -> tuple[datetime, str]:
    """The time and id of a token made by `_pack`; ValueError when it is not one."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        moment, _, ident = raw.partition("|")
        return as_utc(datetime.fromisoformat(moment)), ident
    except (binascii.Error, UnicodeDecodeError, ValueError, OverflowError) as exc:
        raise ValueError("not a cursor returned by this server") from exc


@dataclass(frozen=True)
class LogCursor:
    """Where a page of the log ends: the last row's time and id."""

    created_at: datetime
    id: int

    def encode(self) -> str:
        """An opaque token for the `cursor` query parameter."""
        return _pack(self.created_at, str(self.id))

    @classmethod
    def decode(cls, token: str) -> LogCursor:
        """Parse a token made by `encode`; ValueError when it is not one.

        Whatever a client makes of the token, what comes out fits the database: an id of at most
        63 bits (SQLite's integer, PostgreSQL's bigint) and a time that exists in UTC.
        """
        moment, ident = _unpack(token)
        if not (ident.isascii() and ident.isdigit()) or not 0 < int(ident) <= MAX_ID:
            raise ValueError("not a cursor returned by this server")
        return cls(moment, int(ident))


@dataclass(frozen=True)
class ConversationCursor:
    """Where a page of a user's conversations ends: the last one's creation time and id."""

    created_at: datetime
    id: str

    def encode(self) -> str:
        """An opaque token for the `cursor` query parameter."""
        return _pack(self.created_at, self.id)

    @classmethod
    def decode(cls, token: str) -> ConversationCursor:
        """Parse a token made by `encode`; ValueError when it is not one."""
        moment, ident = _unpack(token)
        if not ident or len(ident) > CONVERSATION_ID_LENGTH or not ident.isascii():
            raise ValueError("not a cursor returned by this server")
        return cls(moment, ident)


LogRow = Row[Any]
"""A row of `interactions` as the log reads it: its columns by name, as on the ORM object."""


@dataclass(frozen=True)
class LogFilter:
    """What `GET /logs` asks for; `tenant=None` means every tenant (admin keys)."""

    tenant: str | None
    user_id: str | None = None
    conversation_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    cursor: LogCursor | None = None
    limit: int = 100
    search: str | None = None
    """Words that the message and reply must hold, every one (full-text search)."""
    kind: str | None = None


async def list_interactions(session: AsyncSession, query: LogFilter) -> list[LogRow]:
    """Interactions matching the filter, newest first; `limit + 1` of them, to see a next page.
    A search reads SQLite's index as it is: catch it up first (`Database.catch_up_search`).

    Rows of the table's columns (SQL Core), not ORM objects: the log page reads up to a
    thousand of them, and only reads them.
    """
    conditions: list[Any] = []
    if query.search is not None:
        conditions.append(await search.matching(session, query.search))
    if query.tenant is not None:
        conditions.append(Interaction.tenant == query.tenant)
    if query.user_id is not None:
        conditions.append(Interaction.user_id == query.user_id)
    if query.conversation_id is not None:
        conditions.append(Interaction.conversation_id == query.conversation_id)
    if query.kind is not None:
        conditions.append(Interaction.kind == query.kind)
    if query.since is not None:
        conditions.append(Interaction.created_at >= as_utc(query.since))
    if query.until is not None:
        conditions.append(Interaction.created_at < as_utc(query.until))
    if query.cursor is not None:
        # A row-value comparison, not `created_at < at OR (created_at = at AND id < id)`: both
        # databases seek the index to it, where the OR form walks every newer row (pages got
        # slower the deeper they were, ~270 ms at 100k rows deep on PostgreSQL).
        conditions.append(
            tuple_(Interaction.created_at, Interaction.id)
            < tuple_(
                literal(as_utc(query.cursor.created_at), Interaction.created_at.type),
                literal(query.cursor.id, Interaction.id.type),
            )
        )
    statement = (
        select(*Interaction.__table__.columns)
        .where(*conditions)
        .order_by(Interaction.created_at.desc(), Interaction.id.desc())
        .limit(query.limit + 1)
    )
    return list(await session.execute(statement))
