"""Metrics service benchmark: live ingestion against a raw consumer that only lands the same
rows in the same database, a rebuild against live (and the time to replay 30 million events),
and the purpose summary over one million cases against PM4Py computing the same end-to-end
percentiles from the event log. Rows go into bench/results.py (docs/performance.md).

Run: `.venv/bin/python -m bench metrics` (needs Java for the broker and the `bench` extra
for pm4py and pandas). Starts its own broker on free ports under .run/bench-metrics and
stops it. Sizes can be lowered with DEMANDSCOPE_BENCH_METRICS_CASES (default 1 000 000)
and DEMANDSCOPE_BENCH_METRICS_LIVE_CUSTOMERS (default 4 000); the live service is stopped
after DEMANDSCOPE_BENCH_METRICS_LIVE_TIMEOUT seconds (default 120). The rebuild replays the
live part's events and DEMANDSCOPE_BENCH_METRICS_REBUILD_CUSTOMERS more customers' (default
40 000: about 117,000 events in all, so that its fixed costs, the worker processes' start
among them, weigh in the rate as little as in a real rebuild); its worker processes are
DEMANDSCOPE_METRICS_REBUILD_WORKERS (the service's setting, default 2).

The live part runs in two phases, in a fixed order: every demand, then every case event
(see ``LIVE_PHASES``). Read as one backlog, the two topics came in whichever order the
consumer's fetch put their partitions (aiokafka orders them by a set of TopicPartitions,
whose hashes change with every process), and the service's CPU per event moved by a
quarter with it: before and after pairs compared orders, not code.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import shutil
import sqlite3
import tempfile
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest.mock import patch

from aiokafka import AIOKafkaConsumer, TopicPartition

from bench import results
from devstack import kafka as local_kafka
from services.metrics.config import MetricsSettings
from services.metrics.db.aggregates import time_band
from services.metrics.db.measures import Filters
from services.metrics.db.migrate import upgrade
from services.metrics.db.write_path import case_event_row, demand_row
from services.metrics.ingest import BatchOutcome, PreparedLive, apply_events, apply_prepared
from services.metrics.live_decode import workers_cpu
from services.metrics.rebuild import RebuildReport, rebuild
from services.metrics.service import purpose_summaries
from shared.auth.migrate import upgrade as upgrade_auth
from shared.auth.settings import AuthSettings
from shared.database.engine import create_engine, session_factory
from shared.events import (
    CaseEvent,
    CaseEventType,
    Channel,
    ClassificationMethod,
    DemandClassified,
    DemandReceived,
    DemandType,
    Event,
)
from shared.kafka.admin import ensure_topics
from shared.kafka.codec import decode, encode
from shared.kafka.producer import create_producer, send_all
from shared.kafka.settings import KafkaSettings
from shared.topics import TOPIC_OF_EVENT, Topic, topic_name, topic_specs

ROOT = Path(__file__).resolve().parents[1]
PURPOSES = ("repair", "billing", "move home", "complaint", "new connection", "payment plan")
T0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
CASES = int(os.environ.get("DEMANDSCOPE_BENCH_METRICS_CASES", "1000000"))
LIVE_CUSTOMERS = int(os.environ.get("DEMANDSCOPE_BENCH_METRICS_LIVE_CUSTOMERS", "4000"))
LIVE_TIMEOUT = float(os.environ.get("DEMANDSCOPE_BENCH_METRICS_LIVE_TIMEOUT", "120"))
REBUILD_CUSTOMERS = int(os.environ.get("DEMANDSCOPE_BENCH_METRICS_REBUILD_CUSTOMERS", "40000"))
REPLAY_EVENTS = 30_000_000  # a year of a large organisation (issue 14)
SUMMARY_TARGET_S = 0.1


# --- part 1: events per second, live and in a rebuild ---------------------------------------


def live_events(customers: int, first: int = 0) -> list[Event]:
    """Per customer: a demand, a progress chase (failure) and, for two in three, fulfilment.
    Customers numbered from ``first`` (a set beside another one has its own ids)."""
    made: list[Event] = []
    for c in range(first, first + customers):
        purpose = PURPOSES[c % len(PURPOSES)]
        for n, kind in enumerate((DemandType.VALUE, DemandType.FAILURE)):
            at = T0 + timedelta(minutes=c, hours=n)
            made.append(
                DemandClassified(
                    demand=DemandReceived(
                        id=f"d{c}-{n}",
                        occurred_at=at,
                        received_at=at,
                        channel=Channel.PHONE,
                        source="bench",
                        customer_ref=f"C{c}",
                        case_ref=f"K{c}",
                        text="words",
                    ),
                    demand_type=kind,
                    purpose=purpose,
                    confidence=1.0,
                    failure_kind="progress_chasing" if n else None,
                    method=ClassificationMethod.RULE,
                    model_version="r1",
                    classified_at=at,
                )
            )
        if c % 3:
            made.append(
                CaseEvent(
                    id=f"f{c}",
                    case_ref=f"K{c}",
                    customer_ref=f"C{c}",
                    type=CaseEventType.FULFILLED,
                    occurred_at=T0 + timedelta(minutes=c, days=c % 9 + 1),
                    source="bench",
                )
            )
    return made


async def publish(kafka: KafkaSettings, events: list[Event]) -> None:
    records = [
        encode(event, topic=topic_name(kafka, TOPIC_OF_EVENT[type(event)]), source="bench")
        for event in events
    ]
    producer = create_producer(kafka, client_id="bench-publisher")
    await producer.start()
    try:
        await send_all(producer, records)
    finally:
        await producer.stop()


@asynccontextmanager
async def group_progress(kafka: KafkaSettings, group: str) -> AsyncIterator[Done]:
    """A check of whether ``group`` has committed the end of every input partition, through
    one client opened once: the service under test shares this process, and a client
    started and stopped for every check took CPU from it while it was being timed."""
    consumer = AIOKafkaConsumer(**kafka.client_options(), group_id=group)
    await consumer.start()
    partitions = [
        TopicPartition(topic_name(kafka, t), p)
        for t in (Topic.DEMAND_CLASSIFIED, Topic.CASE_EVENTS, Topic.DEMAND_LABELS)
        for p in range(kafka.partitions)
    ]

    async def consumed_everything() -> bool:
        ends = await consumer.end_offsets(partitions)
        for tp in partitions:
            if ends[tp] and ((await consumer.committed(tp)) or 0) < ends[tp]:
                return False
        return True

    try:
        # Once before the service starts: a new client's first check finds the topics'
        # leaders and the group's coordinator, ~300 ms that fell inside the timed window
        # after the last commit (a third of the demands' phase, two thirds of the case
        # events'). Warm, a check is a few round trips.
        await consumed_everything()
        yield consumed_everything
    finally:
        await consumer.stop()


Done = Callable[[], Awaitable[bool]]


# The live part in two phases, in this order, each published as a backlog and read to its
# end by the raw consumer and then by the service before the next is published: every
# customer's case events come after their demands, as in production, where a fulfilment
# comes days after the demand and a consumer near the head reads it in a later batch. Both
# consumers read the same records in the same phases, each phase timed from its first batch
# stored. (Read as one backlog, the order of the two topics was the fetch's, by chance.)
LIVE_PHASES: tuple[tuple[str, type[Event]], ...] = (
    ("demands", DemandClassified),
    ("case events", CaseEvent),
)


@dataclass(frozen=True)
class Timed:
    events: float  # the events applied while timed (a phase's first batch is not)
    seconds: float
    cpu_seconds: float  # the bench's process (the consumer and its Kafka client run in it)

    def __add__(self, other: Timed) -> Timed:
        return Timed(
            self.events + other.events,
            self.seconds + other.seconds,
            self.cpu_seconds + other.cpu_seconds,
        )

    @property
    def rate(self) -> float:
        return self.events / max(self.seconds, 1e-9)

    @property
    def cpu_us(self) -> float:
        return self.cpu_seconds / max(self.events, 1) * 1e6


@dataclass
class WritePaths:
    """How the live service's write path took the customers of its batches (BatchOutcome's
    counters, summed): the order of the events decides it, and with it the CPU per event."""

    batches: int = 0
    stitched_at_tail: int = 0
    closed_at_tail: int = 0
    recomputed: int = 0  # customers recomputed from their whole history
    # The service's decoding worker process (live_decode.py): its CPU decoding, the values.
    worker_cpu_s: float = 0.0
    worker_values: int = 0

    def __str__(self) -> str:
        worker = (
            f"; decoding worker process: {self.worker_values:,} records at "
            f"{self.worker_cpu_s / self.worker_values * 1e6:,.1f} µs CPU each, not in the "
            "bench's process CPU"
            if self.worker_values
            else ""
        )
        return (
            f"{self.stitched_at_tail:,} customers stitched at the tail, {self.closed_at_tail:,} "
            f"closed at the tail, {self.recomputed:,} recomputed in full ({self.batches} batches)"
            f"{worker}"
        )


@dataclass
class Applied:
    """What the service's handler applied in a phase, seen from inside it: the bench waits
    on this, not on the broker or the database (asked every few ms, either took the CPU
    it measures)."""

    total: int  # the phase's events
    events: int = 0
    first: int = 0  # the first batch's events, not timed
    started: float = 0.0  # perf_counter and process_time when the first batch was applied
    cpu: float = 0.0
    all_in: asyncio.Event = field(default_factory=asyncio.Event)  # every event applied


@contextmanager
def counting(paths: WritePaths, applied: Applied) -> Iterator[None]:
    """The service's handler's apply_events, counting its events into ``applied`` and its
    outcomes into ``paths``."""
    from services.metrics import handler

    async def counted(session: Any, events: Sequence[Event], *args: Any) -> BatchOutcome:
        outcome = await apply_events(session, events, *args)
        count(len(events), outcome)
        return outcome

    async def counted_prepared(session: Any, prepared: PreparedLive, *args: Any) -> BatchOutcome:
        # A batch decoded by the service's worker process (services/metrics/live_decode.py).
        outcome = await apply_prepared(session, prepared, *args)
        count(prepared.decoded, outcome)
        return outcome

    def count(events: int, outcome: BatchOutcome) -> None:
        if not applied.events:
            applied.first, applied.started = events, time.perf_counter()
            applied.cpu = time.process_time()
        applied.events += events
        if applied.events >= applied.total:
            applied.all_in.set()
        paths.batches += 1
        paths.stitched_at_tail += outcome.stitched_at_tail
        paths.closed_at_tail += outcome.closed_at_tail
        paths.recomputed += outcome.recomputed

    with (
        patch.object(handler, "apply_events", counted),
        patch.object(handler, "apply_prepared", counted_prepared),
    ):
        yield


@dataclass(frozen=True)
class Ingestion:
    events: int  # events published
    raw: Timed  # the raw consumer that only stores the received rows
    live: Timed  # the metrics service, live
    live_done: bool  # False: the live service did not finish within the deadline
    order: str  # the phases, in order, with their events
    paths: WritePaths

    # CPU of the bench's process per event while each was timed (both run in it, with their
    # Kafka clients): steadier than the rates on a shared machine, which swing 2x.
    @property
    def raw_rate(self) -> float:
        return self.raw.rate

    @property
    def live_rate(self) -> float:
        return self.live.rate


def _stored(value: Any) -> Any:
    """A value as SQLAlchemy stores it in SQLite (so the rows are the service's rows)."""
    if isinstance(value, datetime):
        return _sqlite_time(value)
    if isinstance(value, date):
        return value.isoformat()
    return value


def _insert(table: str, columns: list[str]) -> str:
    marks = ",".join("?" * len(columns))
    return f"INSERT INTO {table} ({','.join(columns)}) VALUES ({marks}) ON CONFLICT DO NOTHING"


async def raw_consumer_rate(kafka: KafkaSettings, path: Path, group: str, total: int) -> Timed:
    """The database's limit: consume, decode each event with the shared contract, and insert
    the rows the service stores on receipt (demands, case_events) with the driver's
    executemany, one transaction per poll, committing offsets after it. No ORM, no derived
    tables, no audit: what a consumer that only lands the events costs. Reads ``total``
    more records as ``group`` (a phase), timed from its first batch stored."""
    import aiosqlite

    consumer = AIOKafkaConsumer(
        topic_name(kafka, Topic.DEMAND_CLASSIFIED),
        topic_name(kafka, Topic.CASE_EVENTS),
        **kafka.client_options(),
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=1000,
    )
    database = await aiosqlite.connect(path)
    await database.execute("PRAGMA journal_mode=WAL")  # as shared/database/engine.py has it
    await database.execute("PRAGMA synchronous=NORMAL")
    await consumer.start()
    try:
        seen, first, started, cpu = 0, 0, 0.0, 0.0
        deadline = time.monotonic() + LIVE_TIMEOUT
        while seen < total and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500, max_records=1000)
            records = [r for rs in batches.values() for r in rs]
            if not records:
                continue
            demands, case_events = [], []
            for record in records:
                if record.topic.endswith(Topic.DEMAND_CLASSIFIED.value):
                    demands.append(demand_row(decode(DemandClassified, record.value)))
                else:
                    case_events.append(case_event_row(decode(CaseEvent, record.value)))
            for table, rows in (("demands", demands), ("case_events", case_events)):
                if rows:
                    columns = list(rows[0])
                    await database.executemany(
                        _insert(table, columns),
                        [tuple(_stored(row[c]) for c in columns) for row in rows],
                    )
            await database.commit()
            await consumer.commit()
            seen += len(records)
            if not first:  # timed from the first batch stored, as the service is
                first, started, cpu = seen, time.perf_counter(), time.process_time()
        return Timed(seen - first, time.perf_counter() - started, time.process_time() - cpu)
    finally:
        await consumer.stop()
        await database.close()


