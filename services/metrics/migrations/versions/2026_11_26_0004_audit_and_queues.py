"""the audit sample and the review queue: why a label was made, the audit's strata and
items, the texts the queues show, each demand's ISO week and needs_review

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26

Labels already stored were made before the audit existed: they are corrections (the
default), so none of them enters the estimate.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The Monday of occurred_at's ISO week, in UTC (occurred_at is stored in UTC).
_WEEK_START = {
    "postgresql": "CAST(date_trunc('week', occurred_at AT TIME ZONE 'UTC') AS date)",
    "sqlite": "date(occurred_at, 'weekday 0', '-6 days')",
}


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    with op.batch_alter_table("demand_labels") as batch:
        batch.add_column(
            sa.Column(
                "reason", sa.String(16), nullable=False, server_default=sa.text("'correction'")
            )
        )
    with op.batch_alter_table("demands") as batch:
        batch.add_column(
            sa.Column("needs_review", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("week_start", sa.Date(), nullable=True))
    op.execute(f"UPDATE demands SET week_start = {_WEEK_START[dialect]}")
    with op.batch_alter_table("demands") as batch:
        batch.alter_column("week_start", existing_type=sa.Date(), nullable=False)
    op.create_index(
        "ix_demands_purpose_week_type", "demands", ["purpose", "week_start", "demand_type"]
    )
    op.create_table(
        "audit_strata",
        sa.Column("purpose", sa.String(120), nullable=False),
        sa.Column("week_start", sa.Date(), nullable=False),
        sa.Column("population", sa.Integer(), nullable=False),
        sa.Column("inclusion_probability", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("purpose", "week_start", name=op.f("pk_audit_strata")),
    )
    op.create_table(
        "audit_items",
        sa.Column("demand_id", sa.String(200), nullable=False),
        sa.Column("purpose", sa.String(120), nullable=False),
        sa.Column("week_start", sa.Date(), nullable=False),
        sa.Column("draw", sa.Float(), nullable=False),
        sa.Column("machine_demand_type", sa.String(16), nullable=False),
        sa.Column("machine_failure_kind", sa.String(120), nullable=True),
        sa.Column("model_version", sa.String(100), nullable=False),
        sa.PrimaryKeyConstraint("demand_id", name=op.f("pk_audit_items")),
    )
    op.create_index("ix_audit_items_stratum_draw", "audit_items", ["purpose", "week_start", "draw"])
    op.create_table(
        "queue_texts",
        sa.Column("demand_id", sa.String(200), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("demand_id", name=op.f("pk_queue_texts")),
    )
    op.create_index("ix_queue_texts_received_at", "queue_texts", ["received_at"])


def downgrade() -> None:
    op.drop_table("queue_texts")
    op.drop_table("audit_items")
    op.drop_table("audit_strata")
    op.drop_index("ix_demands_purpose_week_type", table_name="demands")
    with op.batch_alter_table("demands") as batch:
        batch.drop_column("week_start")
        batch.drop_column("needs_review")
    with op.batch_alter_table("demand_labels") as batch:
        batch.drop_column("reason")
