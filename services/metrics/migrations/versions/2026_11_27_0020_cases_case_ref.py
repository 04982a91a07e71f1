"""a case by the source's own reference off an index, not a scan of every case

Revision ID: 0020
Revises: 0019
Create Date: 2026-11-27

``GET /v1/cases/<ref>`` looks a case up by its id and then by the source's case reference;
the cases had no index by reference, so the second read scanned the whole table: 0.7 ms of
the database thread's CPU a read at the whole-stack bench's 60,000 demands (its probes poll
it every 10 ms), and growing with the table. Partial (``case_ref IS NOT NULL``): a case
without a reference, most of them, costs its write nothing more.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_WITH_A_REF = sa.text("case_ref IS NOT NULL")


def upgrade() -> None:
    op.create_index(
        "ix_cases_case_ref",
        "cases",
        ["case_ref", "source"],
        sqlite_where=_WITH_A_REF,
        postgresql_where=_WITH_A_REF,
    )


def downgrade() -> None:
    op.drop_index("ix_cases_case_ref", table_name="cases")
