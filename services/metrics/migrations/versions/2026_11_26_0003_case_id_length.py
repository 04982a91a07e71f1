"""case ids of 205 characters: `auto-` and a demand id of up to 200

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26

A demand with the longest id intake accepts and no case ref opens the case
`auto-<demand id>`, which PostgreSQL refused (value too long for varchar(200)): the
consumer then retried that batch for ever.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLES = ("demand_facts", "cases")


def upgrade() -> None:
    for table in _TABLES:
        with op.batch_alter_table(table) as batch:
            batch.alter_column(
                "case_id", existing_type=sa.String(200), type_=sa.String(205), nullable=False
            )


def downgrade() -> None:
    for table in _TABLES:
        with op.batch_alter_table(table) as batch:
            batch.alter_column(
                "case_id", existing_type=sa.String(205), type_=sa.String(200), nullable=False
            )
