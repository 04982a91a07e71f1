"""demand_days: the demands of each UTC day pre-aggregated, filled from the stored facts

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-26

From here on the one write path (db/write_path.replace_derived) keeps the table equal to a
recomputation from demand_facts and demands; this fills it once from what is stored.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_KEY = (
    "day",
    "source",
    "channel",
    "team",
    "purpose",
    "demand_type",
    "failure_kind",
    "cause_purpose",
    "machine_purpose",
    "machine_type",
)


def upgrade() -> None:
    op.create_table(
        "demand_days",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("source", sa.String(200), nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("team", sa.String(200), nullable=False),
        sa.Column("purpose", sa.String(120), nullable=False),
        sa.Column("demand_type", sa.String(16), nullable=False),
        sa.Column("failure_kind", sa.String(120), nullable=False),
        sa.Column("cause_purpose", sa.String(120), nullable=False),
        sa.Column("machine_purpose", sa.String(120), nullable=False),
        sa.Column("machine_type", sa.String(16), nullable=False),
        sa.Column("demands", sa.Integer(), nullable=False),
        sa.Column("handling_measured", sa.Integer(), nullable=False),
        sa.Column("handling_micros", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(*_KEY, name="pk_demand_days"),
    )
    op.create_index("ix_demand_days_purpose_day", "demand_days", ["purpose", "day"])
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        day = "date(timezone('UTC', f.occurred_at))"
    else:
        day = "date(f.occurred_at)"  # SQLite stores UTC text: its first 10 characters
    op.execute(
        f"""
        INSERT INTO demand_days ({", ".join(_KEY)}, demands, handling_measured, handling_micros)
        SELECT {day}, f.source, f.channel, coalesce(f.team, ''), f.purpose, f.demand_type,
               coalesce(f.failure_kind, ''), coalesce(f.cause_purpose, ''),
               d.purpose, d.demand_type, count(*), count(d.handling_seconds),
               coalesce(sum(CAST(round(d.handling_seconds * 1000000) AS BIGINT)), 0)
        FROM demand_facts f
        JOIN demands d ON d.source = f.source AND d.demand_id = f.demand_id
        GROUP BY {day}, f.source, f.channel, coalesce(f.team, ''), f.purpose, f.demand_type,
                 coalesce(f.failure_kind, ''), coalesce(f.cause_purpose, ''),
                 d.purpose, d.demand_type
        """
    )


def downgrade() -> None:
    op.drop_index("ix_demand_days_purpose_day", table_name="demand_days")
    op.drop_table("demand_days")
