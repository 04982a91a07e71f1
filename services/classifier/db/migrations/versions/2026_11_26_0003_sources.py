"""classifier_labels and classifier_demand_texts keyed by the demand's source

Revision ID: classifier_0003_sources
Revises: classifier_0002_models
Create Date: 2026-11-26

A demand is (source, id) (docs/architecture.md, "Sources and the organisation"): a label
taught the model with whichever text had its id, another source's demand's included. Rows
written before this keep the empty source: an old label teaches with the text of the one
demand of its id, as a label without ``demand_source`` does.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "classifier_0003_sources"
down_revision: str | None = "classifier_0002_models"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_classifier_labels_demand", table_name="classifier_labels")
    with op.batch_alter_table("classifier_labels", recreate="always") as batch:
        batch.add_column(
            sa.Column("demand_source", sa.String(200), nullable=False, server_default=sa.text("''"))
        )
        batch.drop_constraint("uq_classifier_labels_label_id", type_="unique")
        batch.create_unique_constraint(
            "uq_classifier_labels_demand_source", ["demand_source", "label_id"]
        )
    op.create_index(
        "ix_classifier_labels_demand",
        "classifier_labels",
        ["demand_id", "demand_source", "labelled_at"],
    )
    with op.batch_alter_table("classifier_demand_texts", recreate="always") as batch:
        batch.add_column(
            sa.Column("source", sa.String(200), nullable=False, server_default=sa.text("''"))
        )
        batch.drop_constraint("pk_classifier_demand_texts", type_="primary")
        batch.create_primary_key("pk_classifier_demand_texts", ["source", "demand_id"])
    with op.batch_alter_table("classifier_demand_texts") as batch:
        batch.alter_column("source", existing_type=sa.String(200), server_default=None)


def downgrade() -> None:
    # Back to one row per id: where two sources share an id, all but one row must go first.
    with op.batch_alter_table("classifier_demand_texts", recreate="always") as batch:
        batch.drop_constraint("pk_classifier_demand_texts", type_="primary")
        batch.create_primary_key("pk_classifier_demand_texts", ["demand_id"])
        batch.drop_column("source")
    op.drop_index("ix_classifier_labels_demand", table_name="classifier_labels")
    with op.batch_alter_table("classifier_labels", recreate="always") as batch:
        batch.drop_constraint("uq_classifier_labels_demand_source", type_="unique")
        batch.create_unique_constraint("uq_classifier_labels_label_id", ["label_id"])
        batch.drop_column("demand_source")
    op.create_index(
        "ix_classifier_labels_demand", "classifier_labels", ["demand_id", "labelled_at"]
    )
