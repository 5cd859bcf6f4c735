"""SQLite: the search index catches up with the log, instead of a trigger on every insert.

0007's trigger indexed each interaction in the transaction storing it: a new FTS5 segment per
commit, which doubled the pages a request alone wrote and synced (store/search.py). From here
the index records how far it goes (`interactions_fts_state.indexed_to`), and whoever writes
next, or searches, indexes the rows past it (`search.SQLITE_CATCH_UP`).

A row past that mark is not in the index: deleting or editing it leaves the index alone. And
since SQLite gives a new row the largest id plus one, deleting the newest rows lowers the mark
to the largest id left, so an id used again is past it and indexed as new.

Revision ID: 0013
Revises: 0012
"""

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_UPGRADE = [
    "CREATE TABLE interactions_fts_state ("
    " id INTEGER PRIMARY KEY CHECK (id = 1), indexed_to INTEGER NOT NULL)",
    # Every row so far is indexed (0007's trigger, or its rebuild).
    "INSERT INTO interactions_fts_state (id, indexed_to)"
    " VALUES (1, (SELECT coalesce(max(id), 0) FROM interactions))",
    "DROP TRIGGER IF EXISTS interactions_fts_insert",
    "DROP TRIGGER IF EXISTS interactions_fts_delete",
    "DROP TRIGGER IF EXISTS interactions_fts_update",
    # One trigger, so that the mark the row is compared with is the one before it is lowered.
    "CREATE TRIGGER interactions_fts_delete AFTER DELETE ON interactions BEGIN"
    " INSERT INTO interactions_fts (interactions_fts, rowid, message, reply)"
    " SELECT 'delete', old.id, old.message, old.reply"
    " WHERE old.id <= (SELECT indexed_to FROM interactions_fts_state WHERE id = 1);"
    " UPDATE interactions_fts_state"
    " SET indexed_to = (SELECT coalesce(max(id), 0) FROM interactions)"
    " WHERE id = 1 AND indexed_to > (SELECT coalesce(max(id), 0) FROM interactions); END",
    "CREATE TRIGGER interactions_fts_update AFTER UPDATE OF message, reply ON interactions"
    " WHEN old.id <= (SELECT indexed_to FROM interactions_fts_state WHERE id = 1) BEGIN"
    " INSERT INTO interactions_fts (interactions_fts, rowid, message, reply)"
    " VALUES ('delete', old.id, old.message, old.reply);"
    " INSERT INTO interactions_fts (rowid, message, reply)"
    " VALUES (new.id, new.message, new.reply); END",
]

_DOWNGRADE = [
    # The rows past the mark into the index, then 0007's triggers again.
    "INSERT INTO interactions_fts (rowid, message, reply)"
    " SELECT id, message, reply FROM interactions"
    " WHERE id > (SELECT indexed_to FROM interactions_fts_state WHERE id = 1)",
    "DROP TRIGGER IF EXISTS interactions_fts_delete",
    "DROP TRIGGER IF EXISTS interactions_fts_update",
    "DROP TABLE interactions_fts_state",
    "CREATE TRIGGER interactions_fts_insert AFTER INSERT ON interactions BEGIN"
    " INSERT INTO interactions_fts (rowid, message, reply)"
    " VALUES (new.id, new.message, new.reply); END",
    "CREATE TRIGGER interactions_fts_delete AFTER DELETE ON interactions BEGIN"
    " INSERT INTO interactions_fts (interactions_fts, rowid, message, reply)"
    " VALUES ('delete', old.id, old.message, old.reply); END",
    "CREATE TRIGGER interactions_fts_update AFTER UPDATE OF message, reply ON interactions BEGIN"
    " INSERT INTO interactions_fts (interactions_fts, rowid, message, reply)"
    " VALUES ('delete', old.id, old.message, old.reply);"
    " INSERT INTO interactions_fts (rowid, message, reply)"
    " VALUES (new.id, new.message, new.reply); END",
]


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for statement in _UPGRADE:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for statement in _DOWNGRADE:
            op.execute(statement)