async def live_phase(
    kafka: KafkaSettings, settings: MetricsSettings, total: int, paths: WritePaths
) -> tuple[Timed, bool]:
    """The service started (on the database and group of the phases before), timed from its
    first batch of this phase applied until it has committed every record, then stopped;
    whether it finished within the deadline."""
    from services.metrics.main import create_app  # the app under test, with its lifespan

    app = create_app(settings)
    applied = Applied(total)
    done = False
    deadline = time.monotonic() + LIVE_TIMEOUT
    async with (
        group_progress(kafka, settings.group_id) as consumed_everything,
        app.router.lifespan_context(app),
    ):
        with counting(paths, applied):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(applied.all_in.wait(), LIVE_TIMEOUT)
            while time.monotonic() < deadline:  # and its last offsets committed
                if done := await consumed_everything():
                    break
                await asyncio.sleep(0.005)
            seconds = time.perf_counter() - applied.started
            cpu_seconds = time.process_time() - applied.cpu
            worker_cpu, worker_values = workers_cpu()
            paths.worker_cpu_s += worker_cpu
            paths.worker_values += worker_values
    # The events applied after the first batch (that batch excluded); on a timeout, those
    # applied by then.
    return Timed(applied.events - applied.first, seconds, cpu_seconds), done


async def measure_ingestion(workdir: Path, kafka: KafkaSettings) -> Ingestion:
    events = live_events(LIVE_CUSTOMERS)
    raw_url = f"sqlite+aiosqlite:///{workdir / 'raw.db'}"
    live_url = f"sqlite+aiosqlite:///{workdir / 'live.db'}"
    auth_url = f"sqlite+aiosqlite:///{workdir / 'auth.db'}"
    for url in (raw_url, live_url):
        await asyncio.to_thread(upgrade, url)
    await asyncio.to_thread(upgrade_auth, auth_url)
    raw_group = f"bench-raw-{uuid.uuid4().hex[:8]}"
    settings = MetricsSettings(
        kafka=kafka, database_url=live_url, group_id=f"bench-{uuid.uuid4().hex[:8]}",
        auth=AuthSettings(database_url=auth_url), publish_debounce_s=5.0,
    )  # fmt: skip
    raw = live = Timed(0, 0, 0)
    done, order, paths = True, [], WritePaths()
    for name, kind in LIVE_PHASES:
        phase = [e for e in events if isinstance(e, kind)]
        await publish(kafka, phase)
        raw_timed = await raw_consumer_rate(kafka, workdir / "raw.db", raw_group, len(phase))
        timed, finished = await live_phase(kafka, settings, len(phase), paths)
        # Each phase's CPU a event too: the two take different paths of the write path.
        order.append(
            f"{name} ({len(phase):,}; live {timed.cpu_us:,.0f} µs, raw {raw_timed.cpu_us:,.0f})"
        )
        raw, live, done = raw + raw_timed, live + timed, done and finished
    return Ingestion(len(events), raw, live, done, ", then ".join(order), paths)


