"""`demandscope metrics rebuild`: replay the input topics from the beginning into an empty
database, through the same write path as the live service (services/metrics/ingest.py).
The topics are the whole input: demands, case events, labels and the recorded changes to
the system (system.changes), all kept for ever by default (shared/topics.py), so every
figure, the rebased capability limits included, comes back from the log alone.

A bounded replay, not a service: it reads every partition from its first offset to the end
offset seen at start, with no consumer group (so it commits nothing and disturbs no one),
and stops. It loads in bulk: each batch stores its events (and keeps the audit sample, as
live does), and the customers' derived rows (demand facts, cases, the daily aggregates) are
computed once at the end, each customer from all its events (ingest.derive_everything),
rather than once per batch that touched it. They are a function of the set of events
stored, so this ends where live batch-by-batch application does.
On a SQLite file, worker processes (``rebuild_workers``, rebuild_pool.py) take the second
core: during the load they decode each batch's records and make its rows and the audit's
inputs (ingest.prepare_load) while this process reads the topics and stores the batches
before, in order (ingest.store_prepared: what apply_events(derive=False) does with the
events, through the same functions); then they compute pages of customers (the same
recomputation, reading the file) while this process writes the page before.

Then it records the special-cause signals on the rebuilt charts as already raised and
published: the live service raised them (counted, alerted, sent on
capability.signals) before the database was rebuilt, and the signals table starts empty.
Because derived figures are a function of the set of events stored, the rebuilt
database ends with the same figures as the live one (tests/services/metrics check it).
Records that do not decode are skipped and counted; the live service dead-letters them.

On SQLite the database is written as a bulk load may write a database nothing else uses yet:
``synchronous=OFF`` (a commit does not wait for the disk), a 256 MB page cache, temporary
data in memory, and secondary indexes built once rather than kept row by row: the received
events' (but the one the load reads) dropped for the load and built before the derivation,
the derived tables' dropped for the derivation and built after it
(write_path.drop_secondary_indexes). A rebuild that does not finish
(killed, the machine gone) leaves a database to throw away, never to resume: it is not
empty, so a second rebuild refuses it, and after a power loss with ``synchronous=OFF`` it
may be corrupt. Start again from an empty, migrated database: nothing is lost, the log holds
every event.
demand.classified is written in transactions: the one bounded reader (shared/kafka/
read_to_end.py) reads committed records only and knows where such a topic ends.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections import deque
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.metrics.audit import AuditPolicy
from services.metrics.db import measures, sql, system_changes, write_path
from services.metrics.ingest import PreparedLoad, derive_everything, store_prepared
from services.metrics.rebuild_pool import (
    DerivationPool,
    Prepared,
    database_file,
    derive_in_pool,
    prepare_records,
)
from services.metrics.service import ChartSettings, purpose_metrics
from services.metrics.signals import record_as_raised, signal_rows
from services.metrics.subscriptions import consumed_topics
from shared.database.engine import create_engine, session_factory
from shared.kafka.read_to_end import read_to_end
from shared.kafka.settings import KafkaSettings
from shared.ownership import PurposeOwners

# (offsets read, offsets in total): transaction markers take offsets too, so the records
# read can stay below the total while the offsets reach it.
Progress = Callable[[int, int], None]
_IDLE_S = 60.0  # a replay that stops advancing this long (the broker gone) fails


class DatabaseNotEmpty(RuntimeError):
    """A rebuild only fills an empty database, so it cannot double anything."""


@dataclass(frozen=True)
class RebuildReport:
    records: int  # committed records read
    # Offsets up to the end seen at the start: more than the records when transaction
    # markers or aborted records are among them (they take offsets, and are never read).
    offsets: int
    events_applied: int
    undecodable: int
    seconds: float
    signals_recorded: int = 0  # as already raised: none is counted or sent again
    # Of ``seconds``, the final recording of the signals: once per rebuild, over the
    # purposes' charts, so it does not grow with the events replayed.
    signals_seconds: float = 0.0

    @property
    def events_per_second(self) -> float:
        return self.events_applied / self.seconds if self.seconds else 0.0


async def rebuild(
    *,
    kafka: KafkaSettings,
    database_url: str,
    batch_size: int = 1000,
    progress: Progress | None = None,
    audit: AuditPolicy | None = None,
    charts: ChartSettings | None = None,
    window_days: int = 28,
    owners: PurposeOwners | None = None,
    workers: int = 2,
) -> RebuildReport:
    """``audit`` must be the live service's (its ``audit_*`` settings), so that the rebuild
    draws the same audit sample; ``charts``, ``window_days`` and ``owners`` too (its chart
    settings, ``publish_window_days`` and taxonomy), so that the signals recorded as raised
    are the ones its publisher computes. ``workers`` (``rebuild_workers``): processes that
    compute the customers' derived rows beside this one, on a SQLite file
    (rebuild_pool.py); 0, or another database, computes them here."""
    # What exists by now lives as long as the replay: out of the collector's generations,
    # as the live service does once it is built (main.build).
    gc.freeze()
    engine = create_engine(database_url)
    dialect = engine.dialect.name
    _bulk_load_settings(engine)
    sessions = session_factory(engine)
    topics = consumed_topics(kafka)
    started = time.perf_counter()
    done = applied = undecodable = offsets = 0
    path = database_file(database_url) if workers > 0 else None
    try:
        async with sessions() as session:
            counts = await system_changes.row_counts(session)
        if any(counts.values()):
            raise DatabaseNotEmpty(f"the database already holds rows: {counts}")
        with ExitStack() as running:
            # Started now, so that the workers' imports overlap the load; stopped (the pages
            # running finished, the rest dropped) however the rebuild ends.
            pool = None if path is None else running.enter_context(DerivationPool(path, workers))
            # Stored in bulk into tables whose indexes the load does not read, built after it.
            async with sessions.begin() as session:
                load_indexes = await sql.run_sync(
                    session,
                    partial(
                        write_path.drop_secondary_indexes,
                        tables=write_path.LOADED_TABLES,
                        keep=write_path.KEPT_FOR_THE_LOAD,
                    ),
                )
            # Records that arrive after the start are the live service's: they are not read.
            async with read_to_end(
                kafka,
                list(topics),
                timeout=None,
                idle_timeout=_IDLE_S,
                max_records=batch_size,
                client_id="demandscope-rebuild",
            ) as reader:
                if progress is not None:
                    progress(0, reader.total)
                # Each batch decoded and made ready to store by a worker, or here when none
                # is free (or up yet, or there are none): this process never waits for a
                # worker while it has a batch to work on. Stored here in the order read, one
                # transaction each, as soon as it is ready and those before it are stored.
                loading: deque[asyncio.Future[Prepared]] = deque()
                ahead = 2 * pool.workers if pool is not None else 0
                try:
                    async for batch in reader:
                        done += len(batch)
                        records = [(topics[record.topic], record.value) for record in batch]
                        busy = sum(not preparing.done() for preparing in loading)
                        if pool is not None and pool.ready and busy < ahead:
                            loading.append(asyncio.wrap_future(pool.prepare(records)))
                        else:
                            here = asyncio.get_running_loop().create_future()
                            here.set_result(prepare_records(records, dialect))
                            loading.append(here)
                        # Bounded: at most twice the workers' share waits to be stored.
                        while loading and (loading[0].done() or len(loading) > 2 * ahead):
                            load, failed = await loading[0]
                            loading.popleft()
                            await _store(sessions, load, audit)
                            applied += load.decoded
                            undecodable += failed
                        if progress is not None:
                            progress(reader.offsets_read, reader.total)
                    while loading:
                        load, failed = await loading[0]
                        loading.popleft()
                        await _store(sessions, load, audit)
                        applied += load.decoded
                        undecodable += failed
                finally:
                    for preparing in loading:  # a failure or a cancel: the rest is not wanted
                        preparing.cancel()
                if progress is not None:
                    progress(reader.offsets_read, reader.total)
                offsets = reader.total
            # Loaded in bulk, computed once: each customer's derived rows from all its events,
            # into tables whose secondary indexes are built once at the end (SQLite).
            async with sessions.begin() as session:
                await sql.run_sync(
                    session, partial(write_path.create_indexes, statements=load_indexes)
                )
                indexes = await sql.run_sync(
                    session,
                    partial(write_path.drop_secondary_indexes, tables=write_path.DERIVED_TABLES),
                )
            if pool is None:
                await derive_everything(sessions)
            else:
                await derive_in_pool(sessions, pool)
            async with sessions.begin() as session:
                await sql.run_sync(session, partial(write_path.create_indexes, statements=indexes))
            signals_started = time.perf_counter()
            recorded = await _record_signals_as_raised(
                sessions, charts or ChartSettings(), window_days, owners or PurposeOwners()
            )
            signals_seconds = time.perf_counter() - signals_started
    finally:
        await engine.dispose()
    return RebuildReport(
        done,
        offsets,
        applied,
        undecodable,
        time.perf_counter() - started,
        recorded,
        signals_seconds,
    )


async def _store(
    sessions: async_sessionmaker[AsyncSession], load: PreparedLoad, audit: AuditPolicy | None
) -> None:
    if load.decoded:
        async with sessions.begin() as session:
            await store_prepared(session, load, audit)


def _bulk_load_settings(engine: AsyncEngine) -> None:
    """SQLite: a rebuild's connections trade durability for speed (the module's docstring
    says why that is safe here); set after create_engine's own settings, so they win."""
    if engine.dialect.name != "sqlite":
        return

    @event.listens_for(engine.sync_engine, "connect")
    def _bulk_pragmas(connection: Any, _record: Any) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA synchronous=OFF")
        cursor.execute("PRAGMA cache_size=-262144")  # KiB: 256 MB
        cursor.execute("PRAGMA temp_store=MEMORY")
        cursor.close()


async def _record_signals_as_raised(
    sessions: async_sessionmaker[AsyncSession],
    charts: ChartSettings,
    window_days: int,
    owners: PurposeOwners,
) -> int:
    now = datetime.now(UTC)
    recorded = 0
    async with sessions.begin() as session:
        for purpose in await measures.all_purposes(session):
            figures = await purpose_metrics(
                session, purpose, settings=charts, window_days=window_days, now=now
            )
            rows = signal_rows(figures, owner=owners.owner_of(purpose), raised_at=now)
            recorded += await record_as_raised(session, rows, at=now)
    return recorded
