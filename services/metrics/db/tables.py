"""Typed SQLAlchemy 2 tables. Queries live in the other modules of db/, nowhere else."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.database.naming import named_metadata

# A stitched case without the source's ref is `auto-<first demand id>`: 5 more than an id.
CASE_ID_LENGTH = 205


class Base(DeclarativeBase):
    metadata = named_metadata()


class Demand(Base):
    """One classified demand. The primary key is (source, the sender's event id): a demand is
    its source and id (docs/architecture.md, "Sources and the organisation"), and idempotency.
    A customer is the source's own reference, so a customer is (source, customer_ref) too."""

    __tablename__ = "demands"

    source: Mapped[str] = mapped_column(String(200), primary_key=True)
    demand_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    customer_ref: Mapped[str] = mapped_column(String(200))
    case_ref: Mapped[str | None] = mapped_column(String(200))
    channel: Mapped[str] = mapped_column(String(32))
    team: Mapped[str | None] = mapped_column(String(200))
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    purpose: Mapped[str] = mapped_column(String(120))
    demand_type: Mapped[str] = mapped_column(String(16))
    failure_kind: Mapped[str | None] = mapped_column(String(120))
    confidence: Mapped[float] = mapped_column(Float)
    method: Mapped[str] = mapped_column(String(16))
    model_version: Mapped[str] = mapped_column(String(100))
    caused_by_kind: Mapped[str | None] = mapped_column(String(16))
    caused_by_ref: Mapped[str | None] = mapped_column(String(200))
    classified_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Staff seconds the source says the demand took (its handling_seconds attribute), if any.
    handling_seconds: Mapped[float | None] = mapped_column(Float)
    needs_review: Mapped[bool] = mapped_column(Boolean, server_default=false())
    # The ISO week (its Monday, UTC) of occurred_at: with purpose, the audit's stratum.
    week_start: Mapped[date] = mapped_column(Date)

    __table_args__ = (
        # Each index is paid for by every demand stored live. None by id alone: a lookup
        # without a source walks the few sources off the key (sql.demand_sources).
        Index("ix_demands_customer", "source", "customer_ref", "occurred_at"),
        # Stratum sizes, and the machine's counts per stratum for the estimate, off the index.
        Index("ix_demands_purpose_week_type", "purpose", "week_start", "demand_type"),
        # The same counts over a period that is not whole days (the publisher's trailing
        # window), off the index: without it, every demand was read.
        Index("ix_demands_purpose_occurred", "purpose", "occurred_at", "week_start", "demand_type"),
    )


class CaseEventRow(Base):
    """One case event as received. (source, the sender's event id) is the key: idempotency.
    An event without a source (none comes from intake) is kept with the empty source."""

    __tablename__ = "case_events"

    source: Mapped[str] = mapped_column(String(200), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    case_ref: Mapped[str] = mapped_column(String(200))
    customer_ref: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(16))
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    purpose: Mapped[str | None] = mapped_column(String(120))

    __table_args__ = (Index("ix_case_events_customer", "source", "customer_ref"),)


class LabelRow(Base):
    """A person's label of a demand, as received. Keyed by (the demand's source, the label's
    own event id). A label written before labels named the demand's source is kept with the
    empty source and applies only to the one demand of that id, if only one source has it."""

    __tablename__ = "demand_labels"

    demand_source: Mapped[str] = mapped_column(String(200), primary_key=True)
    label_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    demand_id: Mapped[str] = mapped_column(String(200))
    demand_type: Mapped[str] = mapped_column(String(16))
    failure_kind: Mapped[str | None] = mapped_column(String(120))
    purpose: Mapped[str] = mapped_column(String(120))
    labelled_by: Mapped[str] = mapped_column(String(200))
    labelled_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # review, audit or correction: only audit labels enter the failure-share estimate.
    reason: Mapped[str] = mapped_column(String(16), server_default=text("'correction'"))
    # The person's "not a demand" (demand_type is then 'unknown'): the audit pair needs it.
    not_a_demand: Mapped[bool] = mapped_column(Boolean, server_default=false())

    __table_args__ = (Index("ix_demand_labels_demand", "demand_id", "demand_source"),)


class DemandFactRow(Base):
    """Derived: a demand as it counts now (latest label applied) and the case it joined.

    Rewritten for a customer whenever anything about that customer arrives, from the
    received rows above: a pure function of them, so redelivery and rebuild agree."""

    __tablename__ = "demand_facts"

    source: Mapped[str] = mapped_column(String(200), primary_key=True)
    demand_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    customer_ref: Mapped[str] = mapped_column(String(200))
    case_id: Mapped[str] = mapped_column(String(CASE_ID_LENGTH))
    purpose: Mapped[str] = mapped_column(String(120))
    demand_type: Mapped[str] = mapped_column(String(16))
    failure_kind: Mapped[str | None] = mapped_column(String(120))
    cause_purpose: Mapped[str | None] = mapped_column(String(120))
    channel: Mapped[str] = mapped_column(String(32))
    team: Mapped[str | None] = mapped_column(String(200))
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    labelled: Mapped[bool] = mapped_column(Boolean)

    __table_args__ = (
        # A purpose's demands over a period that is not whole days (whole days are read
        # from demand_days). No (purpose, type) index: every fact stored paid for it, and
        # the counts it covered are the daily table's now (migration 0021).
        Index("ix_demand_facts_purpose_occurred", "purpose", "occurred_at"),
        Index("ix_demand_facts_customer", "source", "customer_ref"),
    )


class CaseRow(Base):
    """Derived: one case on the customer's clock (see domain/cases.py)."""

    __tablename__ = "cases"

    source: Mapped[str] = mapped_column(String(200), primary_key=True)
    customer_ref: Mapped[str] = mapped_column(String(200), primary_key=True)
    case_id: Mapped[str] = mapped_column(String(CASE_ID_LENGTH), primary_key=True)
    case_ref: Mapped[str | None] = mapped_column(String(200))
    purpose: Mapped[str | None] = mapped_column(String(120))
    status: Mapped[str] = mapped_column(String(16))
    measured: Mapped[bool] = mapped_column(Boolean)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    fulfilled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    end_to_end_seconds: Mapped[float | None] = mapped_column(Float)
    reopened: Mapped[int] = mapped_column(Integer)
    contacts: Mapped[int] = mapped_column(Integer)
    failure_contacts: Mapped[int] = mapped_column(Integer)
    channels: Mapped[str] = mapped_column(String(300))  # comma-separated, sorted
    first_channel: Mapped[str | None] = mapped_column(String(32))
    team: Mapped[str | None] = mapped_column(String(200))
    one_stop: Mapped[bool] = mapped_column(Boolean)
    last_activity_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        # A purpose's cases fulfilled over a period that is not whole days (whole days are
        # case_days'), and the charts' series in time order. Each index here is written by
        # every case a batch opens and moved by those it closes: the (purpose, status, ...)
        # index the summary's counts of every case once read went (migration 0021).
        Index("ix_cases_purpose_fulfilled", "purpose", "fulfilled_at"),
        # Open cases' ages: the k-th youngest read off the index, the filters (source,
        # first channel, team) checked off it too (migration 0018).
        Index(
            "ix_cases_purpose_open_started_filtered",
            "purpose",
            "status",
            "measured",
            "started_at",
            "source",
            "first_channel",
            "team",
        ),
        # Percentiles read the k-th end-to-end time of a purpose straight off this index,
        # the period and the filters checked off it too (no row read for a time outside).
        Index(
            "ix_cases_purpose_end_to_end_filtered",
            "purpose",
            "end_to_end_seconds",
            "fulfilled_at",
            "source",
            "first_channel",
            "team",
        ),
        Index("ix_cases_case_id", "case_id"),
        # A case by the source's own reference (GET /v1/cases/<ref>, the bench's probes):
        # without it every such read scanned the whole table. Partial: a case without a
        # reference (most of them) costs its write nothing more (migration 0020).
        Index(
            "ix_cases_case_ref",
            "case_ref",
            "source",
            sqlite_where=text("case_ref IS NOT NULL"),
            postgresql_where=text("case_ref IS NOT NULL"),
        ),
    )


