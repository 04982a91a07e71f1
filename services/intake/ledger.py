"""The idempotency ledger: which event ids intake has accepted, shared by every instance.

Each event goes through two steps around the broker:

1. ``claim``: insert ``(kind, source, id)`` as *pending*. If the row is already *published* the
   event is a duplicate; if another request holds a fresh *pending* claim it is in flight
   (the caller is told to retry); a *pending* claim older than ``lease`` belongs to an
   instance that died between claiming and confirming, so it is taken over.
2. after the broker's acknowledgement, ``confirm``: mark *published*. If the broker
   refused, ``release``: delete the pending row so a retry can publish.

So a duplicate answer is only ever given for an id the broker acknowledged (never a 202
that can be lost), and two requests with one id never both publish while both instances
are alive. See docs/services/intake.md for the crash windows that remain.

Writes are group-committed: concurrent requests queue their operations and one writer
runs them all in one transaction, so the ledger costs a transaction per burst of
requests, not per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Literal

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.intake.db import repository
from services.intake.db.repository import EventKey
from services.intake.db.tables import PUBLISHED

log = logging.getLogger(__name__)


class Claim(StrEnum):
    CLAIMED = "claimed"  # this request publishes it
    DUPLICATE = "duplicate"  # the broker acknowledged it before
    IN_FLIGHT = "in_flight"  # another request is publishing it right now


class LedgerUnavailable(RuntimeError):
    """The ledger cannot be read or written: intake cannot promise idempotency, so 503."""


_Operation = Literal["claim", "confirm", "release"]


@dataclass
class _Request:
    operation: _Operation
    keys: Sequence[EventKey]
    done: asyncio.Future[list[Claim]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


def _log_failure(done: asyncio.Future[list[Claim]]) -> None:
    if not done.cancelled() and done.exception() is not None:
        log.warning("could not confirm published ids: %s", done.exception())


_DATABASE_FAULTS = (SQLAlchemyError, OSError)


class IdempotencyLedger:
    """Claims, confirmations and releases, group-committed by one writer.

    ``run()`` is the writer: a background task of the service (``BackgroundTask(
    "ledger-writer", ledger.run, stop=ledger.request_stop)``). While it is not running,
    every operation raises LedgerUnavailable, so intake answers 503 rather than hang.
    """

    def __init__(self, engine: AsyncEngine, *, lease: timedelta) -> None:
        self._engine = engine
        self._lease = lease
        self._queue: asyncio.Queue[_Request | None] = asyncio.Queue()
        self._connection: AsyncConnection | None = None
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
                first = await self._queue.get()
                batch = [] if first is None else [first]
                stopping = first is None
                while not stopping and not self._queue.empty():
                    queued = self._queue.get_nowait()
                    if queued is None:
                        stopping = True
                    else:
                        batch.append(queued)
                if batch:
                    await self._write(batch)
                batch = []
                if stopping:
                    return
        finally:
            self._running = False
            # What is still queued, or was in hand when an error struck, is refused.
            while not self._queue.empty():
                queued = self._queue.get_nowait()
                if queued is not None:
                    batch.append(queued)
            _fail(batch, LedgerUnavailable("the ledger writer stopped"))
            await self._disconnect()

    def request_stop(self) -> None:
        """Let the operations already queued land (confirmations above all), then stop."""
        self._queue.put_nowait(None)

    async def _write(self, batch: list[_Request]) -> None:
        # The writer keeps one connection: no pool checkout, ping and reset per burst.
        try:
            if self._connection is None:
                self._connection = await self._engine.connect()
            results = await self._run(self._connection, batch)
        except _DATABASE_FAULTS as error:
            log.warning("idempotency ledger write failed: %r", error)
            _fail(batch, LedgerUnavailable(repr(error)))
            await self._disconnect()
            return
        for request, result in zip(batch, results, strict=True):
            if not request.done.done():
                request.done.set_result(result)

    async def _disconnect(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(*_DATABASE_FAULTS):
                await connection.close()

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

    async def claim(self, keys: Sequence[EventKey]) -> list[Claim]:
        """One outcome per key, in order; a key repeated within ``keys`` is in flight."""
        return await self._submit("claim", keys)

    async def confirm(self, keys: Sequence[EventKey]) -> None:
        await self._submit("confirm", keys)

    def confirm_soon(self, keys: Sequence[EventKey]) -> None:
        """Confirm in the writer's next burst, without waiting for it.

        The request path uses this once the broker has acknowledged: the 202 does not wait
        for a second transaction. Until the confirmation lands, a repeat finds a fresh
        pending claim and is told to retry (409), so it is still not published twice.
        """
        if keys and self._running:
            request = _Request("confirm", keys)
            request.done.add_done_callback(_log_failure)
            self._queue.put_nowait(request)

    async def release(self, keys: Sequence[EventKey]) -> None:
        await self._submit("release", keys)

    async def purge(self, *, retention: timedelta) -> int:
        async with self._engine.begin() as connection:
            return await repository.delete_expired(
                connection, published_before=datetime.now(UTC) - retention
            )

    async def _submit(self, operation: _Operation, keys: Sequence[EventKey]) -> list[Claim]:
        if not keys:
            return []
        if not self._running:
            raise LedgerUnavailable("the ledger writer is not running")
        request = _Request(operation, keys)
        await self._queue.put(request)
        return await request.done

    async def _run(self, connection: AsyncConnection, batch: list[_Request]) -> list[list[Claim]]:
        now = datetime.now(UTC)
        released = [key for r in batch if r.operation == "release" for key in r.keys]
        confirmed = [key for r in batch if r.operation == "confirm" for key in r.keys]
        async with connection.begin():
            # Release and confirm first, so a claim in the same burst sees their effect.
            if released:
                await repository.delete_pending(connection, released)
            if confirmed:
                await repository.mark_published(connection, confirmed, now)
            claims = [request for request in batch if request.operation == "claim"]
            wanted = list(dict.fromkeys(key for request in claims for key in request.keys))
            inserted = await repository.insert_claims(connection, wanted, now) if wanted else set()
            existing = [key for key in wanted if key not in inserted]
            known = await repository.states(connection, existing) if existing else {}
            taken: set[EventKey] = set(inserted)
            for key in existing:
                if known.get(key) != PUBLISHED and await repository.take_over_stale(
                    connection, key, stale_before=now - self._lease, at=now
                ):
                    taken.add(key)
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
        return results


def _fail(batch: list[_Request], error: LedgerUnavailable) -> None:
    for request in batch:
        if not request.done.done():
            request.done.set_exception(error)
