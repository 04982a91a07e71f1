"""a recorded change is a SystemChanged event: its event id, unique

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26

Changes recorded before were rows only: each gets an id now, so that
`demandscope metrics changes export-to-topic` publishes it once under that id and the
consumer, which inserts by event id, finds it already stored.
"""

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("purpose_changes") as batch:
        batch.add_column(sa.Column("event_id", sa.String(200), nullable=True))
    changes = sa.table("purpose_changes", sa.column("change_id"), sa.column("event_id"))
    connection = op.get_bind()
    for (change_id,) in connection.execute(sa.select(changes.c.change_id)).all():
        connection.execute(
            changes.update()
            .where(changes.c.change_id == change_id)
            .values(event_id=f"change-{uuid.uuid4()}")
        )
    with op.batch_alter_table("purpose_changes") as batch:
        batch.alter_column("event_id", existing_type=sa.String(200), nullable=False)
        batch.create_unique_constraint(op.f("uq_purpose_changes_event_id"), ["event_id"])


def downgrade() -> None:
    with op.batch_alter_table("purpose_changes") as batch:
        batch.drop_constraint(op.f("uq_purpose_changes_event_id"), type_="unique")
        batch.drop_column("event_id")
