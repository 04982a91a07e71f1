"""demands: one row per classified demand

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "demands",
        sa.Column("demand_id", sa.String(200), nullable=False),
        sa.Column("customer_ref", sa.String(200), nullable=False),
        sa.Column("case_ref", sa.String(200), nullable=True),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("source", sa.String(200), nullable=False),
        sa.Column("team", sa.String(200), nullable=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("purpose", sa.String(120), nullable=False),
        sa.Column("demand_type", sa.String(16), nullable=False),
        sa.Column("failure_kind", sa.String(120), nullable=True),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("method", sa.String(16), nullable=False),
        sa.Column("model_version", sa.String(100), nullable=False),
        sa.Column("caused_by_kind", sa.String(16), nullable=True),
        sa.Column("caused_by_ref", sa.String(200), nullable=True),
        sa.Column("classified_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("demand_id", name=op.f("pk_demands")),
    )
    op.create_index("ix_demands_purpose_type", "demands", ["purpose", "demand_type"])
    op.create_index("ix_demands_customer", "demands", ["customer_ref", "occurred_at"])


def downgrade() -> None:
    op.drop_index("ix_demands_customer", table_name="demands")
    op.drop_index("ix_demands_purpose_type", table_name="demands")
    op.drop_table("demands")
