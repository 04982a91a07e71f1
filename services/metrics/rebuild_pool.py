"""A rebuild's load and derivation over worker processes (SQLite): the second core.

The load: a worker decodes a batch of records and makes it ready to store
(``prepare_records``: ingest.prepare_load, the rows and the audit's inputs as plain values);
the rebuild's process stores the batches in the order read (ingest.store_prepared). What it
stores is what apply_events(derive=False) stores of the same events: the same functions
build the same values, only in another process (tests/services/metrics/test_rebuild_load.py).

After the bulk load, every customer's derived rows are computed once from its stored events
(ingest.derive_everything). Customers are independent, so a page of them can be computed in
another process while the rebuild's one connection writes the page before. A worker runs
the write path's own recomputation (``ingest.recompute_on_connection``, the code live
ingestion runs) on a read-only connection of its own to the same file: the four reads of the
page's customers go to the file, and every statement that would write (the facts, the
cases, the daily aggregates, the open cases' counts) is recorded instead, as plain tuples,
and handed back; the rebuild's connection replays them in one transaction per page, in page
order. The worker's temporary table of touched customers is its own connection's, so it is
written there.

Why the result is the one the in-process derivation gives: the same function computes each
page from the same rows. The events were all committed by the load before the first page
(WAL: a reader sees every committed transaction and is never blocked by the writer), they do
not change afterwards, and a page's customers have no derived rows yet when it is read (each
customer is in one page; the rows the writer commits meanwhile are other customers'). The
daily aggregates and the open cases' counts move by integer deltas, which add up to the same
whatever the order. tests/services/metrics/test_rebuild_pool.py holds it.

Bounded: ``workers`` processes, and at most two pages per worker computed and not yet
written. A worker ignores SIGINT (Ctrl-C reaches the whole process group): the rebuild's
process stops, cancels the pages not started and waits for the ones running (a page is
at most ``customers_per_transaction`` customers) before it returns or raises.
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import signal
import sqlite3
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, TypeAlias

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.metrics.db import sql
from services.metrics.db.sql import Customer, SqliteDb, SyncDb
from services.metrics.ingest import PreparedLoad, customer_pages, prepare_load
from shared.events import Event
from shared.kafka.codec import DecodeError, decode

# A statement the worker did not run, for the rebuild's connection: which SyncDb method,
# and its arguments (plain tuples, lists and dicts of str, int, float, bool and None).
Write: TypeAlias = tuple[str, tuple[Any, ...]]

# The one table a worker writes on its own connection: TEMP, so the file is not touched.
_OWN_TABLE = "touched_customers"


def database_file(database_url: str) -> Path | None:
    """The SQLite file a URL names; None for another database or one in memory (no second
    process can open it)."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    if url.database.startswith("file:"):
        return None
    return Path(url.database).resolve()


class DerivationPool:
    """The worker processes of one rebuild; a context manager that always shuts them down.

    Started when entered, so that the workers import the write path while the load runs.
    Spawned, so the program that calls the rebuild must guard its own start with
    ``if __name__ == "__main__"`` (the CLI's and the bench's do)."""

    def __init__(self, path: Path, workers: int) -> None:
        if workers < 1:
            raise ValueError("a pool needs at least one worker")
        self.workers = workers
        self._started: list[Future[None]] = []
        # spawn: the rebuild's process has threads (aiosqlite's, the event loop's), which a
        # fork would copy mid-state.
        self._executor = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
            initargs=(str(path),),
        )

    def __enter__(self) -> DerivationPool:
        try:
            # One process started per task submitted; each task done once its worker is up.
            self._started = [self._executor.submit(_ready) for _ in range(self.workers)]
        except BaseException:
            self._executor.shutdown(wait=True, cancel_futures=True)
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # Pages not started are dropped; running ones end (bounded by a page) before this
        # returns, so no worker outlives the rebuild.
        self._executor.shutdown(wait=True, cancel_futures=True)

    def submit(self, customers: Sequence[Customer]) -> Future[list[Write]]:
        return self._executor.submit(_derive_page, list(customers))

    @property
    def ready(self) -> bool:
        """Whether every worker has started (imported what it runs)."""
        return bool(self._started) and all(started.done() for started in self._started)

    def prepare(self, records: Sequence[Record]) -> Future[Prepared]:
        """The load's batch of ``records`` decoded and made ready to store (ingest.
        prepare_load, SQLite's stored forms) in a worker."""
        return self._executor.submit(_prepare_batch, list(records))


