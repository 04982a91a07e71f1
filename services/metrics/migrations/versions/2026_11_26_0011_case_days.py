"""case_days: the measured cases fulfilled on each UTC day pre-aggregated, filled from cases

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-26

From here on the one write path (db/write_path.replace_derived) keeps it equal to a recount
from the cases table; this fills it once from what is stored.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "case_days",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("source", sa.String(200), nullable=False),
        sa.Column("purpose", sa.String(120), nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("team", sa.String(200), nullable=False),
        sa.Column("fulfilled", sa.Integer(), nullable=False),
        sa.Column("contacts", sa.Integer(), nullable=False),
        sa.Column("one_stop", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("day", "source", "purpose", "channel", "team", name="pk_case_days"),
    )
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        day = "date(timezone('UTC', fulfilled_at))"
    else:
        day = "date(fulfilled_at)"  # SQLite stores UTC text: its first 10 characters
    op.execute(
        f"""
        INSERT INTO case_days (day, source, purpose, channel, team, fulfilled, contacts, one_stop)
        SELECT {day}, source, coalesce(purpose, ''), coalesce(first_channel, ''),
               coalesce(team, ''), count(*), sum(contacts),
               sum(CASE WHEN one_stop THEN 1 ELSE 0 END)
        FROM cases
        WHERE status = 'fulfilled' AND measured AND fulfilled_at IS NOT NULL
        GROUP BY {day}, source, coalesce(purpose, ''), coalesce(first_channel, ''),
                 coalesce(team, '')
        """
    )


def downgrade() -> None:
    op.drop_table("case_days")
