"""special-cause signals, raised once, and the outbox of capability.signals

Revision ID: 0007
Revises: 0005
Create Date: 2026-11-26

Signals were remembered in each process's memory, so a restart or a second replica raised
them again. A signal is now a row, unique on what it is (purpose, measure, rule, point):
the first insert raises it, and ``published_at`` marks it sent to capability.signals.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "special_cause_signals",
        sa.Column("signal_id", sa.String(36), nullable=False),
        sa.Column("purpose", sa.String(120), nullable=False),
        sa.Column("measure", sa.String(64), nullable=False),
        sa.Column("rule", sa.String(64), nullable=False),
        sa.Column("point_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("owner", sa.String(63), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("centre_line", sa.Float(), nullable=False),
        sa.Column("lower_natural_process_limit", sa.Float(), nullable=False),
        sa.Column("upper_natural_process_limit", sa.Float(), nullable=False),
        sa.Column("raised_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("signal_id", name=op.f("pk_special_cause_signals")),
        sa.UniqueConstraint(
            "purpose", "measure", "rule", "point_at", name=op.f("uq_special_cause_signals_purpose")
        ),
    )
    op.create_index(
        op.f("ix_special_cause_signals_published_at"),
        "special_cause_signals",
        ["published_at"],
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_special_cause_signals_published_at"), "special_cause_signals")
    op.drop_table("special_cause_signals")
