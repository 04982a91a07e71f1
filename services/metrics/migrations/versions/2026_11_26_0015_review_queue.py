"""review_queue: the demands that may wait for a person's review, filled from what is stored

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-26

A demand whose words are kept, not labelled and not an audit item; the write path keeps it
from here on (db/review_entries.py). The queue's head and count read this table, the size of
the queue, instead of searching every demand for the unlabelled ones.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "review_queue",
        sa.Column("source", sa.String(200), nullable=False),
        sa.Column("demand_id", sa.String(200), nullable=False),
        sa.Column("purpose", sa.String(120), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("needs_review", sa.Boolean(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("source", "demand_id", name="pk_review_queue"),
    )
    op.create_index(
        "ix_review_queue_order",
        "review_queue",
        ["confidence", "occurred_at", "source", "demand_id", "needs_review"],
    )
    op.create_index(
        "ix_review_queue_purpose_order",
        "review_queue",
        ["purpose", "confidence", "occurred_at", "source", "demand_id", "needs_review"],
    )
    op.create_index(
        "ix_review_queue_source_order",
        "review_queue",
        ["source", "confidence", "occurred_at", "demand_id", "needs_review"],
    )
    # The same set db/review_entries.py keeps (its members()), written out once.
    op.execute(
        """
        INSERT INTO review_queue (source, demand_id, purpose, confidence, needs_review,
                                  occurred_at)
        SELECT d.source, d.demand_id, d.purpose, d.confidence, d.needs_review, d.occurred_at
        FROM queue_texts q
        JOIN demands d ON d.source = q.source AND d.demand_id = q.demand_id
        WHERE NOT EXISTS (
                SELECT 1 FROM demand_labels l
                WHERE l.demand_source = d.source AND l.demand_id = d.demand_id)
          AND NOT EXISTS (
                SELECT 1 FROM audit_items a
                WHERE a.source = d.source AND a.demand_id = d.demand_id)
        """
    )


def downgrade() -> None:
    op.drop_index("ix_review_queue_source_order", table_name="review_queue")
    op.drop_index("ix_review_queue_purpose_order", table_name="review_queue")
    op.drop_index("ix_review_queue_order", table_name="review_queue")
    op.drop_table("review_queue")
