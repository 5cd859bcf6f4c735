"""Imported keys are marked (the next GPTACTIONS_API_KEY replaces them) and listed by hash.

Revision ID: 0002
Revises: 0001

Every generated key starts with `gpta_`, so a key whose visible prefix does not was imported: it is
marked, and its prefix (the first 12 characters of a human-chosen key) becomes `sha256:` and the
first 8 hex digits of its hash. An imported key that starts with `gpta_` cannot be told apart here;
the server marks it the next time it starts with that GPTACTIONS_API_KEY.
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(
            sa.Column("imported", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    keys = sa.table(
        "api_keys",
        sa.column("prefix", sa.String),
        sa.column("key_hash", sa.String),
        sa.column("imported", sa.Boolean),
    )
    op.execute(
        keys.update()
        .where(sa.not_(keys.c.prefix.startswith("gpta_", autoescape=True)))
        .values(
            imported=True,
            prefix=sa.literal("sha256:") + sa.func.substr(keys.c.key_hash, 1, 8),
        )
    )


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("imported")
