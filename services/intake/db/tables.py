"""The idempotency ledger. Queries live in services/intake/db/repository.py."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, LargeBinary, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.database.naming import named_metadata

PENDING = "pending"  # claimed by an intake instance, not yet acknowledged by the broker
PUBLISHED = "published"  # acknowledged: a repeat is a duplicate

# A claim's token (ledger.new_token): 8 random bytes per process, drawn again in a forked
# child, and an 8-byte count per request, so no two requests of any instance share one.
TOKEN_BYTES = 16


class IntakeBase(DeclarativeBase):
    metadata = named_metadata()


class AcceptedEvent(IntakeBase):
    """One event id intake has claimed or published, per kind of event and source.

    The kind is part of the key because each kind goes to its own topic and is
    deduplicated there by id: a case event may share an id with a demand. The source is,
    because an event is (source, id) as CloudEvents has it: two sending systems may use one
    id, and neither may learn of the other's (docs/architecture.md, "Sources and the
    organisation"). A label's source is that of the demand it labels.
    """

    __tablename__ = "intake_accepted_events"

    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    source: Mapped[str] = mapped_column(String(200), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    claimed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The token of the request whose claim holds the row (a take-over writes its own). A
    # pending row whose token is in intake_confirmed_claims is published: a request's
    # confirmation is one appended row, not an UPDATE of each of its keys (migration
    # intake_0004).
    claim_token: Mapped[bytes | None] = mapped_column(LargeBinary(TOKEN_BYTES))

    # On SQLite the row lives in the primary key's b-tree: one tree less to write per id.
    # No other index: every read is by the key but the purge's, which no index would serve
    # (migration intake_0003).
    __table_args__ = ({"sqlite_with_rowid": False},)


class ConfirmedClaim(IntakeBase):
    """A request whose claims the broker acknowledged: every row claimed with its token is
    published (as if its state said so), from ``published_at``."""

    __tablename__ = "intake_confirmed_claims"

    token: Mapped[bytes] = mapped_column(LargeBinary(TOKEN_BYTES), primary_key=True)
    published_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = ({"sqlite_with_rowid": False},)
