"""open_case_counts: the measured cases open now, counted per source, purpose, first channel
and team, filled from the stored cases

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-26

From here on the write path keeps the counts (db/open_cases.py); the figures read them
instead of counting every open case per request.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "open_case_counts",
        sa.Column("source", sa.String(200), nullable=False),
        sa.Column("purpose", sa.String(120), nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("team", sa.String(200), nullable=False),
        sa.Column("cases", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("source", "purpose", "channel", "team", name="pk_open_case_counts"),
    )
    op.execute(
        """
        INSERT INTO open_case_counts (source, purpose, channel, team, cases)
        SELECT source, coalesce(purpose, ''), coalesce(first_channel, ''), coalesce(team, ''),
               count(*)
        FROM cases
        WHERE status = 'open' AND measured
        GROUP BY source, coalesce(purpose, ''), coalesce(first_channel, ''), coalesce(team, '')
        """
    )


def downgrade() -> None:
    op.drop_table("open_case_counts")
