"""auth_api_keys: one row per API key, hashed

Revision ID: auth_0001
Revises:
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "auth_0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "auth_api_keys",
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("source", sa.String(200), nullable=False),
        sa.Column("scopes", sa.String(200), nullable=False),
        sa.Column("hash", sa.String(100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key_id", name=op.f("pk_auth_api_keys")),
    )
    op.create_index(op.f("ix_auth_api_keys_source"), "auth_api_keys", ["source"])


def downgrade() -> None:
    op.drop_index(op.f("ix_auth_api_keys_source"), table_name="auth_api_keys")
    op.drop_table("auth_api_keys")
