"""The idempotency ledger: which event ids intake has accepted, shared by every instance.

Each event goes through two steps around the broker:

1. ``claim``: insert ``(kind, source, id)`` as *pending*. If the row is already *published* the
   event is a duplicate; if another request holds a fresh *pending* claim it is in flight
   (the caller is told to retry); a *pending* claim older than ``lease`` belongs to an
   instance that died between claiming and confirming, so it is taken over.
2. after the broker's acknowledgement, ``confirm``: mark *published*. If the broker
   refused, ``release``: delete the pending row so a retry can publish.

A claim carries its request's token (``new_token``), written on each row it inserts. The
request path confirms by that token (``confirm_soon(keys, token)``): one row appended to
``intake_confirmed_claims`` publishes every row claimed with it, where an UPDATE per key
cost about a tenth of a batched event. A row taken over keeps the first claimer's token:
the broker acknowledged that claimer's records if its confirmation comes, late or not, so
it still publishes the row. The ledger remembers which keys each request took over and
confirms those by key with its token (rare: only after a lease ran out).
``confirm(keys)`` marks the rows themselves, as before.

``confirm_by_token=False`` (the setting ``ledger_confirm_by_token``) confirms by key only,
while still writing and reading tokens: instances of the code before intake_0004 read only
the state, so a rolling upgrade from it, or a rollback to it, runs with this off
(docs/operations.md).

So a duplicate answer is only ever given for an id the broker acknowledged (never a 202
that can be lost), and two requests with one id never both publish while both instances
are alive. See docs/services/intake.md for the crash windows that remain.

Writes are group-committed: concurrent requests queue their operations and one writer
runs them all in one transaction, so the ledger costs a transaction per burst of
requests, not per request. On SQLite the transaction is one synchronous function on the
writer's own thread (one thread hop per burst, ``repository.apply_burst_sqlite``); on
PostgreSQL it goes through SQLAlchemy's async connection (``repository.apply_burst``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import queue
import sqlite3
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import partial
from typing import Any, Literal, Protocol, TypeVar

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.intake.db import repository
from services.intake.db.repository import Burst, BurstResult, EventKey
from services.intake.db.tables import PUBLISHED, TOKEN_BYTES

log = logging.getLogger(__name__)
T = TypeVar("T")


class Claim(StrEnum):
    CLAIMED = "claimed"  # this request publishes it
    DUPLICATE = "duplicate"  # the broker acknowledged it before
    IN_FLIGHT = "in_flight"  # another request is publishing it right now


class LedgerUnavailable(RuntimeError):
    """The ledger cannot be read or written: intake cannot promise idempotency, so 503."""


_Operation = Literal["claim", "confirm", "confirm_tokens", "release"]


def new_token() -> bytes:
    """A request's claim token, unique across requests and instances: the process's random
    half (64 bits, drawn again in a forked child) and a count. os.urandom per request
    cost 2.4 µs, more than a single request's confirmation saves."""
    return _process_half[0] + next(_count).to_bytes(TOKEN_BYTES // 2, "big")


_process_half: list[bytes] = []
_count = itertools.count()


def _draw_process_half() -> None:
    _process_half[:] = [os.urandom(TOKEN_BYTES // 2)]


_draw_process_half()
os.register_at_fork(after_in_child=_draw_process_half)


class _Request:
    """An operation for the writer's next burst, and the future its caller awaits. Its
    tokens: a claim's own (one), or the requests a ``confirm_tokens`` publishes."""

    __slots__ = ("done", "keys", "operation", "tokens")

    def __init__(
        self,
        operation: _Operation,
        keys: Sequence[EventKey],
        done: asyncio.Future[list[Claim]],
        tokens: Sequence[bytes] = (),
    ) -> None:
        self.operation = operation
        self.keys = keys
        self.done = done
        self.tokens = tokens


def _log_failure(done: asyncio.Future[list[Claim]]) -> None:
    if not done.cancelled() and done.exception() is not None:
        log.warning("could not confirm published ids: %s", done.exception())


_DATABASE_FAULTS = (SQLAlchemyError, sqlite3.Error, OSError)
_MAX_TAKEN_OVER = 10_000  # requests with taken-over keys awaiting their confirmation


class _Store(Protocol):
    """Where the writer's bursts go: one transaction each, on a connection it keeps."""

    async def apply(self, burst: Burst) -> BurstResult: ...

    async def close(self) -> None: ...


class _EngineStore:
    """Any database through SQLAlchemy's async connection (PostgreSQL)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._connection: AsyncConnection | None = None

    async def apply(self, burst: Burst) -> BurstResult:
        # The writer keeps one connection: no pool checkout, ping and reset per burst.
        if self._connection is None:
            self._connection = await self._engine.connect()
        return await repository.apply_burst(self._connection, burst)

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close()


class _SqliteStore:
    """A SQLite file through ``sqlite3`` on a thread of the writer's own: a burst is one
    hop to that thread and back, whatever its statements. A plain thread on a SimpleQueue,
    answering through ``call_soon_threadsafe``: a ThreadPoolExecutor's locks, futures and
    their chaining into asyncio cost more than the hop itself (profiled)."""

    def __init__(self, path: str, *, wal_autocheckpoint: int | None) -> None:
        self._path = path
        self._wal_autocheckpoint = wal_autocheckpoint
        self._jobs: queue.SimpleQueue[_Job | None] | None = None
        self._connection: sqlite3.Connection | None = None

    async def apply(self, burst: Burst) -> BurstResult:
        return await self._call(partial(self._apply, burst))

    def _apply(self, burst: Burst) -> BurstResult:
        if self._connection is None:
            self._connection = repository.connect_sqlite(
                self._path, wal_autocheckpoint=self._wal_autocheckpoint
            )
        return repository.apply_burst_sqlite(self._connection, burst)

    async def close(self) -> None:
        jobs = self._jobs
        if jobs is not None:
            # Queued behind a burst still running (its caller was cancelled), never beside it.
            await self._call(self._close)
            self._jobs = None
            jobs.put(None)

    def _close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    async def _call(self, work: Callable[[], T]) -> T:
        if self._jobs is None:
            self._jobs = queue.SimpleQueue()
            threading.Thread(
                target=_serve, args=(self._jobs,), name="intake-ledger", daemon=True
            ).start()
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()
        self._jobs.put((work, loop, done))
        result: T = await done
        return result


# A job for the ledger's thread: what to run, and the loop and future to answer on.
_Job = tuple[Callable[[], Any], asyncio.AbstractEventLoop, "asyncio.Future[Any]"]


def _serve(jobs: queue.SimpleQueue[_Job | None]) -> None:
    """The ledger thread: runs each job in turn until it is handed None."""
    while (job := jobs.get()) is not None:
        work, loop, done = job
        try:
            outcome: tuple[Any, BaseException | None] = (work(), None)
        except BaseException as error:  # handed to the awaiting task, which decides
            outcome = (None, error)
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits
            loop.call_soon_threadsafe(_settle, done, *outcome)


def _settle(done: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if done.cancelled():
        return
    if error is not None:
        done.set_exception(error)
    else:
        done.set_result(result)


def _store_for(engine: AsyncEngine, wal_autocheckpoint: int | None) -> _Store:
    database = engine.url.database
    if engine.dialect.name == "sqlite" and database and database != ":memory:":
        return _SqliteStore(database, wal_autocheckpoint=wal_autocheckpoint)
    return _EngineStore(engine)


class IdempotencyLedger:
    """Claims, confirmations and releases, group-committed by one writer.

    ``run()`` is the writer: a background task of the service (``BackgroundTask(
    "ledger-writer", ledger.run, stop=ledger.request_stop)``). While it is not running,
    every operation raises LedgerUnavailable, so intake answers 503 rather than hang.

    ``wal_autocheckpoint``: on a SQLite file, the writer connection's (see
    ``repository.connect_sqlite``); pass the engine's, raised when a WalCheckpointer runs.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        lease: timedelta,
        wal_autocheckpoint: int | None = None,
        confirm_by_token: bool = True,
    ) -> None:
        self._engine = engine
        self._lease = lease
        self._confirm_by_token = confirm_by_token
        # The keys each request (by its token) took over: their rows keep another claim's
        # token, so its confirmation marks them by key. Emptied by its confirm or release.
        self._taken_over: dict[bytes, list[EventKey]] = {}
        # The writer's queue: a deque and a future it waits on when the deque is empty,
        # not an asyncio.Queue (its put and get cost ~1.5 µs a single request, measured);
        # None asks the writer to stop. Confirmations without a caller waiting (the 202
        # path) gather as keys and go as one operation per burst, not a future each.
        self._queue: deque[_Request | None] = deque()
        self._confirming: list[EventKey] = []
        self._confirming_tokens: list[bytes] = []
        self._wake: asyncio.Future[None] | None = None
        self._store = _store_for(engine, wal_autocheckpoint)
        self._running = False

    async def run(self) -> None:
        """Write every queued operation, a burst per transaction, until ``request_stop``.

        A database fault fails the burst in hand (its callers answer 503) and the writer
        carries on with a fresh connection. Anything else is a bug: the burst's callers are
        failed too, and the error goes to the supervisor, which logs it and restarts us.
        """
        self._running = True
        batch: list[_Request] = []
        try:
            while True:
                while not self._queue and not self._confirming and not self._confirming_tokens:
                    self._wake = asyncio.get_running_loop().create_future()
                    await self._wake
                batch, stopping = self._take()
                if batch:
                    await self._write(batch)
                batch = []
                if stopping:
                    return
        finally:
            self._running = False
            self._wake = None
            # What is still queued, or was in hand when an error struck, is refused.
            while self._queue or self._confirming or self._confirming_tokens:
                rest, _ = self._take()
                batch += rest
            _fail(batch, LedgerUnavailable("the ledger writer stopped"))
            await self._disconnect()

    def _take(self) -> tuple[list[_Request], bool]:
        """The queued operations up to a stop, with the confirmations gathered so far; and
        whether a stop was asked for."""
        queue = self._queue
        batch: list[_Request] = []
        stopping = False
        while queue:
            queued = queue.popleft()
            if queued is None:
                stopping = True
                break
            batch.append(queued)
        if self._confirming:
            keys, self._confirming = self._confirming, []
            done: asyncio.Future[list[Claim]] = asyncio.get_running_loop().create_future()
            done.add_done_callback(_log_failure)
            batch.append(_Request("confirm", keys, done))
        if self._confirming_tokens:
            tokens, self._confirming_tokens = self._confirming_tokens, []
            done = asyncio.get_running_loop().create_future()
            done.add_done_callback(_log_failure)
            batch.append(_Request("confirm_tokens", (), done, tokens))
        return batch, stopping

    def _put(self, request: _Request | None) -> None:
        self._queue.append(request)
        self._wake_writer()

    def _wake_writer(self) -> None:
        wake, self._wake = self._wake, None
        if wake is not None and not wake.done():
            wake.set_result(None)

    def request_stop(self) -> None:
        """Let the operations already queued land (confirmations above all), then stop."""
        self._put(None)

    async def _write(self, batch: list[_Request]) -> None:
        try:
            results = await self._run(batch)
        except _DATABASE_FAULTS as error:
            log.warning("idempotency ledger write failed: %r", error)
            _fail(batch, LedgerUnavailable(repr(error)))
            await self._disconnect()
            return
        for request, result in zip(batch, results, strict=True):
            if not request.done.done():
                request.done.set_result(result)

    async def _disconnect(self) -> None:
        with contextlib.suppress(*_DATABASE_FAULTS):
            await self._store.close()

    async def purge_periodically(self, *, retention: timedelta, interval_s: float) -> None:
        """Forget ids older than ``retention`` every ``interval_s``; a background task."""
        while True:
            try:
                forgotten = await self.purge(retention=retention)
            except _DATABASE_FAULTS as error:  # the database is away: the next round retries
                log.warning("purging expired event ids failed: %r", error)
            else:
                log.info("forgot %d event ids older than %s", forgotten, retention)
            await asyncio.sleep(interval_s)

    def claim(self, keys: Sequence[EventKey], token: bytes | None = None) -> Awaitable[list[Claim]]:
        """One outcome per key, in order; a key repeated within ``keys`` is in flight.

        ``token``: the request's (``new_token``), to confirm its claims with; each claim
        has one, a new one if none is given.

        Not a coroutine: the answer's future itself, awaited by the caller (every request
        awaits its claim, and each coroutine between it and its future is a frame every
        resumption of its task passes through). LedgerUnavailable is raised by the call.
        The claim is made by the call, awaited or not: await the result at once (a claim
        never awaited still holds its keys, in flight, until the lease ends)."""
        return self._submit("claim", keys, (token or new_token(),))

    async def confirm(self, keys: Sequence[EventKey]) -> None:
        await self._submit("confirm", keys)

    def confirm_soon(self, keys: Sequence[EventKey], token: bytes | None = None) -> None:
        """Confirm in the writer's next burst, without waiting for it.

        The request path uses this once the broker has acknowledged: the 202 does not wait
        for a second transaction. Until the confirmation lands, a repeat finds a fresh
        pending claim and is told to retry (409), so it is still not published twice.

        ``token``: the one ``keys`` were claimed with, all of them by one request (its
        claimed keys, every one): a row appended for the token publishes them. Without
        it, each key's row is marked.
        """
        if keys and self._running:
            if token is None or not self._confirm_by_token:
                self._confirming += keys
            else:
                self._confirming_tokens.append(token)
                if self._taken_over and (taken_over := self._taken_over.pop(token, None)):
                    self._confirming += taken_over
            self._wake_writer()

    async def release(self, keys: Sequence[EventKey], token: bytes | None = None) -> None:
        """Deletes the keys' unpublished rows; ``token``: their claim's, whose take-overs
        are then forgotten."""
        if token is not None and self._taken_over:
            self._taken_over.pop(token, None)
        await self._submit("release", keys)

    async def purge(self, *, retention: timedelta) -> int:
        async with self._engine.begin() as connection:
            return await repository.delete_expired(
                connection, published_before=datetime.now(UTC) - retention
            )

    def _submit(
        self, operation: _Operation, keys: Sequence[EventKey], tokens: Sequence[bytes] = ()
    ) -> Awaitable[list[Claim]]:
        """The future of ``operation`` on ``keys``, queued for the writer's next burst."""
        done: asyncio.Future[list[Claim]] = asyncio.get_running_loop().create_future()
        if not keys:
            done.set_result([])
            return done
        if not self._running:
            raise LedgerUnavailable("the ledger writer is not running")
        self._put(_Request(operation, keys, done, tokens))
        return done

    async def _run(self, batch: list[_Request]) -> list[list[Claim]]:
        now = datetime.now(UTC)
        # Each key once, with the token of its first asker (who publishes it, below):
        # updated from the last claim to the first, so the first's token is the one kept.
        wanted: dict[EventKey, bytes] = {}
        for request in reversed(batch):
            if request.operation == "claim":
                wanted.update(dict.fromkeys(request.keys, request.tokens[0]))
        burst = Burst(
            released=[key for r in batch if r.operation == "release" for key in r.keys],
            confirmed=[key for r in batch if r.operation == "confirm" for key in r.keys],
            wanted=list(wanted),
            claim_tokens=list(wanted.values()),
            confirmed_tokens=[
                t for r in batch if r.operation == "confirm_tokens" for t in r.tokens
            ],
            at=now,
            stale_before=now - self._lease,
        )
        written = await self._store.apply(burst)
        taken, known = written.taken, written.known
        results: list[list[Claim]] = []
        for request in batch:
            if request.operation != "claim":
                results.append([])
                continue
            outcomes: list[Claim] = []
            for key in request.keys:
                if key in taken:
                    taken.discard(key)  # the first asker publishes; any repeat is in flight
                    outcomes.append(Claim.CLAIMED)
                elif known.get(key) == PUBLISHED:
                    outcomes.append(Claim.DUPLICATE)
                else:
                    outcomes.append(Claim.IN_FLIGHT)
            results.append(outcomes)
        if written.taken_over and self._confirm_by_token:
            self._remember_taken_over(batch, written.taken_over)
        return results

    def _remember_taken_over(self, batch: list[_Request], taken_over: set[EventKey]) -> None:
        """Each key taken over, under the token of the request it went to (the first
        asker, as above), for that request's confirmation to mark by key."""
        for request in batch:
            if request.operation != "claim":
                continue
            for key in request.keys:
                if key in taken_over:
                    taken_over.discard(key)
                    self._taken_over.setdefault(request.tokens[0], []).append(key)
        # A claim whose caller never confirmed nor released (cancelled in between) would
        # stay here: keep the newest only. A key dropped waits for the lease, as a crash.
        while len(self._taken_over) > _MAX_TAKEN_OVER:
            del self._taken_over[next(iter(self._taken_over))]


def _fail(batch: list[_Request], error: LedgerUnavailable) -> None:
    for request in batch:
        if not request.done.done():
            request.done.set_exception(error)
