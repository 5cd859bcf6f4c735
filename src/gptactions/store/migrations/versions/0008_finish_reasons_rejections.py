"""Interactions say how a reply ended, and keep what a refused request was.

Revision ID: 0008
Revises: 0007

`finish_reason` (stop, length, deadline, cancelled) for every reply a model generated;
`http_status` and `endpoint` (`POST /api/v1/gpt/respond`) for interactions of kind `rejected`
(requests refused before the model).
Earlier rows keep NULL: how they ended was not recorded.
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


# Plain ALTER TABLE on both databases (SQLite has DROP COLUMN since 3.35): batch mode would
# rebuild the table on SQLite and lose 0007's search triggers with it.
COLUMNS = (
    sa.Column("finish_reason", sa.String(20), nullable=True),
    sa.Column("http_status", sa.Integer(), nullable=True),
    sa.Column("endpoint", sa.String(300), nullable=True),
)


def upgrade() -> None:
    for column in COLUMNS:
        op.add_column("interactions", column)


def downgrade() -> None:
    for column in reversed(COLUMNS):
        op.drop_column("interactions", column.name)
