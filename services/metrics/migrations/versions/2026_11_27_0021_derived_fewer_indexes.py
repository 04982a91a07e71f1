"""the cases and the demand facts lose the two indexes the summary's counts no longer read

Revision ID: 0021
Revises: 0020
Create Date: 2026-11-27

Every case a live batch opens is inserted into each of the cases' secondary indexes, every
case it closes moves in those whose columns change, and every demand's fact is inserted into
each of the facts'. ``ix_cases_purpose_status`` (purpose, status, measured, contacts,
one_stop) and ``ix_demand_facts_purpose_type`` (purpose, demand_type) answered the purpose
summary's counts of every row; those are now read from the daily tables (demand_days,
case_days) for whole days, and a purpose's other periods by time off
``ix_demand_facts_purpose_occurred`` and ``ix_cases_purpose_fulfilled``. What still reads
every row of a period (an arbitrary period over every purpose) scans either way: it now
scans the (purpose, time) or (purpose, status, measured, started) index, the time or
status checked in the index. The write path's work per event, in process: about 5 µs less
(docs/performance.md, issue 14).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_cases_purpose_status", table_name="cases")
    op.drop_index("ix_demand_facts_purpose_type", table_name="demand_facts")


def downgrade() -> None:
    op.create_index("ix_demand_facts_purpose_type", "demand_facts", ["purpose", "demand_type"])
    op.create_index(
        "ix_cases_purpose_status",
        "cases",
        ["purpose", "status", "measured", "contacts", "one_stop"],
    )
