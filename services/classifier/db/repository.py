"""Every query on the classifier's database: people's labels, kept as training data, and the
demand texts they may refer to.

A label is stored once per (demand source, label id) (a redelivered label changes nothing);
the latest label of a demand, (source, id), wins (by ``labelled_at``, then arrival), and it
teaches with that demand's text, never another source's demand of the same id. A label may
come without the demand's text: the text the classifier saw is kept for a bounded time (the
context window) so the label can still teach the model. Written by the consumer loop, read
by training (in the service, and by `demandscope classifier retrain` in another process).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import MINYEAR, UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Table, and_, case, delete, false, func, select, true
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.elements import Label

from services.classifier.db.tables import DemandTextRow, LabelRow
from services.classifier.model.examples import AUDIT, Example
from shared.database.sqlite_thread import on_sqlite_thread
from shared.database.times import as_utc
from shared.events import DemandLabelled
from shared.events.classification import DemandType

T = TypeVar("T")

_LABELS: Table = LabelRow.__table__  # type: ignore[assignment]
_TEXTS: Table = DemandTextRow.__table__  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class SeenText:
    source: str
    demand_id: str
    text: str
    seen_at: datetime
    customer_ref: str | None = None


class LabelRepository:
    """The label store on one engine (SQLite or PostgreSQL); each method is one transaction."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    async def keep(
        self,
        texts: Sequence[SeenText],
        labels: Sequence[DemandLabelled],
        *,
        forget_before: datetime | None = None,
    ) -> int:
        """What one batch teaches, in one transaction: the texts seen, the labels (idempotent
        by label id), and, when given, the purge of texts seen before ``forget_before``.
        Returns how many labels were new."""
        if not texts and not labels and forget_before is None:
            return 0
        async with self._engine.begin() as connection:
            await _insert_texts(connection, texts)
            added = await _insert_labels(connection, labels)
            if forget_before is not None:
                await _delete_texts_before(connection, forget_before)
        return added

    async def keep_batch(
        self,
        texts: Sequence[SeenText],
        labels: Sequence[DemandLabelled],
        *,
        look_up: Sequence[tuple[str, str]],
        forget_before: datetime | None = None,
    ) -> dict[tuple[str, str], str]:
        """A consumer batch's one trip to the store: ``labelled_purposes`` of ``look_up``,
        read first (so before this batch's own labels), then ``keep``, in one transaction.
        On SQLite all of it is one function on aiosqlite's thread with sqlite3 itself (no
        statement compiled, no thread hop per statement)."""
        if not texts and not labels and not look_up and forget_before is None:
            return {}
        if self._engine.dialect.name == "sqlite":
            # Committed on the thread too: a hand-off to the thread and back less per batch
            # than SQLAlchemy's own commit (each one a wait for the thread, and for the GIL
            # when the event loop is busy with other tasks' commits).
            async with self._engine.connect() as connection:
                return await on_sqlite_thread(
                    connection,
                    lambda db: _committed(
                        db, lambda: _sqlite_batch(db, texts, labels, look_up, forget_before)
                    ),
                )
        async with self._engine.begin() as connection:
            found = await _labelled_purposes(connection, look_up)
            await _insert_texts(connection, texts)
            await _insert_labels(connection, labels)
            if forget_before is not None:
                await _delete_texts_before(connection, forget_before)
        return found

    async def add_labels(self, labels: Sequence[DemandLabelled]) -> int:
        """Store labels (idempotent by label id); return how many were new."""
        return await self.keep((), labels)

    async def remember_texts(self, texts: Sequence[SeenText]) -> None:
        await self.keep(texts, ())

    async def forget_texts_before(self, horizon: datetime) -> int:
        async with self._engine.begin() as connection:
            return await _delete_texts_before(connection, horizon)

    async def recent_texts(self, limit: int) -> list[SeenText]:
        """The newest ``limit`` demand texts kept (seen within the context window), newest
        first: the organisation's recent demands, for the value/failure prior's estimate
        (``prior_shift``). Ties in time in (source, demand id) order, descending."""
        if limit <= 0:
            return []
        texts = _TEXTS.c
        query = (
            select(texts.source, texts.demand_id, texts.text, texts.seen_at, texts.customer_ref)
            .order_by(texts.seen_at.desc(), texts.source.desc(), texts.demand_id.desc())
            .limit(limit)
        )
        async with self._engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        return [
            SeenText(source, demand_id, text, as_utc(seen_at), customer_ref)
            for source, demand_id, text, seen_at, customer_ref in rows
        ]

    async def count_texts(self, since: datetime | None = None) -> int:
        """How many demand texts are kept (seen within the context window), only those seen
        after ``since`` when given."""
        query = select(func.count()).select_from(_TEXTS)
        if since is not None:
            query = query.where(_TEXTS.c.seen_at > _utc(since))
        async with self._engine.connect() as connection:
            counted = await connection.scalar(query)
        return int(counted or 0)

    async def customers_of(
        self, demands: Sequence[tuple[str | None, str]]
    ) -> dict[tuple[str | None, str], str]:
        """The customer of each (source, demand id) seen within the context window.
        Source None (an old label): the customer only when one demand has that id."""
        ids = sorted({demand_id for _, demand_id in demands})
        if not ids:
            return {}
        async with self._engine.connect() as connection:
            rows = (
                await connection.execute(
                    select(_TEXTS.c.source, _TEXTS.c.demand_id, _TEXTS.c.customer_ref).where(
                        _TEXTS.c.demand_id.in_(ids), _TEXTS.c.customer_ref.is_not(None)
                    )
                )
            ).all()
        by_demand: dict[str, dict[str, str]] = {}
        for source, demand_id, customer in rows:
            by_demand.setdefault(demand_id, {})[source] = customer
        found: dict[tuple[str | None, str], str] = {}
        for source, demand_id in demands:
            customers = by_demand.get(demand_id, {})
            if source is not None and source in customers:
                found[(source, demand_id)] = customers[source]
            elif source is None and len(customers) == 1:
                found[(source, demand_id)] = next(iter(customers.values()))
        return found

    async def labelled_purposes(
        self, demands: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], str]:
        """The purpose of the latest label of each (source, demand id) labelled already: a
        label may be read before its demand is classified (another instance's partition),
        and the customer's context then takes the person's word, not the prediction."""
        async with self._engine.connect() as connection:
            return await _labelled_purposes(connection, demands)

    async def count(self) -> int:
        async with self._engine.connect() as connection:
            counted = await connection.scalar(select(func.count()).select_from(_LABELS))
        return int(counted or 0)

    async def not_a_demand_count(self) -> int:
        """How many labelled demands training leaves out as "not a demand"."""
        async with self._engine.connect() as connection:
            return await _not_a_demand_count(connection)

    async def training_examples(self) -> list[Example]:
        """The latest label of each demand whose text is known, as a training example.

        A label saying ``unknown`` has no demand type, so training leaves it out. The
        example's reason is "audit" when any label of the demand was an audit label (the
        demand was drawn into the random sample, whatever came after), else the latest's.
        A demand whose latest label says "not a demand" is no example at all: it teaches
        neither a type nor a purpose (the purpose it carries is only the one it was filed
        under); ``not_a_demand_count`` counts them.
        """
        labels = _LABELS.c
        demand = (labels.demand_source, labels.demand_id)
        ranked = select(
            labels.seq,
            labels.demand_source,
            labels.demand_id,
            labels.text,
            labels.purpose,
            labels.demand_type,
            labels.failure_kind,
            labels.labelled_at,
            labels.reason,
            labels.not_a_demand,
            func.max(case((labels.reason == AUDIT, 1), else_=0))
            .over(partition_by=demand)
            .label("audited"),
            _latest_first(),
        ).subquery()
        # An old label (no source) finds the text of the one demand of its id, if only one.
        sole = (
            select(_TEXTS.c.demand_id, func.min(_TEXTS.c.text).label("text"))
            .group_by(_TEXTS.c.demand_id)
            .having(func.count() == 1)
            .subquery()
        )
        own = _TEXTS.alias("own")
        query = (
            select(
                func.coalesce(ranked.c.text, own.c.text, sole.c.text),
                ranked.c.purpose,
                ranked.c.demand_type,
                ranked.c.failure_kind,
                ranked.c.reason,
                ranked.c.audited,
            )
            .select_from(
                ranked.outerjoin(
                    own,
                    and_(
                        own.c.source == ranked.c.demand_source,
                        own.c.demand_id == ranked.c.demand_id,
                    ),
                ).outerjoin(
                    sole,
                    and_(ranked.c.demand_source == "", sole.c.demand_id == ranked.c.demand_id),
                )
            )
            .where(ranked.c.rank == 1, ranked.c.not_a_demand == false())
            .order_by(ranked.c.labelled_at, ranked.c.seq)
        )
        async with self._engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        return [
            Example(
                text=text,
                purpose=purpose,
                demand_type=None if demand_type == DemandType.UNKNOWN.value else demand_type,
                failure_kind=failure_kind if demand_type == DemandType.FAILURE.value else None,
                reason=AUDIT if audited else reason,
            )
            for text, purpose, demand_type, failure_kind, reason, audited in rows
            if text
        ]


