"""classifier_demand_texts names the demand's customer

Revision ID: classifier_0004_text_customer
Revises: classifier_0003_sources
Create Date: 2026-11-26

A label is keyed by its demand and a customer's context by the customer, so the instance
that reads a label may not own the customer: it looks the customer up here and forwards the
label to the owner (docs/operations.md, "Running several instances"). Rows written before
this name no customer (a label for them reaches the context only where it is already held).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "classifier_0004_text_customer"
down_revision: str | None = "classifier_0003_sources"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("classifier_demand_texts") as batch:
        batch.add_column(sa.Column("customer_ref", sa.String(200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("classifier_demand_texts") as batch:
        batch.drop_column("customer_ref")