class PurposeChangeRow(Base):
    """A change to the system recorded by a person: the XmR baseline starts again here."""

    __tablename__ = "purpose_changes"

    change_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # The SystemChanged event's id: the idempotency key, and the change's id in the API.
    event_id: Mapped[str] = mapped_column(String(200), unique=True)
    purpose: Mapped[str] = mapped_column(String(120), index=True)
    changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    note: Mapped[str] = mapped_column(String(2000))
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Who recorded it: a person's username (pages) or 'key:<source>' (the API).
    recorded_by: Mapped[str | None] = mapped_column(String(200))


class AuditStratumRow(Base):
    """One stratum of the audit (first machine purpose, ISO week): its size now and the
    inclusion probability every one of its demands is drawn with (domain/audit.py)."""

    __tablename__ = "audit_strata"

    purpose: Mapped[str] = mapped_column(String(120), primary_key=True)
    week_start: Mapped[date] = mapped_column(Date, primary_key=True)
    population: Mapped[int] = mapped_column(Integer)
    inclusion_probability: Mapped[float] = mapped_column(Float)


class AuditItemRow(Base):
    """A demand in the audit sample, with the machine's first label of it: the audit pair's
    machine half, kept whatever happens to the demand later. Completed by a label whose
    reason is 'audit' (demand_labels); leaves the sample only if its stratum's inclusion
    probability falls below its draw."""

    __tablename__ = "audit_items"

    source: Mapped[str] = mapped_column(String(200), primary_key=True)
    demand_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(120))
    week_start: Mapped[date] = mapped_column(Date)
    draw: Mapped[float] = mapped_column(Float)
    machine_demand_type: Mapped[str] = mapped_column(String(16))
    machine_failure_kind: Mapped[str | None] = mapped_column(String(120))
    model_version: Mapped[str] = mapped_column(String(100))

    __table_args__ = (Index("ix_audit_items_stratum_draw", "purpose", "week_start", "draw"),)