@dataclass(frozen=True)
class Rebuilt:
    report: RebuildReport
    workers: int
    cpu_seconds: float  # the rebuild's process
    workers_cpu_seconds: float  # its worker processes, once they have ended


async def rebuild_rate(workdir: Path, kafka: KafkaSettings) -> Rebuilt:
    """The same topics, with REBUILD_CUSTOMERS more customers' events, replayed into an
    empty database."""
    await publish(kafka, live_events(REBUILD_CUSTOMERS, first=LIVE_CUSTOMERS))
    rebuilt_url = f"sqlite+aiosqlite:///{workdir / 'rebuilt.db'}"
    await asyncio.to_thread(upgrade, rebuilt_url)
    workers = MetricsSettings().rebuild_workers
    cpu, children = time.process_time(), _children_cpu()
    report = await rebuild(kafka=kafka, database_url=rebuilt_url, batch_size=1000, workers=workers)
    return Rebuilt(report, workers, time.process_time() - cpu, _children_cpu() - children)


def _children_cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)  # children that have ended
    return used.ru_utime + used.ru_stime


def record_ingestion(measured: Ingestion) -> None:
    live, raw = measured.live_rate, measured.raw_rate
    print(f"  ingestion of {measured.events:,} events (SQLite):")
    raw_cpu, live_cpu = measured.raw.cpu_us, measured.live.cpu_us
    print(f"    order:                   {measured.order}, each phase a backlog read to its end")
    print(f"    raw consumer, rows only: {raw:,.0f} events/s, {raw_cpu:,.0f} µs CPU/event")
    print(
        f"    live service:            {live:,.0f} events/s  ({results.ratio(live, raw)}x raw), "
        f"{live_cpu:,.0f} µs CPU/event ({results.ratio(raw_cpu, live_cpu)}x raw's rate by CPU)"
    )
    print(f"    live write path:         {measured.paths}")
    timed_out = "" if measured.live_done else f"; live stopped at {LIVE_TIMEOUT:.0f}s, unfinished"
    results.record(
        results.Row(
            part="metrics, live ingestion",
            figure=f"{live:,.0f} events/s",
            baseline=f"raw aiokafka consumer bulk-inserting the same rows into SQLite: "
            f"{raw:,.0f} events/s",
            ratio=results.ratio(live, raw),
            target="≥ 0.5 of the raw consumer; ≥ 20,000 events/s on SQLite",
            met=live >= 0.5 * raw and live >= 20_000,
            note=f"{measured.events:,} events of {LIVE_CUSTOMERS:,} customers{timed_out}; "
            f"{measured.order}; CPU per event of the bench's process: live {live_cpu:,.0f} µs, "
            f"raw {raw_cpu:,.0f} (by CPU, {results.ratio(raw_cpu, live_cpu)}x: the rates swing "
            f"with the machine's load, the CPU far less); live write path: {measured.paths}"
            f"{'; REDUCED SIZE' if LIVE_CUSTOMERS < 4000 else ''}",
        )
    )


