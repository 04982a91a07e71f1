"""classifier_model_versions, classifier_model_current and classifier_leases: model versions
shared by every classifier instance, the one current pointer, and the one-trainer lease

Revision ID: classifier_0002_models
Revises: classifier_0001
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "classifier_0002_models"
down_revision: str | None = "classifier_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "classifier_model_versions",
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("reason", sa.String(200), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("model_format", sa.Integer(), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("model", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_classifier_model_versions")),
    )
    op.create_index(
        op.f("ix_classifier_model_versions_created_at"),
        "classifier_model_versions",
        ["created_at"],
    )
    op.create_table(
        "classifier_model_current",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("changed_by", sa.String(200), nullable=False),
        sa.Column("reason", sa.String(200), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_classifier_model_current_one_row")),
        sa.ForeignKeyConstraint(
            ["version"],
            ["classifier_model_versions.version"],
            name=op.f("fk_classifier_model_current_version_classifier_model_versions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_classifier_model_current")),
    )
    op.create_table(
        "classifier_leases",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("holder", sa.String(200), nullable=False),
        sa.Column("taken_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_classifier_leases")),
    )


def downgrade() -> None:
    op.drop_table("classifier_leases")
    op.drop_table("classifier_model_current")
    op.drop_index(
        op.f("ix_classifier_model_versions_created_at"), table_name="classifier_model_versions"
    )
    op.drop_table("classifier_model_versions")
