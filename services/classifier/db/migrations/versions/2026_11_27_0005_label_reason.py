"""classifier_labels keeps each label's reason

Revision ID: classifier_0005_label_reason
Revises: classifier_0004_text_customer
Create Date: 2026-11-27

Why a person labelled a demand (``DemandLabelled.reason``: review, audit or correction).
Which labels came from the blind audit cannot be told afterwards, so it is kept
(docs/services/classifier.md, "The value/failure prior"). Rows written before this have no
reason (NULL), read as not an audit.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "classifier_0005_label_reason"
down_revision: str | None = "classifier_0004_text_customer"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("classifier_labels") as batch:
        batch.add_column(sa.Column("reason", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("classifier_labels") as batch:
        batch.drop_column("reason")
