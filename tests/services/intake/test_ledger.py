"""The idempotency ledger on SQLite and PostgreSQL: claims, duplicates, crashes, retention."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from services.intake.db.migrate import upgrade
from services.intake.ledger import Claim, IdempotencyLedger, LedgerUnavailable
from shared.database.engine import create_engine

pytestmark = pytest.mark.integration


@pytest.fixture
async def ledger_factory(database_url: str) -> AsyncIterator[list[IdempotencyLedger]]:
    """Ledgers of separate 'instances' sharing one database."""
    await asyncio.to_thread(upgrade, database_url)
    engines = []
    ledgers: list[IdempotencyLedger] = []
    writers = []
    for lease in (60.0, 0.0):
        engine = create_engine(database_url)
        engines.append(engine)
        ledger = IdempotencyLedger(engine, lease=timedelta(seconds=lease))
        writers.append(asyncio.create_task(ledger.run()))
        ledgers.append(ledger)
    await asyncio.sleep(0)  # the writers start
    yield ledgers
    for ledger in ledgers:
        ledger.request_stop()
    await asyncio.gather(*writers)
    for engine in engines:
        await engine.dispose()


async def test_a_confirmed_id_is_a_duplicate_for_every_instance(
    ledger_factory: list[IdempotencyLedger],
) -> None:
    one, other = ledger_factory
    assert await one.claim(
        [("demand", "demo", "a"), ("demand", "demo", "b"), ("demand", "demo", "a")]
    ) == [
        Claim.CLAIMED,
        Claim.CLAIMED,
        Claim.IN_FLIGHT,
    ]
    # While unconfirmed and within the lease, another request must not publish it too.
    assert await one.claim([("demand", "demo", "a")]) == [Claim.IN_FLIGHT]
    await one.confirm([("demand", "demo", "a"), ("demand", "demo", "b")])
    assert await other.claim([("demand", "demo", "a"), ("case_event", "demo", "a")]) == [
        Claim.DUPLICATE,
        Claim.CLAIMED,
    ]


async def test_an_id_is_one_sources_own(ledger_factory: list[IdempotencyLedger]) -> None:
    """An event is (source, id): another source's use of an id is no duplicate (issue 10)."""
    one, other = ledger_factory
    assert await one.claim([("demand", "demo", "s")]) == [Claim.CLAIMED]
    await one.confirm([("demand", "demo", "s")])
    assert await other.claim([("demand", "genesys", "s"), ("demand", "demo", "s")]) == [
        Claim.CLAIMED,
        Claim.DUPLICATE,
    ]


async def test_released_claims_are_free_and_concurrent_claims_have_one_winner(
    ledger_factory: list[IdempotencyLedger],
) -> None:
    one, _ = ledger_factory
    await one.claim([("demand", "demo", "x")])
    await one.release([("demand", "demo", "x")])
    outcomes = await asyncio.gather(*(one.claim([("demand", "demo", "x")]) for _ in range(20)))
    assert sorted(outcome for (outcome,) in outcomes).count(Claim.CLAIMED) == 1


async def test_a_claim_abandoned_by_a_crashed_instance_is_taken_over_after_the_lease(
    ledger_factory: list[IdempotencyLedger],
) -> None:
    crashed, survivor = ledger_factory  # the survivor's lease is 0 s: every claim is stale
    assert await crashed.claim([("demand", "demo", "c")]) == [Claim.CLAIMED]
    assert await survivor.claim([("demand", "demo", "c")]) == [Claim.CLAIMED]
    await survivor.confirm([("demand", "demo", "c")])
    assert await survivor.claim([("demand", "demo", "c")]) == [Claim.DUPLICATE]


async def test_purge_forgets_only_ids_older_than_the_retention(
    ledger_factory: list[IdempotencyLedger],
) -> None:
    one, _ = ledger_factory
    await one.claim([("demand", "demo", "old")])
    await one.confirm([("demand", "demo", "old")])
    assert await one.purge(retention=timedelta(days=1)) == 0
    assert await one.purge(retention=timedelta(seconds=-1)) == 1
    assert await one.claim([("demand", "demo", "old")]) == [Claim.CLAIMED]


async def test_a_stop_lets_queued_confirmations_land_and_then_refuses_work(
    database_url: str,
) -> None:
    await asyncio.to_thread(upgrade, database_url)
    engine = create_engine(database_url)
    ledger = IdempotencyLedger(engine, lease=timedelta(seconds=60))
    with pytest.raises(LedgerUnavailable):  # no writer yet: refused, not left waiting
        await ledger.claim([("demand", "demo", "s")])
    writer = asyncio.create_task(ledger.run())
    await asyncio.sleep(0)
    assert await ledger.claim([("demand", "demo", "s")]) == [Claim.CLAIMED]
    ledger.confirm_soon([("demand", "demo", "s")])  # the 202 path: not awaited
    ledger.request_stop()
    await asyncio.wait_for(writer, 10)
    with pytest.raises(LedgerUnavailable):
        await ledger.claim([("demand", "demo", "s")])

    again = IdempotencyLedger(engine, lease=timedelta(seconds=60))
    restarted = asyncio.create_task(again.run())
    await asyncio.sleep(0)
    assert await again.claim([("demand", "demo", "s")]) == [Claim.DUPLICATE]
    again.request_stop()
    await asyncio.wait_for(restarted, 10)
    await engine.dispose()


async def test_a_claim_of_no_keys_is_answered_without_a_writer(database_url: str) -> None:
    """claim() hands back its answer's future (not a coroutine): no keys, no burst, an
    empty answer, as before, whether or not a writer runs; a claim of keys without one is
    refused by the call itself."""
    engine = create_engine(database_url)
    ledger = IdempotencyLedger(engine, lease=timedelta(seconds=60))
    assert await ledger.claim([]) == []
    await ledger.release([])
    await ledger.confirm([])
    with pytest.raises(LedgerUnavailable):
        ledger.claim([("demand", "demo", "n")])
    await engine.dispose()


async def test_a_claim_is_made_by_the_call_awaited_or_not(
    ledger_factory: list[IdempotencyLedger],
) -> None:
    """claim() submits its keys when called (why its callers await it at once): a claim
    whose answer nobody awaits still holds its key, and the next claim finds it in flight."""
    one, _ = ledger_factory
    one.claim([("demand", "demo", "unawaited")])  # its answer, dropped
    assert await one.claim([("demand", "demo", "unawaited")]) == [Claim.IN_FLIGHT]