async def derive_in_pool(
    sessions: async_sessionmaker[AsyncSession],
    pool: DerivationPool,
    customers_per_transaction: int = 2000,
) -> int:
    """ingest.derive_everything with the pages computed by ``pool``: the same pages (the
    customers in key order, those with demands first), each page's rows written in one
    transaction, in page order. Returns the customers computed."""
    in_flight: deque[tuple[asyncio.Future[list[Write]], int]] = deque()
    window = 2 * pool.workers
    done = 0
    try:
        async for page in customer_pages(sessions, customers_per_transaction):
            in_flight.append((asyncio.wrap_future(pool.submit(page)), len(page)))
            if len(in_flight) >= window:
                done += await _write_oldest(sessions, in_flight)
        while in_flight:
            done += await _write_oldest(sessions, in_flight)
    finally:
        for computing, _ in in_flight:  # a failure or a cancel: the rest is not wanted
            computing.cancel()
    return done


async def _write_oldest(
    sessions: async_sessionmaker[AsyncSession],
    in_flight: deque[tuple[asyncio.Future[list[Write]], int]],
) -> int:
    computing, customers = in_flight[0]
    writes = await computing
    in_flight.popleft()
    async with sessions.begin() as session:
        await sql.run_sync(session, partial(replay, writes=writes))
    return customers


def replay(db: SyncDb, writes: Sequence[Write]) -> None:
    """The statements a worker recorded, on the rebuild's connection, in their order."""
    for method, arguments in writes:
        getattr(db, method)(*arguments)


class RecordingDb(SqliteDb):
    """A worker's connection: reads the file; records every write (but to its own temporary
    table) for the rebuild's connection instead of running it."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        super().__init__(connection)
        self.writes: list[Write] = []

    def execute(self, statement: str, params: Mapping[str, Any] | None = None) -> None:
        if _OWN_TABLE in statement:
            super().execute(statement, params)
        else:
            self.writes.append(("execute", (statement, dict(params) if params else None)))

    def executemany(self, statement: str, rows: Sequence[Mapping[str, Any]]) -> None:
        if _OWN_TABLE in statement:
            super().executemany(statement, rows)
        elif rows:
            self.writes.append(("executemany", (statement, [dict(row) for row in rows])))

    def insert_rows(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        if table == _OWN_TABLE:
            super().insert_rows(table, columns, rows)
        elif rows:
            self.writes.append(("insert_rows", (table, tuple(columns), list(rows))))


# A record of the load: the event its topic carries, and its value.
Record: TypeAlias = tuple[type[Event], bytes | None]
# A batch made ready to store, and how many of its records did not decode.
Prepared: TypeAlias = tuple[PreparedLoad, int]


def prepare_records(records: Sequence[Record], dialect: str) -> Prepared:
    """Records decoded (those that do not, counted and skipped) and made ready to store in
    ``dialect``'s stored forms: what a worker does with a batch of the load, and the
    rebuild's own process while its workers start or when it has none."""
    events: list[Event] = []
    undecodable = 0
    for model, value in records:
        try:
            events.append(decode(model, value))
        except DecodeError:
            undecodable += 1
    time, day = sql.stored_forms(dialect)
    return prepare_load(events, time=time, day=day), undecodable


# --- in the worker process -------------------------------------------------------------------

_path: str | None = None
_connection: sqlite3.Connection | None = None


def _start_worker(path: str) -> None:
    global _path
    # Ctrl-C is the rebuild's to handle: it lets the page running here end, then stops us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _path = path
    from services.metrics import ingest  # noqa: F401  (imported now, while the load runs)

    gc.freeze()  # the imported modules live as long as the worker


def _ready() -> None:
    """A task that starts a worker (ProcessPoolExecutor starts one per task submitted)."""


def _prepare_batch(records: list[Record]) -> Prepared:
    # The pool is for SQLite files only (database_file).
    return prepare_records(records, "sqlite")


def _derive_page(customers: list[Customer]) -> list[Write]:
    from services.metrics.ingest import recompute_on_connection

    connection = _worker_connection()
    db = RecordingDb(connection)
    # One read transaction per page: one snapshot for its reads, let go at its end so the
    # writer's checkpoints can move past it.
    connection.execute("BEGIN")
    try:
        recompute_on_connection(db, customers)
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")  # only the temporary table was written
    return db.writes


def _worker_connection() -> sqlite3.Connection:
    global _connection
    if _connection is None:
        if _path is None:
            raise RuntimeError("not a rebuild worker (no database)")
        # Opened at the first page, after the load has committed; read-only, so a write
        # this module did not record fails rather than reaching the file (its TEMP table
        # is not in the file); autocommit, transactions begun by hand (_derive_page).
        _connection = sqlite3.connect(
            f"{Path(_path).as_uri()}?mode=ro", uri=True, isolation_level=None
        )
        _connection.execute("PRAGMA busy_timeout=10000")
        _connection.execute("PRAGMA cache_size=-65536")  # KiB: 64 MB
        _connection.execute("PRAGMA temp_store=MEMORY")
    return _connection
