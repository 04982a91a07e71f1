"""A rebuild's load (services/metrics/rebuild.py): each batch of records decoded and made
ready to store (ingest.prepare_load), in a worker process (rebuild_pool.py) or in the
rebuild's own, then stored (ingest.store_prepared), leaves every table exactly as
``apply_events(derive=False)`` of the same events leaves it: the received events, the audit
sample and its strata, the queues and their words, the recorded changes; and so does the
derivation after it. Batches with redelivered and conflicting copies, labels, changes,
records that do not decode and events that cannot be stored."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.metrics.audit import AuditPolicy, QueuePolicy
from services.metrics.db.migrate import upgrade
from services.metrics.domain.audit import AuditPlan
from services.metrics.ingest import apply_events, derive_everything, store_prepared
from services.metrics.rebuild import rebuild
from services.metrics.rebuild_pool import DerivationPool, Record, prepare_records
from shared.database.engine import create_engine, session_factory
from shared.events import CaseEventType, DemandType, Event
from shared.kafka.settings import KafkaSettings
from shared.topics import Topic, topic_name
from tests.support.databases import database_beside
from tests.support.factories import (
    case_event,
    demand_classified,
    demand_labelled,
    system_changed,
    varied_demands,
)
from tests.support.kafka_io import produce_raw, publish_events

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 22, 30, tzinfo=UTC)
HOUR = timedelta(hours=1)
# Every word kept (the events are months old), and about half the demands audited.
BAD = b"{not json"
POLICY = AuditPolicy(
    plan=AuditPlan(rate=0.5, min_per_week=0), queues=QueuePolicy(retention_days=100_000)
)


LOADED = (
    *("demands", "case_events", "demand_labels", "purpose_changes"),
    *("audit_strata", "audit_items", "queue_texts", "review_queue"),
)


def _batches() -> list[list[Record]]:
    """Records in batches of 1-12, some of them again (redelivery), a demand twice in one
    batch with other words, records that do not decode, a demand that cannot be stored."""
    events: list[Event] = [*varied_demands(40, customers=9, start=T0, case_refs=True)]
    events += [
        demand_classified(id=f"low-{n}", customer_ref=f"C-{n}", occurred_at=T0 + n * HOUR,
                          confidence=0.3, needs_review=n % 2 == 0, text=f"words {n}")
        for n in range(12)
    ]  # fmt: skip
    events += [
        case_event(id=f"e-{n}", customer_ref=f"C-{n}", case_ref=f"K-{n}",
                   type=CaseEventType.FULFILLED, occurred_at=T0 + (50 + n) * HOUR)
        for n in range(9)
    ]  # fmt: skip
    events += [
        demand_labelled(id="l-1", demand_id="d-1", labelled_at=T0 + 70 * HOUR,
                        purpose="move home", demand_type=DemandType.VALUE),
        demand_labelled(id="l-2", demand_id="low-2", labelled_at=T0 + 71 * HOUR,
                        purpose="billing", demand_type=DemandType.VALUE, reason="audit"),
        demand_labelled(id="l-3", demand_id="d-7", demand_source=None,
                        labelled_at=T0 + 72 * HOUR, purpose="repair"),
        system_changed(id="change-1", purpose="billing", changed_at=T0 + 5 * HOUR),
        # No UTC equivalent: refused, and nothing of it stored.
        demand_classified(id="far", customer_ref="C-far",
                          occurred_at=datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14)))),
    ]  # fmt: skip
    rng = random.Random(7)
    rng.shuffle(events)
    records: list[Record] = [_record(e) for e in events]
    records += [(type(events[0]), BAD), (type(events[0]), None)]
    twice = demand_classified(id="d-3", customer_ref="C-3", occurred_at=T0 + 3 * HOUR,
                              text="other words", purpose="billing")  # fmt: skip
    records.insert(5, _record(twice))
    batches: list[list[Record]] = []
    while records:
        size = rng.randint(1, 12)
        batches.append(records[:size])
        records = records[size:]
    # Labels of demands stored batches before, waiting for review: they wait no more.
    late = [
        _record(demand_labelled(id=f"l-late-{n}", demand_id=f"low-{n}", purpose="billing",
                                labelled_at=T0 + 80 * HOUR, demand_type=DemandType.VALUE))
        for n in (0, 1, 3, 4, 5, 6, 7)
    ]  # fmt: skip
    return [*batches, *(rng.choice(batches) for _ in range(4)), late]


def _record(event: Event) -> Record:
    return (type(event), event.model_dump_json().encode())


async def _tables(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every table's rows, sorted; the times of recording aside (no table here has one the
    load sets from the clock)."""
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            names = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
            found = {}
            for name in names:
                rows = (await connection.execute(text(f'SELECT * FROM "{name}"'))).all()
                found[name] = sorted((tuple(row) for row in rows), key=repr)
            return found
    finally:
        await engine.dispose()


