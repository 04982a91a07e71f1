"""classifier_labels keeps a label's "not a demand"

Revision ID: classifier_0006_not_a_demand
Revises: classifier_0005_label_reason
Create Date: 2026-11-28

A person may answer that a contact was not a demand (``DemandLabelled.not_a_demand``). Such
a label teaches the model neither a type nor a purpose, so training must tell it apart
(docs/services/classifier.md). Every row stored before said a demand, hence the default.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "classifier_0006_not_a_demand"
down_revision: str | None = "classifier_0005_label_reason"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("classifier_labels") as batch:
        batch.add_column(
            sa.Column("not_a_demand", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("classifier_labels") as batch:
        batch.drop_column("not_a_demand")
