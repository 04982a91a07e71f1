"""case events, labels, derived demand facts and cases, recorded changes

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "case_events",
        sa.Column("event_id", sa.String(200), nullable=False),
        sa.Column("case_ref", sa.String(200), nullable=False),
        sa.Column("customer_ref", sa.String(200), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("occurred_at", _WHEN, nullable=False),
        sa.Column("purpose", sa.String(120), nullable=True),
        sa.Column("source", sa.String(200), nullable=True),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_case_events")),
    )
    op.create_index("ix_case_events_customer_ref", "case_events", ["customer_ref"])
    op.create_table(
        "demand_labels",
        sa.Column("label_id", sa.String(200), nullable=False),
        sa.Column("demand_id", sa.String(200), nullable=False),
        sa.Column("demand_type", sa.String(16), nullable=False),
        sa.Column("failure_kind", sa.String(120), nullable=True),
        sa.Column("purpose", sa.String(120), nullable=False),
        sa.Column("labelled_by", sa.String(200), nullable=False),
        sa.Column("labelled_at", _WHEN, nullable=False),
        sa.PrimaryKeyConstraint("label_id", name=op.f("pk_demand_labels")),
    )
    op.create_index("ix_demand_labels_demand_id", "demand_labels", ["demand_id"])
    op.create_table(
        "demand_facts",
        sa.Column("demand_id", sa.String(200), nullable=False),
        sa.Column("customer_ref", sa.String(200), nullable=False),
        sa.Column("case_id", sa.String(200), nullable=False),
        sa.Column("purpose", sa.String(120), nullable=False),
        sa.Column("demand_type", sa.String(16), nullable=False),
        sa.Column("failure_kind", sa.String(120), nullable=True),
        sa.Column("cause_purpose", sa.String(120), nullable=True),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("team", sa.String(200), nullable=True),
        sa.Column("occurred_at", _WHEN, nullable=False),
        sa.Column("labelled", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("demand_id", name=op.f("pk_demand_facts")),
    )
    op.create_index("ix_demand_facts_customer_ref", "demand_facts", ["customer_ref"])
    op.create_index("ix_demand_facts_purpose_occurred", "demand_facts", ["purpose", "occurred_at"])
    op.create_index("ix_demand_facts_purpose_type", "demand_facts", ["purpose", "demand_type"])
    op.create_table(
        "cases",
        sa.Column("customer_ref", sa.String(200), nullable=False),
        sa.Column("case_id", sa.String(200), nullable=False),
        sa.Column("case_ref", sa.String(200), nullable=True),
        sa.Column("purpose", sa.String(120), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("measured", sa.Boolean(), nullable=False),
        sa.Column("started_at", _WHEN, nullable=False),
        sa.Column("fulfilled_at", _WHEN, nullable=True),
        sa.Column("end_to_end_seconds", sa.Float(), nullable=True),
        sa.Column("reopened", sa.Integer(), nullable=False),
        sa.Column("contacts", sa.Integer(), nullable=False),
        sa.Column("failure_contacts", sa.Integer(), nullable=False),
        sa.Column("channels", sa.String(300), nullable=False),
        sa.Column("first_channel", sa.String(32), nullable=True),
        sa.Column("team", sa.String(200), nullable=True),
        sa.Column("one_stop", sa.Boolean(), nullable=False),
        sa.Column("last_activity_at", _WHEN, nullable=False),
        sa.PrimaryKeyConstraint("customer_ref", "case_id", name=op.f("pk_cases")),
    )
    op.create_index(
        "ix_cases_purpose_status",
        "cases",
        ["purpose", "status", "measured", "contacts", "one_stop"],
    )
    op.create_index("ix_cases_purpose_fulfilled", "cases", ["purpose", "fulfilled_at"])
    op.create_index("ix_cases_purpose_end_to_end", "cases", ["purpose", "end_to_end_seconds"])
    op.create_index("ix_cases_case_id", "cases", ["case_id"])
    op.create_table(
        "purpose_changes",
        sa.Column("change_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("purpose", sa.String(120), nullable=False),
        sa.Column("changed_at", _WHEN, nullable=False),
        sa.Column("note", sa.String(2000), nullable=False),
        sa.Column("recorded_at", _WHEN, nullable=False),
        sa.PrimaryKeyConstraint("change_id", name=op.f("pk_purpose_changes")),
    )
    op.create_index("ix_purpose_changes_purpose", "purpose_changes", ["purpose"])


def downgrade() -> None:
    op.drop_table("purpose_changes")
    op.drop_table("cases")
    op.drop_table("demand_facts")
    op.drop_table("demand_labels")
    op.drop_table("case_events")