def _latest_first() -> Label[int]:
    """Each label's rank among its demand's labels, 1 for the latest (the one that wins)."""
    labels = _LABELS.c
    return (
        func.row_number()
        .over(
            partition_by=(labels.demand_source, labels.demand_id),
            order_by=(labels.labelled_at.desc(), labels.seq.desc()),
        )
        .label("rank")
    )


async def _not_a_demand_count(connection: AsyncConnection) -> int:
    """Demands whose latest label says "not a demand" (left out of training)."""
    labels = _LABELS.c
    ranked = select(
        labels.not_a_demand,
        _latest_first(),
    ).subquery()
    counted = await connection.scalar(
        select(func.count())
        .select_from(ranked)
        .where(ranked.c.rank == 1, ranked.c.not_a_demand == true())
    )
    return int(counted or 0)


async def _labelled_purposes(
    connection: AsyncConnection, demands: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], str]:
    ids = sorted({demand_id for _, demand_id in demands})
    if not ids:
        return {}
    rows = (
        await connection.execute(
            select(_LABELS.c.demand_source, _LABELS.c.demand_id, _LABELS.c.purpose)
            .where(_LABELS.c.demand_id.in_(ids), _LABELS.c.not_a_demand == false())
            .order_by(_LABELS.c.labelled_at, _LABELS.c.seq)  # the latest last
        )
    ).all()
    return _latest_of(rows, demands)


