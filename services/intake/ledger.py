"""The idempotency ledger: which event ids intake has accepted, shared by every instance.

Each event goes through two steps around the broker:

1. ``claim``: insert ``(kind, id)`` as *pending*. If the row is already *published* the
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


class IdempotencyLedger:
    def __init__(self, engine: AsyncEngine, *, lease: timedelta) -> None:
        self._engine = engine
        self._lease = lease
        self._queue: asyncio.Queue[_Request] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._writer = asyncio.create_task(self._write_loop(), name="ledger-writer")

    async def stop(self) -> None:
        # Let confirmations already queued land before the writer goes.
        if self._writer is not None and not self._writer.done():
            flushed = _Request("confirm", [])
            await self._queue.put(flushed)
            with contextlib.suppress(LedgerUnavailable):
                await flushed.done
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None

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
        if keys and self._writer is not None and not self._writer.done():
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
        if self._writer is None or self._writer.done():
            raise LedgerUnavailable("the ledger writer is not running")
        request = _Request(operation, keys)
        await self._queue.put(request)
        return await request.done

    async def _write_loop(self) -> None:
        # The writer keeps one connection: no pool checkout, ping and reset per burst.
        connection: AsyncConnection | None = None
        try:
            while True:
                batch = [await self._queue.get()]
                while not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                try:
                    if connection is None:
                        connection = await self._engine.connect()
                    results = await self._run(connection, batch)
                except Exception as error:  # a database fault fails this burst, not the writer
                    log.warning("idempotency ledger write failed: %r", error)
                    if connection is not None:
                        with contextlib.suppress(Exception):
                            await connection.close()
                        connection = None
                    for request in batch:
                        if not request.done.done():
                            request.done.set_exception(LedgerUnavailable(repr(error)))
                    continue
                for request, result in zip(batch, results, strict=True):
                    if not request.done.done():
                        request.done.set_result(result)
        finally:
            if connection is not None:
                with contextlib.suppress(Exception):
                    await connection.close()

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
