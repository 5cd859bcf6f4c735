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


def upgrade() -> None:
    with op.batch_alter_table("interactions") as batch:
        batch.add_column(sa.Column("finish_reason", sa.String(20), nullable=True))
        batch.add_column(sa.Column("http_status", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("endpoint", sa.String(300), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("interactions") as batch:
        batch.drop_column("endpoint")
        batch.drop_column("http_status")
        batch.drop_column("finish_reason")
