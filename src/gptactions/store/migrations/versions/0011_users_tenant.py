"""The data of the users who sign in with OAuth moves to a tenant of their own, `@users`, which
no key can have: in `default`, any key of that tenant naming a user's `userId` read and continued
their conversations. Rows of `default` under a registered user's name go with the user.

Revision ID: 0011
Revises: 0010
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

USERS_TENANT = "@users"  # services.keys.USERS_TENANT, as it was when this ran

_MOVE = (
    "UPDATE {table} SET tenant = '{to}' "
    "WHERE tenant = '{source}' AND user_id IN (SELECT username FROM users)"
)


def upgrade() -> None:
    for table in ("conversations", "interactions"):
        op.execute(_MOVE.format(table=table, to=USERS_TENANT, source="default"))


def downgrade() -> None:
    for table in ("conversations", "interactions"):
        op.execute(_MOVE.format(table=table, to="default", source=USERS_TENANT))