def record_rebuild(measured: Rebuilt, live: float) -> None:
    report = measured.report
    rebuilt = report.events_per_second
    ratio = results.ratio(rebuilt, live)
    # The replay proper scales with the events; the final recording of the signals is once
    # per rebuild (over the purposes' charts), so it is added once, not per event.
    replay_s = report.seconds - report.signals_seconds
    per_event = replay_s / report.events_applied if report.events_applied else float("inf")
    minutes = (report.signals_seconds + REPLAY_EVENTS * per_event) / 60
    print(
        f"    rebuild:                 {rebuilt:,.0f} events/s  ({ratio}x live); replay "
        f"{1 / per_event:,.0f} events/s, then {report.signals_seconds:.1f}s recording signals"
    )
    events = max(report.events_applied, 1)
    print(
        f"    rebuild's CPU:           {measured.cpu_seconds / events * 1e6:,.1f} µs/event in "
        f"its process, {measured.workers_cpu_seconds / events * 1e6:,.1f} in its "
        f"{measured.workers} worker processes ({report.events_applied:,} events)"
    )
    results.record(
        results.Row(
            part="metrics, rebuild",
            figure=f"{rebuilt:,.0f} events/s; {REPLAY_EVENTS / 1e6:.0f} million events "
            f"in {minutes:,.0f} min (extrapolated)",
            baseline=f"live: {live:,.0f} events/s",
            ratio=results.ratio(rebuilt, live),
            target=f"{REPLAY_EVENTS / 1e6:.0f} million events replayed in under 30 min",
            met=minutes < 30,
            note=f"{report.events_applied:,} events, {measured.workers} worker processes; "
            f"the replay time is the replay rate measured here ({1 / per_event:,.0f} "
            f"events/s) applied to 30 million events, plus the final recording of the signals "
            f"({report.signals_seconds:.1f}s, once per rebuild; it assumes the rate holds as "
            "the database grows)",
        )
    )


