"""Full-text search over interactions' message and reply (GET /logs?q=).

Revision ID: 0007
Revises: 0006

SQLite: an FTS5 table with external content, kept in step by triggers, filled from the rows
already stored. PostgreSQL: a GIN index over the rows' tsvector (built from the rows already
stored; the build holds writes to `interactions` back until it ends). The SQL is spelled out
here, as migrations are history; `store/search.py` uses the same names and expression.

A later migration that rebuilds `interactions` on SQLite (batch mode's copy-and-move) drops the
triggers with the old table: it must create them again, or the index stops following the rows.
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_PG_DOCUMENT = (
    "to_tsvector('simple'::regconfig, left(message, 100000) || ' ' || left(reply, 100000))"
)

_SQLITE = [
    "CREATE VIRTUAL TABLE interactions_fts USING fts5("
    " message, reply, content='interactions', content_rowid='id',"
    " tokenize='unicode61 remove_diacritics 0')",
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
    # The rows stored before this revision.
    "INSERT INTO interactions_fts (interactions_fts) VALUES ('rebuild')",
]


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for statement in _SQLITE:
            op.execute(statement)
    else:
        op.execute(
            f"CREATE INDEX ix_interactions_search ON interactions USING gin ({_PG_DOCUMENT})"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for trigger in ("insert", "delete", "update"):
            op.execute(f"DROP TRIGGER IF EXISTS interactions_fts_{trigger}")
        op.execute("DROP TABLE IF EXISTS interactions_fts")
    else:
        op.execute("DROP INDEX IF EXISTS ix_interactions_search")
