"""an index for the ages of the open cases of a purpose

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-26

The purpose page's open-case ages (percentiles and the oldest) read a count and the k-th
youngest case off it, rather than every open case.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_cases_purpose_open_started", "cases", ["purpose", "status", "measured", "started_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_cases_purpose_open_started", table_name="cases")