# --- part 2: the purpose summary over a million cases, against PM4Py -------------------------


def _sqlite_time(moment: datetime) -> str:
    """The format SQLAlchemy's SQLite DateTime stores (UTC, no offset)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


# Rows are generated by SQLite itself (a recursive CTE): a million cases in seconds, where
# building them in Python took minutes. Case i: purpose PURPOSES[i % 6], starts T0 + 7i s,
# takes 600 + 7919i mod 40 days seconds, is fulfilled unless i % 5 == 0; its one demand is
# failure demand (a repeat) when i is odd. event_log() builds the same cases for PM4Py.
_NUMBERS = "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
_EPOCH = int(T0.timestamp())
_PURPOSE = "CASE i % 6 " + " ".join(f"WHEN {n} THEN '{p}'" for n, p in enumerate(PURPOSES))
_START = f"({_EPOCH} + i * 7)"
_SECONDS = "(600 + (i * 7919) % (40 * 86400))"


def sqlite_time_of(epoch_seconds: str) -> str:
    """The format SQLAlchemy's SQLite DateTime stores, from whole epoch seconds."""
    return f"strftime('%Y-%m-%d %H:%M:%S', {epoch_seconds}, 'unixepoch') || '.000000'"


@contextmanager
def bulk_load(path: Path, tables: tuple[str, ...]) -> Iterator[sqlite3.Connection]:
    """A connection for loading ``tables`` fast: their secondary indexes are dropped for the
    load and built again after it (a sort each, instead of a million random inserts).
    Closed at the end, not only committed: an open loader keeps its WAL beside the database,
    and what is timed next would read through it."""
    with contextlib.closing(sqlite3.connect(path)) as connection, connection:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=OFF")
        connection.execute("PRAGMA cache_size=-262144")  # 256 MB
        marks = ",".join("?" * len(tables))
        indexes = connection.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
            f"AND tbl_name IN ({marks})",
            tables,
        ).fetchall()
        for name, _ in indexes:
            connection.execute(f'DROP INDEX "{name}"')
        yield connection
        for _, sql in indexes:
            connection.execute(sql)