async def _applied(url: str, batches: Sequence[Sequence[Record]], derive: bool) -> None:
    """The events decoded here and applied as apply_events(derive=False), then derived
    (``derive``)."""
    from shared.kafka.codec import DecodeError, decode

    await asyncio.to_thread(upgrade, url)
    engine = create_engine(url)
    sessions = session_factory(engine)
    try:
        for batch in batches:
            events = []
            for model, value in batch:
                with contextlib.suppress(DecodeError):
                    events.append(decode(model, value))
            async with sessions.begin() as session:
                await apply_events(session, events, POLICY, derive=False)
        if derive:
            await derive_everything(sessions, customers_per_transaction=4)
    finally:
        await engine.dispose()


async def _stored(
    sessions: async_sessionmaker[AsyncSession], prepared: Sequence[Any], derive: bool
) -> tuple[int, int]:
    events = undecodable = 0
    for load, failed in prepared:
        async with sessions.begin() as session:
            await store_prepared(session, load, POLICY)
        events += load.decoded
        undecodable += failed
    if derive:
        await derive_everything(sessions, customers_per_transaction=4)
    return events, undecodable


def _assert_equal_and_full(
    expected: dict[str, list[tuple[Any, ...]]],
    found: dict[str, list[tuple[Any, ...]]],
    filled: Sequence[str],
) -> None:
    # A comparison of empty tables would prove nothing.
    for table in filled:
        assert expected[table], table
    assert not any(row[1] == "far" for row in expected["demands"])
    assert found == expected


async def test_batches_made_ready_in_the_rebuilds_process_store_what_apply_events_stores(
    database_url: str, tmp_path: Path
) -> None:
    batches = _batches()
    beside = await database_beside(database_url, tmp_path)
    await _applied(beside, batches, derive=False)
    await asyncio.to_thread(upgrade, database_url)
    engine = create_engine(database_url)
    try:
        dialect = engine.dialect.name
        prepared = [prepare_records(batch, dialect) for batch in batches]
        events, undecodable = await _stored(session_factory(engine), prepared, derive=False)
    finally:
        await engine.dispose()
    bad = sum(value in (None, BAD) for batch in batches for _, value in batch)
    assert bad >= 2
    assert (events, undecodable) == (sum(len(b) for b in batches) - bad, bad)
    # The load alone (a label's review entry is taken by the load, before any derivation).
    _assert_equal_and_full(await _tables(beside), await _tables(database_url), LOADED)


async def test_batches_made_ready_in_worker_processes_store_what_apply_events_stores(
    tmp_path: Path,
) -> None:
    batches = _batches()
    here, pooled = tmp_path / "here.db", tmp_path / "pooled.db"
    here_url, pooled_url = f"sqlite+aiosqlite:///{here}", f"sqlite+aiosqlite:///{pooled}"
    await _applied(here_url, batches, derive=True)
    await asyncio.to_thread(upgrade, pooled_url)
    engine = create_engine(pooled_url)
    try:
        with DerivationPool(pooled, workers=2) as pool:
            futures = [pool.prepare(batch) for batch in batches]
            prepared = [await asyncio.wrap_future(future) for future in futures]
        await _stored(session_factory(engine), prepared, derive=True)
    finally:
        await engine.dispose()
    _assert_equal_and_full(
        await _tables(here_url), await _tables(pooled_url), (*LOADED, "demand_facts", "cases")
    )


async def test_a_rebuild_through_its_workers_equals_one_without(
    kafka_settings: KafkaSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """rebuild() end to end: batches of 3, handed to the workers as soon as they are
    submitted (not only once the workers are up), and made here whenever the workers have
    their share in hand: the same tables as a rebuild with no workers."""
    from shared.kafka.codec import DecodeError, decode

    events = []
    for batch in _batches()[:-5]:  # once each: the topics are the log
        for model, value in batch:
            with contextlib.suppress(DecodeError):
                events.append(decode(model, value))
    await publish_events(kafka_settings, events)
    await produce_raw(kafka_settings, topic_name(kafka_settings, Topic.DEMAND_CLASSIFIED), BAD)
    monkeypatch.setattr(DerivationPool, "ready", property(lambda _pool: True))
    made_in_workers = []
    prepare = DerivationPool.prepare

    def counted(pool: DerivationPool, records: Sequence[Record]) -> Any:
        made_in_workers.append(len(records))
        return prepare(pool, records)

    monkeypatch.setattr(DerivationPool, "prepare", counted)
    found = {}
    for workers in (0, 2):
        url = f"sqlite+aiosqlite:///{tmp_path / f'rebuilt-{workers}.db'}"
        await asyncio.to_thread(upgrade, url)
        report = await rebuild(
            kafka=kafka_settings, database_url=url, batch_size=3, audit=POLICY, workers=workers
        )
        assert (report.events_applied, report.undecodable) == (len(events), 1)
        found[workers] = await _tables(url)
        # The signals recorded as raised carry the time of the rebuild.
        found[workers].pop("special_cause_signals")
    assert 0 < sum(made_in_workers) < len(events)  # some batches made here, some there
    _assert_equal_and_full(found[0], found[2], (*LOADED, "demand_facts", "cases"))
