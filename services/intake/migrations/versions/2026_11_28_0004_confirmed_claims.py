"""a request's confirmation as one appended row: claim tokens and intake_confirmed_claims

Revision ID: intake_0004
Revises: intake_0003
Create Date: 2026-11-28

A claim writes its request's token on each row it claims; the broker's acknowledgement is
confirmed by appending the token to intake_confirmed_claims, which publishes every row still
claimed with it. Before, each key's row was updated (a seek and a rewrite of the row): about
a tenth of a batched event's instructions. Rows written before carry no token and keep
their state. Going down, rows published by a token are marked published first, so no
acknowledged id is forgotten.

Instances of the code before this revision, left running on the same database, read only
the state: a row published by a token is pending to them (a repeat is answered 409, after
the lease taken over, published again and answered 202, and their release can delete it).
So a rolling upgrade from before this revision runs with DEMANDSCOPE_INTAKE_LEDGER_CONFIRM_BY_TOKEN
=false (confirm by key, read both) until no older instance is left, and a rollback turns it
off, waits a lease, then downgrades (``demandscope intake migrate --downgrade-to
intake_0003``) before the older code starts: docs/operations.md.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "intake_0004"
down_revision: str | None = "intake_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLE = "intake_accepted_events"
_CONFIRMED = "intake_confirmed_claims"


def upgrade() -> None:
    op.add_column(_TABLE, sa.Column("claim_token", sa.LargeBinary(16), nullable=True))
    op.create_table(
        _CONFIRMED,
        sa.Column("token", sa.LargeBinary(16), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("token", name=f"pk_{_CONFIRMED}"),
        sqlite_with_rowid=False,
    )


def downgrade() -> None:
    op.execute(
        f"UPDATE {_TABLE} SET state = 'published', published_at = "
        f"(SELECT published_at FROM {_CONFIRMED} WHERE token = claim_token) "
        f"WHERE state = 'pending' AND claim_token IN (SELECT token FROM {_CONFIRMED})"
    )
    op.drop_table(_CONFIRMED)
    op.drop_column(_TABLE, "claim_token")
