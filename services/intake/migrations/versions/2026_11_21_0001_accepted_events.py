"""intake_accepted_events: the idempotency ledger

Revision ID: intake_0001
Revises:
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "intake_0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "intake_accepted_events",
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("event_id", sa.String(200), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("kind", "event_id", name=op.f("pk_intake_accepted_events")),
        sqlite_with_rowid=False,
    )
    op.create_index(
        "ix_intake_accepted_events_claimed_at", "intake_accepted_events", ["claimed_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_intake_accepted_events_claimed_at", table_name="intake_accepted_events")
    op.drop_table("intake_accepted_events")
