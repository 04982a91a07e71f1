"""intake_accepted_events keyed by (kind, source, event_id)

Revision ID: intake_0002
Revises: intake_0001
Create Date: 2026-11-26

An event is (source, id): a second source posting an id the first already used was
answered "duplicate" and its demand dropped. Rows written before this carry no source; they
are kept with the empty source, so they no longer match a repeat: a sender's retry of an id
accepted before the upgrade (within the retention window) is published once more, and the
consumers drop that repeat by (source, id) as they drop any redelivery.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "intake_0002"
down_revision: str | None = "intake_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLE = "intake_accepted_events"
_INDEX = "ix_intake_accepted_events_claimed_at"
_COLUMNS = "kind, event_id, state, claimed_at, published_at"


def _create(name: str, *, with_source: bool) -> None:
    key = ["kind", "source", "event_id"] if with_source else ["kind", "event_id"]
    source = [sa.Column("source", sa.String(200), nullable=False)] if with_source else []
    op.create_table(
        name,
        sa.Column("kind", sa.String(16), nullable=False),
        *source,
        sa.Column("event_id", sa.String(200), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint(*key, name=f"pk_{_TABLE}"),
        sqlite_with_rowid=False,
    )


def _swap(*, with_source: bool) -> None:
    # A new table and a copy: the primary key changes, and on SQLite a WITHOUT ROWID
    # table's key is its storage, so it cannot be altered in place.
    op.drop_index(_INDEX, table_name=_TABLE)
    op.rename_table(_TABLE, f"{_TABLE}_old")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE {_TABLE}_old RENAME CONSTRAINT pk_{_TABLE} TO pk_{_TABLE}_old")
    _create(_TABLE, with_source=with_source)
    if with_source:
        op.execute(
            f"INSERT INTO {_TABLE} (source, {_COLUMNS}) SELECT '', {_COLUMNS} FROM {_TABLE}_old"
        )
    else:  # one row per (kind, id): the published one, else any
        op.execute(
            f"INSERT INTO {_TABLE} ({_COLUMNS}) SELECT kind, event_id, MAX(state), "
            f"MIN(claimed_at), MAX(published_at) FROM {_TABLE}_old GROUP BY kind, event_id"
        )
    op.drop_table(f"{_TABLE}_old")
    op.create_index(_INDEX, _TABLE, ["claimed_at"])


def upgrade() -> None:
    _swap(with_source=True)


def downgrade() -> None:
    _swap(with_source=False)
