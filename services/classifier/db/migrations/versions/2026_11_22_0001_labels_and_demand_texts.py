"""classifier_labels and classifier_demand_texts: people's labels as training data, and the
demand texts a label may refer to (kept for the context window)

Revision ID: classifier_0001
Revises:
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "classifier_0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "classifier_labels",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("label_id", sa.String(200), nullable=False),
        sa.Column("demand_id", sa.String(200), nullable=False),
        sa.Column("demand_type", sa.String(16), nullable=False),
        sa.Column("failure_kind", sa.String(120), nullable=True),
        sa.Column("purpose", sa.String(120), nullable=False),
        sa.Column("labelled_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("labelled_by", sa.String(200), nullable=False),
        sa.Column("text", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_classifier_labels")),
        sa.UniqueConstraint("label_id", name=op.f("uq_classifier_labels_label_id")),
    )
    op.create_index(
        "ix_classifier_labels_demand", "classifier_labels", ["demand_id", "labelled_at"]
    )
    op.create_table(
        "classifier_demand_texts",
        sa.Column("demand_id", sa.String(200), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("demand_id", name=op.f("pk_classifier_demand_texts")),
    )
    op.create_index(
        op.f("ix_classifier_demand_texts_seen_at"), "classifier_demand_texts", ["seen_at"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_classifier_demand_texts_seen_at"), table_name="classifier_demand_texts")
    op.drop_table("classifier_demand_texts")
    op.drop_index("ix_classifier_labels_demand", table_name="classifier_labels")
    op.drop_table("classifier_labels")