class QueueTextRow(Base):
    """The customer's (redacted) words of a demand in the review or audit queue, kept only
    while a queue needs them and at most ``queue_text_retention_days`` after intake received
    them. Never in the figures' tables."""

    __tablename__ = "queue_texts"

    source: Mapped[str] = mapped_column(String(200), primary_key=True)
    demand_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    text: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class SpecialCauseSignalRow(Base):
    """A special-cause signal as first raised, and the outbox of capability.signals.

    The unique key is what the signal is (purpose, measure, rule, point), so the first
    replica to insert it raises it and every later insert (a restart, another replica) is a
    no-op. ``published_at`` stays null until the signal is on capability.signals."""

    __tablename__ = "special_cause_signals"

    signal_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(120))
    measure: Mapped[str] = mapped_column(String(64))
    rule: Mapped[str] = mapped_column(String(64))
    point_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    owner: Mapped[str] = mapped_column(String(63))
    value: Mapped[float] = mapped_column(Float)
    centre_line: Mapped[float] = mapped_column(Float)
    lower_natural_process_limit: Mapped[float] = mapped_column(Float)
    upper_natural_process_limit: Mapped[float] = mapped_column(Float)
    raised_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)

    __table_args__ = (UniqueConstraint("purpose", "measure", "rule", "point_at"),)


class DemandDayRow(Base):
    """Derived, pre-aggregated: the demands of one UTC day as they count now (latest label)
    and as the machine first labelled them, with the staff time their sources reported.

    Maintained by the one write path (db/write_path.replace_derived) from the demand facts it
    swaps, so a summary over a million demands reads a few thousand rows of this table
    instead of scanning every fact. A null team, failure kind or cause is kept as '' (a key
    column cannot be null in PostgreSQL) and read back as none."""

    __tablename__ = "demand_days"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    source: Mapped[str] = mapped_column(String(200), primary_key=True)
    channel: Mapped[str] = mapped_column(String(32), primary_key=True)
    team: Mapped[str] = mapped_column(String(200), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(120), primary_key=True)
    demand_type: Mapped[str] = mapped_column(String(16), primary_key=True)
    failure_kind: Mapped[str] = mapped_column(String(120), primary_key=True)
    cause_purpose: Mapped[str] = mapped_column(String(120), primary_key=True)
    # The machine's first label (demands.purpose, demands.demand_type): the estimate's
    # stratum is (machine_purpose, the ISO week of day).
    machine_purpose: Mapped[str] = mapped_column(String(120), primary_key=True)
    machine_type: Mapped[str] = mapped_column(String(16), primary_key=True)
    demands: Mapped[int] = mapped_column(Integer)
    # Demands whose source reported a handling time, and those times in whole microseconds:
    # integers add up exactly in any order, so the sum is the same however it was reached.
    handling_measured: Mapped[int] = mapped_column(Integer)
    handling_micros: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (Index("ix_demand_days_purpose_day", "purpose", "day"),)