def _latest_of(
    rows: Sequence[Any], demands: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], str]:
    wanted = set(demands)
    found: dict[tuple[str, str], str] = {}
    for source, demand_id, purpose in rows:
        if (source, demand_id) in wanted:
            found[(source, demand_id)] = purpose
    return found


def _text_rows(texts: Sequence[SeenText]) -> list[dict[str, Any]]:
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for seen in texts:  # the first sighting of a demand wins, as in the table
        rows.setdefault(
            (seen.source, seen.demand_id),
            {
                "source": seen.source,
                "demand_id": seen.demand_id,
                "text": _storable(seen.text),
                "seen_at": _utc(seen.seen_at),
                "customer_ref": seen.customer_ref,
            },
        )
    return list(rows.values())


def _label_rows(labels: Sequence[DemandLabelled]) -> list[dict[str, Any]]:
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for label in labels:
        source = label.demand_source or ""  # an old label names no source
        rows.setdefault(
            (source, label.id),
            {
                "demand_source": source,
                "label_id": label.id,
                "demand_id": label.demand_id,
                "demand_type": label.demand_type.value,
                "failure_kind": label.failure_kind,
                "purpose": label.purpose,
                "labelled_at": _utc(label.labelled_at),
                "labelled_by": _storable(label.labelled_by),
                "text": None if label.text is None else _storable(label.text),
                "reason": label.reason,
                "not_a_demand": label.not_a_demand,
            },
        )
    return list(rows.values())


async def _insert_texts(connection: AsyncConnection, texts: Sequence[SeenText]) -> None:
    rows = _text_rows(texts)
    if rows:
        await connection.execute(
            _insert(connection, _TEXTS).on_conflict_do_nothing(
                index_elements=["source", "demand_id"]
            ),
            rows,
        )


async def _insert_labels(connection: AsyncConnection, labels: Sequence[DemandLabelled]) -> int:
    rows = _label_rows(labels)
    if not rows:
        return 0
    inserted = await connection.execute(
        _insert(connection, _LABELS)
        .on_conflict_do_nothing(index_elements=["demand_source", "label_id"])
        .returning(_LABELS.c.label_id),
        rows,
    )
    return len(inserted.all())


async def _delete_texts_before(connection: AsyncConnection, horizon: datetime) -> int:
    result = await connection.execute(delete(_TEXTS).where(_TEXTS.c.seen_at < _utc(horizon)))
    return int(getattr(result, "rowcount", 0) or 0)


