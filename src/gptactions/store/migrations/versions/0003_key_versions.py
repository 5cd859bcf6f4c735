"""A version number that every key revocation bumps, so replicas drop the keys they cached.

Revision ID: 0003
Revises: 0002

One row: the servers' key caches read it at most twice a second and forget every cached key when
it has changed.
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    versions = op.create_table(
        "key_versions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
    )
    op.bulk_insert(versions, [{"id": 1, "version": 0}])


def downgrade() -> None:
    op.drop_table("key_versions")
