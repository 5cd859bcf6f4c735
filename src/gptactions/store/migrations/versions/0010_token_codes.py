"""Each token pair records the authorization code it descends from, so that a code redeemed
again revokes them (RFC 6749, 4.1.2). Pairs issued before have none.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("oauth_tokens") as batch:
        batch.add_column(sa.Column("code_hash", sa.String(64), nullable=True))
    op.create_index("ix_oauth_tokens_code_hash", "oauth_tokens", ["code_hash"])


def downgrade() -> None:
    op.drop_index("ix_oauth_tokens_code_hash", "oauth_tokens")
    with op.batch_alter_table("oauth_tokens") as batch:
        batch.drop_column("code_hash")