def fill_database(path: Path, count: int) -> float:
    """Cases and demand facts straight into the derived tables (SQLite is fine)."""
    started = time.perf_counter()
    done = "(i % 5 != 0)"
    start, end = sqlite_time_of(_START), sqlite_time_of(f"{_START} + {_SECONDS}")
    with bulk_load(path, ("cases", "demand_facts")) as connection:
        connection.execute(
            "INSERT INTO cases (source, customer_ref, case_id, case_ref, purpose, status, "
            "measured, started_at, fulfilled_at, end_to_end_seconds, reopened, contacts, "
            "failure_contacts, channels, first_channel, team, one_stop, last_activity_at) "
            f"{_NUMBERS}SELECT 'bench', 'C' || i, 'K' || i, 'K' || i, {_PURPOSE} END, "
            f"CASE WHEN {done} THEN 'fulfilled' ELSE 'open' END, 1, {start}, "
            f"CASE WHEN {done} THEN {end} END, "
            f"CASE WHEN {done} THEN CAST({_SECONDS} AS REAL) END, 0, 1, i % 2, 'phone', "
            f"'phone', 'north', {done}, CASE WHEN {done} THEN {end} ELSE {start} END "
            "FROM n",
            (count - 1,),
        )
        connection.execute(
            "INSERT INTO demand_facts (source, demand_id, customer_ref, case_id, purpose, "
            "demand_type, failure_kind, cause_purpose, channel, team, occurred_at, labelled) "
            f"{_NUMBERS}SELECT 'bench', 'd' || i, 'C' || i, 'K' || i, {_PURPOSE} END, "
            "CASE WHEN i % 2 THEN 'failure' ELSE 'value' END, "
            f"CASE WHEN i % 2 THEN 'repeat' END, NULL, 'phone', 'north', {start}, 0 "
            "FROM n",
            (count - 1,),
        )
    return time.perf_counter() - started


