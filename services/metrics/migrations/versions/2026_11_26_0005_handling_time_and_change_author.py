"""a demand's handling time as its source reported it, and who recorded a change

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26

Both nullable: demands stored before carry no handling time (the channel's average stands
in), and changes recorded before have no known author.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("demands") as batch:
        batch.add_column(sa.Column("handling_seconds", sa.Float(), nullable=True))
    with op.batch_alter_table("purpose_changes") as batch:
        batch.add_column(sa.Column("recorded_by", sa.String(200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("purpose_changes") as batch:
        batch.drop_column("recorded_by")
    with op.batch_alter_table("demands") as batch:
        batch.drop_column("handling_seconds")
