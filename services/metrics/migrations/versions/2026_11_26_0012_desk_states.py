"""desk_states: each person's last decisions and skips in the queues, in the database

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-26

They were kept in each process, so another replica did not know them and a restart lost
them; nothing to carry over.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "desk_states",
        sa.Column("username", sa.String(200), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("username", name="pk_desk_states"),
    )


def downgrade() -> None:
    op.drop_table("desk_states")