def fill_aggregates(path: Path) -> None:
    """demand_days, case_days and case_time_days from the rows written straight into the
    tables (fill_database, and bench/pages.py's received demands where there are any), as
    migrations 0010, 0011 and 0013 fill them: the live write path keeps them up to date."""
    with bulk_load(path, ("demand_days", "case_days", "case_time_days")) as connection:
        connection.execute(
            "INSERT INTO demand_days (day, source, channel, team, purpose, demand_type, "
            "failure_kind, cause_purpose, machine_purpose, machine_type, demands, "
            "handling_measured, handling_micros) "
            "SELECT date(f.occurred_at), f.source, f.channel, coalesce(f.team, ''), f.purpose, "
            "f.demand_type, coalesce(f.failure_kind, ''), coalesce(f.cause_purpose, ''), "
            "coalesce(d.purpose, f.purpose), coalesce(d.demand_type, f.demand_type), count(*), "
            "count(d.handling_seconds), "
            "coalesce(sum(CAST(round(d.handling_seconds * 1000000) AS INTEGER)), 0) "
            "FROM demand_facts f LEFT JOIN demands d "
            "ON d.source = f.source AND d.demand_id = f.demand_id "
            "GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10"
        )
        connection.execute(
            "INSERT INTO case_days (day, source, purpose, channel, team, fulfilled, contacts, "
            "one_stop) SELECT date(fulfilled_at), source, coalesce(purpose, ''), "
            "coalesce(first_channel, ''), coalesce(team, ''), count(*), sum(contacts), "
            "sum(CASE WHEN one_stop THEN 1 ELSE 0 END) FROM cases "
            "WHERE status = 'fulfilled' AND measured AND fulfilled_at IS NOT NULL "
            "GROUP BY 1, 2, 3, 4, 5"
        )
        # The bands are Python's (repository.time_band), as migration 0013 computes them.
        connection.create_function("band", 1, time_band, deterministic=True)
        connection.execute(
            "INSERT INTO case_time_days (day, source, purpose, channel, team, band, cases) "
            "SELECT date(fulfilled_at), source, coalesce(purpose, ''), "
            "coalesce(first_channel, ''), coalesce(team, ''), band(end_to_end_seconds), "
            "count(*) FROM cases "
            "WHERE end_to_end_seconds IS NOT NULL AND fulfilled_at IS NOT NULL "
            "GROUP BY 1, 2, 3, 4, 5, 6"
        )


async def time_summary(url: str) -> tuple[float, dict[str, float | None]]:
    engine = create_engine(url)
    try:
        async with session_factory(engine)() as session:
            started = time.perf_counter()
            summaries = await purpose_summaries(session, Filters())
            elapsed = time.perf_counter() - started
    finally:
        await engine.dispose()
    return elapsed, {s.purpose: s.end_to_end.p85_seconds for s in summaries}


