"""A key may expire: `keys rotate --grace` leaves the old key working until then.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    # Without the column, a key still in its grace period would work for ever: it ends now.
    op.execute(
        "UPDATE api_keys SET revoked_at = expires_at "
        "WHERE expires_at IS NOT NULL AND revoked_at IS NULL"
    )
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("expires_at")