# --- SQLite: a batch's statements as one function on aiosqlite's thread ---------------------

# The same statements as the SQLAlchemy ones above, for sqlite3 itself. Times are written as
# SQLAlchemy writes them (UTC, 'YYYY-MM-DD HH:MM:SS.ffffff', text that sorts as time), so
# every other query reads them alike. The ids go in as one JSON array: one statement text
# whatever the batch's size, so sqlite3's statement cache prepares it once.
_SQLITE_LABELLED = (
    "SELECT demand_source, demand_id, purpose FROM classifier_labels"
    " WHERE demand_id IN (SELECT value FROM json_each(:ids)) AND NOT not_a_demand"
    " ORDER BY labelled_at, seq"
)
_SQLITE_TEXTS = (
    "INSERT INTO classifier_demand_texts (source, demand_id, text, seen_at, customer_ref)"
    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (source, demand_id) DO NOTHING"
)
_SQLITE_LABELS = (
    "INSERT INTO classifier_labels (demand_source, label_id, demand_id, demand_type,"
    " failure_kind, purpose, labelled_at, labelled_by, text, reason, not_a_demand) VALUES"
    " (:demand_source, :label_id, :demand_id, :demand_type, :failure_kind, :purpose,"
    " :labelled_at, :labelled_by, :text, :reason, :not_a_demand)"
    " ON CONFLICT (demand_source, label_id) DO NOTHING"
)
_SQLITE_FORGET = "DELETE FROM classifier_demand_texts WHERE seen_at < :horizon"


def _sqlite_batch(
    db: sqlite3.Connection,
    texts: Sequence[SeenText],
    labels: Sequence[DemandLabelled],
    look_up: Sequence[tuple[str, str]],
    forget_before: datetime | None,
) -> dict[tuple[str, str], str]:
    found: dict[tuple[str, str], str] = {}
    if look_up:
        ids = json.dumps(sorted({demand_id for _, demand_id in look_up}))
        found = _latest_of(db.execute(_SQLITE_LABELLED, {"ids": ids}).fetchall(), look_up)
    if texts:
        db.executemany(_SQLITE_TEXTS, _sqlite_text_rows(texts))
    label_rows = _label_rows(labels)
    for row in label_rows:
        row["labelled_at"] = _sqlite_time(row["labelled_at"])
    if label_rows:
        db.executemany(_SQLITE_LABELS, label_rows)
    if forget_before is not None:
        db.execute(_SQLITE_FORGET, {"horizon": _sqlite_time(_utc(forget_before))})
    return found


def _committed(db: sqlite3.Connection, work: Callable[[], T]) -> T:
    try:
        done = work()
    except BaseException:
        db.rollback()
        raise
    db.commit()
    return done


def _sqlite_text_rows(texts: Sequence[SeenText]) -> list[tuple[str, str, str, str, str | None]]:
    """``_text_rows`` as sqlite3's positional parameters, each time formatted once (a batch's
    texts share one): a dict and three datetime calls per row were a third of the batch's
    CPU in the store. A demand seen twice needs no dedupe here: the rows are inserted in
    order, so the first sighting wins, as in the table."""
    times: dict[datetime, str] = {}
    rows = []
    for seen in texts:
        at = times.get(seen.seen_at)
        if at is None:
            at = times[seen.seen_at] = _sqlite_time(_utc(seen.seen_at))
        text = _storable(seen.text) if "\x00" in seen.text else seen.text
        rows.append((seen.source, seen.demand_id, text, at, seen.customer_ref))
    return rows


def _sqlite_time(moment: datetime) -> str:
    return moment.replace(tzinfo=None).isoformat(" ", "microseconds")


def _insert(connection: AsyncConnection, table: Table) -> Any:
    """INSERT with ON CONFLICT DO NOTHING available, in the connection's dialect."""
    if connection.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def _storable(text: str) -> str:
    """Free text as every database takes it: PostgreSQL refuses NUL characters in text, and
    an event may carry them (they mean nothing to a model)."""
    return text.replace("\x00", "")


def _utc(moment: datetime) -> datetime:
    """Every stored time is UTC (SQLite keeps no offset, so mixed offsets would misorder).

    An offset that pushes a time past the calendar's end keeps the calendar's end."""
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        edge = datetime.min if moment.year == MINYEAR else datetime.max
        return edge.replace(tzinfo=UTC)
