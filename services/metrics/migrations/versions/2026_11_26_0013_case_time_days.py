"""case_time_days: fulfilled cases counted per day and band of end-to-end time; the cases'
percentile index carries fulfilled_at

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-26

Filled from the cases stored, in Python: the bands are bounds computed in Python
(db/aggregates.time_band), which SQLite has no function for; the write path keeps the table
from here on.
"""

from bisect import bisect_right
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, date, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As db/aggregates._BAND_BOUNDS (copied: a migration must not change when the code does).
_BOUNDS = [2 ** (band / 8) for band in range(8 * 32 + 1)]


def _day(moment: datetime | str) -> date:
    if isinstance(moment, str):  # SQLite hands back its text
        return date.fromisoformat(moment[:10])
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.date()


def upgrade() -> None:
    table = op.create_table(
        "case_time_days",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("source", sa.String(200), nullable=False),
        sa.Column("purpose", sa.String(120), nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("team", sa.String(200), nullable=False),
        sa.Column("band", sa.Integer(), nullable=False),
        sa.Column("cases", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint(
            "day", "source", "purpose", "channel", "team", "band", name="pk_case_time_days"
        ),
    )
    op.drop_index("ix_cases_purpose_end_to_end", table_name="cases")
    op.create_index(
        "ix_cases_purpose_end_to_end_fulfilled",
        "cases",
        ["purpose", "end_to_end_seconds", "fulfilled_at"],
    )
    cases = sa.table(
        "cases",
        sa.column("source"),
        sa.column("purpose"),
        sa.column("first_channel"),
        sa.column("team"),
        sa.column("fulfilled_at"),
        sa.column("end_to_end_seconds"),
    )
    counts: Counter[tuple[date, str, str, str, str, int]] = Counter()
    rows = op.get_bind().execute(
        sa.select(
            cases.c.source,
            cases.c.purpose,
            cases.c.first_channel,
            cases.c.team,
            cases.c.fulfilled_at,
            cases.c.end_to_end_seconds,
        ).where(cases.c.end_to_end_seconds.is_not(None), cases.c.fulfilled_at.is_not(None))
    )
    for source, purpose, channel, team, fulfilled_at, seconds in rows:
        band = bisect_right(_BOUNDS, float(seconds)) - 1
        counts[(_day(fulfilled_at), source, purpose or "", channel or "", team or "", band)] += 1
    keys = ("day", "source", "purpose", "channel", "team", "band")
    if counts:
        op.bulk_insert(
            table,
            [{**dict(zip(keys, key, strict=True)), "cases": n} for key, n in counts.items()],
        )


def downgrade() -> None:
    op.drop_index("ix_cases_purpose_end_to_end_fulfilled", table_name="cases")
    op.create_index("ix_cases_purpose_end_to_end", "cases", ["purpose", "end_to_end_seconds"])
    op.drop_table("case_time_days")
