"""the demands lose two secondary indexes no query needs: by id alone, by purpose and type

Revision ID: 0019
Revises: 0018
Create Date: 2026-11-27

Every demand stored live paid for five secondary indexes. ``ix_demands_demand_id`` served
only lookups by id without a source (an old label's, a queue item named without one); those
now walk the few sources off the primary key, (source, demand_id), instead. Every query by
purpose and type also reads the week or the time, which ``ix_demands_purpose_week_type``
and ``ix_demands_purpose_occurred`` carry, so ``ix_demands_purpose_type`` was never the
better index. Intake's ids are random, so the id index alone put each insert at a random
page: with it and the purpose/type index gone, a demand's insert costs about a fifth less
at the bench's size and about two fifths less with random ids.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_demands_demand_id", table_name="demands")
    op.drop_index("ix_demands_purpose_type", table_name="demands")


def downgrade() -> None:
    op.create_index("ix_demands_purpose_type", "demands", ["purpose", "demand_type"])
    op.create_index("ix_demands_demand_id", "demands", ["demand_id"])