def event_log(count: int) -> Any:
    """The same cases as an event log: a 'demand' event at the start, 'fulfilled' at the end
    (open cases have no end-to-end time in either computation, so they are left out)."""
    import numpy as np
    import pandas as pd

    i = np.arange(count, dtype=np.int64)
    i = i[i % 5 != 0]
    start = pd.Timestamp(T0) + pd.to_timedelta(i * 7, unit="s")
    end = start + pd.to_timedelta(600 + (i * 7919) % (40 * 86_400), unit="s")
    ids = np.char.add("K", i.astype(str))
    purposes = np.array(PURPOSES, dtype=object)[i % len(PURPOSES)]
    return pd.DataFrame(
        {
            "case:concept:name": np.concatenate([ids, ids]),
            "concept:name": ["demand"] * len(i) + ["fulfilled"] * len(i),
            "time:timestamp": pd.DatetimeIndex(start).append(pd.DatetimeIndex(end)),
            "case:purpose": np.concatenate([purposes, purposes]),
        }
    )


def pm4py_percentiles(log: Any) -> tuple[float, dict[str, float]]:
    """What an analyst does in PM4Py: per purpose, the case durations, then the percentile."""
    import numpy as np
    import pm4py

    started = time.perf_counter()
    p85 = {}
    for purpose in PURPOSES:
        durations = pm4py.stats.get_all_case_durations(log[log["case:purpose"] == purpose])
        p85[purpose] = float(np.percentile(durations, 85))
    return time.perf_counter() - started, p85


def compare_summary(workdir: Path, count: int) -> None:
    path = workdir / f"cases-{count}.db"
    upgrade(f"sqlite+aiosqlite:///{path}")
    generated = fill_database(path, count)
    started = time.perf_counter()
    fill_aggregates(path)
    generated += time.perf_counter() - started
    ours, our_p85 = asyncio.run(time_summary(f"sqlite+aiosqlite:///{path}"))
    log = event_log(count)
    theirs, their_p85 = pm4py_percentiles(log)
    agree = all(
        abs((our_p85[p] or 0) - their_p85[p]) < 1e-6 * max(1.0, their_p85[p]) for p in PURPOSES
    )
    print(
        f"  {count:>9,} cases (rows generated in {generated:.1f}s): purpose summary "
        f"{ours:.2f}s, PM4Py end-to-end percentiles {theirs:.2f}s -> PM4Py takes "
        f"{theirs / ours:.1f}x as long; p85 per purpose agree: {agree}"
    )
    path.unlink(missing_ok=True)
    reduced = "" if CASES >= 1_000_000 else f"; REDUCED SIZE ({CASES:,} cases)"
    results.record(
        results.Row(
            part=f"purpose summary, {count:,} cases",
            figure=f"{ours * 1000:,.0f} ms",
            baseline=f"PM4Py, same percentiles: {theirs:.1f} s",
            ratio=f"{theirs / ours:.1f}x faster" if ours > 0 else None,
            target=f"≤ {SUMMARY_TARGET_S * 1000:.0f} ms (a page or API call must feel instant)",
            met=ours <= SUMMARY_TARGET_S and agree,
            note=f"SQLite, every purpose, all periods; p85 per purpose agree with PM4Py: "
            f"{agree}{reduced}",
        )
    )


def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bench-metrics-", dir=ROOT / ".run"))
    cfg = local_kafka.LocalKafkaConfig.on_free_ports(
        root=ROOT, run_dir=ROOT / ".run" / "bench-metrics"
    )
    failed: Exception | None = None
    try:
        local_kafka.stop(cfg)
        local_kafka.wipe(cfg)
        local_kafka.start(cfg, timeout=120)
        try:
            kafka = KafkaSettings(
                bootstrap_servers=cfg.bootstrap, topic_prefix="bench.", partitions=3
            )
            asyncio.run(ensure_topics(kafka, topic_specs(kafka)))
            measured = asyncio.run(measure_ingestion(workdir, kafka))
            record_ingestion(measured)
            record_rebuild(asyncio.run(rebuild_rate(workdir, kafka)), measured.live_rate)
        except Exception as error:  # the summary below needs no broker: measure it anyway
            traceback.print_exc()
            failed = error
        finally:
            local_kafka.stop(cfg)
        print("  purpose summary (SQLite, every purpose, all periods) against PM4Py:")
        compare_summary(workdir, CASES)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if failed is not None:
        raise RuntimeError("metrics ingestion failed (traceback above)") from failed