class CaseDayRow(Base):
    """Derived, pre-aggregated: the measured cases fulfilled on one UTC day, with their
    contacts and one-stop count, per source, purpose, first channel and team ('' for none).
    Maintained like demand_days, from the case rows replace_derived swaps."""

    __tablename__ = "case_days"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    source: Mapped[str] = mapped_column(String(200), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(120), primary_key=True)
    channel: Mapped[str] = mapped_column(String(32), primary_key=True)
    team: Mapped[str] = mapped_column(String(200), primary_key=True)
    fulfilled: Mapped[int] = mapped_column(Integer)
    contacts: Mapped[int] = mapped_column(Integer)
    one_stop: Mapped[int] = mapped_column(Integer)


class DeskStateRow(Base):
    """What a person did last in the review and audit queues (pages/desk.py): their last
    decisions, skips and undone items as one JSON document, so that every replica and a
    restarted one show the same "last ten" and skip the same demands."""

    __tablename__ = "desk_states"

    username: Mapped[str] = mapped_column(String(200), primary_key=True)
    state: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class CaseTimeDayRow(Base):
    """Derived, pre-aggregated: how many cases fulfilled on one UTC day took an end-to-end
    time in each band (db/aggregates.time_band: bands an eighth of a doubling wide), per
    source, purpose, first channel and team ('' for none). A percentile finds its band from
    these counts and then reads only that band's few times off the cases' index, so it stays
    exact without walking every time of the period."""

    __tablename__ = "case_time_days"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    source: Mapped[str] = mapped_column(String(200), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(120), primary_key=True)
    channel: Mapped[str] = mapped_column(String(32), primary_key=True)
    team: Mapped[str] = mapped_column(String(200), primary_key=True)
    band: Mapped[int] = mapped_column(Integer, primary_key=True)
    cases: Mapped[int] = mapped_column(Integer)


class ReviewQueueRow(Base):
    """Derived: a demand whose words are kept (queue_texts), that no person has labelled and
    that is not an audit item, with what the review queue sorts and filters it by. Kept by
    the write path (db/review_entries.py): the queue's head is read off an index of a table
    the size of the queue, not found among every demand. Whether an entry waits is the
    candidate test (needs_review, or confidence below the setting) applied when it is read,
    so a change of the setting needs no rewrite."""

    __tablename__ = "review_queue"

    source: Mapped[str] = mapped_column(String(200), primary_key=True)
    demand_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    # The machine's first purpose (demands.purpose): what the queue's purpose filter means.
    purpose: Mapped[str] = mapped_column(String(120))
    confidence: Mapped[float] = mapped_column(Float)
    needs_review: Mapped[bool] = mapped_column(Boolean)
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        # The queue's order (lowest confidence first), whole, by purpose and by source; with
        # needs_review, the waiting are counted off the index alone.
        Index(
            "ix_review_queue_order",
            "confidence",
            "occurred_at",
            "source",
            "demand_id",
            "needs_review",
        ),
        Index(
            "ix_review_queue_purpose_order",
            "purpose",
            "confidence",
            "occurred_at",
            "source",
            "demand_id",
            "needs_review",
        ),
        Index(
            "ix_review_queue_source_order",
            "source",
            "confidence",
            "occurred_at",
            "demand_id",
            "needs_review",
        ),
    )


class OpenCaseCountRow(Base):
    """Derived, pre-aggregated: how many measured cases are open now, per source, purpose,
    first channel and team ('' for none). Kept by the write path (db/open_cases.py) from the
    cases it replaces, so the figures read a few rows instead of counting every open case."""

    __tablename__ = "open_case_counts"

    source: Mapped[str] = mapped_column(String(200), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(120), primary_key=True)
    channel: Mapped[str] = mapped_column(String(32), primary_key=True)
    team: Mapped[str] = mapped_column(String(200), primary_key=True)
    cases: Mapped[int] = mapped_column(Integer)
