"""a label's "not a demand" answer (issue 11)

Revision ID: 0022
Revises: 0021
Create Date: 2026-11-28

A person may answer that a contact asked nothing of the organisation. The audit pair needs
it: the failure share is estimated among demands (shared/estimates.py). Every label stored
before said a demand, hence the default.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("demand_labels") as batch:
        batch.add_column(
            sa.Column("not_a_demand", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("demand_labels") as batch:
        batch.drop_column("not_a_demand")
