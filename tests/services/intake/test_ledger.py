"""The idempotency ledger on SQLite and PostgreSQL: claims, duplicates, crashes, retention."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from services.intake.db.migrate import upgrade
from services.intake.ledger import Claim, IdempotencyLedger, LedgerUnavailable, new_token
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


# --- a request's confirmation by its claims' token (one appended row) -----------------------

BARRIER = ("demand", "demo", "barrier")


async def landed(ledger: IdempotencyLedger) -> None:
    """Wait until what ``ledger`` queued (a confirm_soon) is committed: a later operation's
    burst comes after it."""
    await ledger.release([BARRIER])


async def test_a_token_confirms_every_key_its_request_claimed_and_no_other(
    ledger_factory: list[IdempotencyLedger],
) -> None:
    one, other = ledger_factory
    first, second = new_token(), new_token()
    a, b, c = (("demand", "demo", name) for name in "abc")
    assert await one.claim([a, b, a], first) == [Claim.CLAIMED, Claim.CLAIMED, Claim.IN_FLIGHT]
    assert await one.claim([c], second) == [Claim.CLAIMED]
    one.confirm_soon([a, b], first)
    # The same instance's next claim comes after the confirmation (the immediate retry).
    assert await one.claim([a, b, c]) == [Claim.DUPLICATE, Claim.DUPLICATE, Claim.IN_FLIGHT]
    # Another instance sees it too; c's request is still in flight (one's lease is 60 s).
    assert await other.claim([a, b]) == [Claim.DUPLICATE, Claim.DUPLICATE]
    assert await one.claim([c]) == [Claim.IN_FLIGHT]


async def test_a_claim_taken_over_is_published_by_the_takers_token_only(
    ledger_factory: list[IdempotencyLedger],
) -> None:
    """Window 1: the claimer dies (or stalls) after its ack, before its confirmation lands.
    The taker claims with its own token; the first claimer's late confirmation does not
    publish the row while the taker has not been acknowledged, the taker's does."""
    crashed, survivor = ledger_factory  # the survivor's lease is 0 s: every claim is stale
    key = ("demand", "demo", "late")
    late, taker = new_token(), new_token()
    assert await crashed.claim([key], late) == [Claim.CLAIMED]
    assert await survivor.claim([key], taker) == [Claim.CLAIMED]
    crashed.confirm_soon([key], late)
    await landed(crashed)
    assert await crashed.claim([key]) == [Claim.IN_FLIGHT]  # the taker's, still pending
    survivor.confirm_soon([key], taker)
    await landed(survivor)
    assert await crashed.claim([key]) == [Claim.DUPLICATE]
    assert await survivor.claim([key]) == [Claim.DUPLICATE]  # not taken over again


async def test_a_row_published_by_a_token_is_neither_released_nor_taken_over(
    ledger_factory: list[IdempotencyLedger],
) -> None:
    """The first claimer's broker refuses after a taker published: its release must not
    delete the published row (a retry would publish it again and be answered 202)."""
    crashed, survivor = ledger_factory
    key = ("demand", "demo", "kept")
    assert await crashed.claim([key]) == [Claim.CLAIMED]
    taker = new_token()
    assert await survivor.claim([key], taker) == [Claim.CLAIMED]
    survivor.confirm_soon([key], taker)
    await landed(survivor)
    await crashed.release([key])
    # Every claim is stale to the survivor: published, it is a duplicate, not taken over.
    assert await survivor.claim([key]) == [Claim.DUPLICATE]
    assert await crashed.claim([key]) == [Claim.DUPLICATE]


async def test_a_key_two_requests_claim_in_one_burst_carries_the_first_askers_token(
    ledger_factory: list[IdempotencyLedger],
) -> None:
    one, other = ledger_factory
    key, first, second = ("demand", "demo", "both"), new_token(), new_token()
    # Both claims are made by the calls, before either is awaited: one burst.
    claims = one.claim([key], first), one.claim([key], second)
    assert [await claim for claim in claims] == [[Claim.CLAIMED], [Claim.IN_FLIGHT]]
    one.confirm_soon([key], first)
    await landed(one)
    assert await other.claim([key]) == [Claim.DUPLICATE]


@pytest.mark.parametrize("by_token", [True, False], ids=["by token", "by key"])
async def test_a_confirmation_lands_across_a_restart(database_url: str, by_token: bool) -> None:
    await asyncio.to_thread(upgrade, database_url)
    engine = create_engine(database_url)
    ledger = IdempotencyLedger(engine, lease=timedelta(seconds=0))
    writer = asyncio.create_task(ledger.run())
    await asyncio.sleep(0)
    key, token = ("demand", "demo", f"restart-{by_token}"), new_token()
    assert await ledger.claim([key], token) == [Claim.CLAIMED]
    ledger.confirm_soon([key], token if by_token else None)
    ledger.request_stop()
    await asyncio.wait_for(writer, 10)
    # A new instance, whose lease would take over any pending claim: published, it is not.
    again = IdempotencyLedger(engine, lease=timedelta(seconds=0))
    restarted = asyncio.create_task(again.run())
    await asyncio.sleep(0)
    assert await again.claim([key]) == [Claim.DUPLICATE]
    again.request_stop()
    await asyncio.wait_for(restarted, 10)
    await engine.dispose()


async def test_purge_forgets_ids_published_by_a_token_and_their_confirmations(
    ledger_factory: list[IdempotencyLedger],
) -> None:
    one, _ = ledger_factory
    token, key = new_token(), ("demand", "demo", "old-token")
    assert await one.claim([key], token) == [Claim.CLAIMED]
    one.confirm_soon([key], token)
    await landed(one)
    assert await one.purge(retention=timedelta(days=1)) == 0
    assert await one.claim([key]) == [Claim.DUPLICATE]
    assert await one.purge(retention=timedelta(seconds=-1)) == 1
    # Forgotten, and so is its confirmation: a claim with the same token is pending again.
    assert await one.claim([key], token) == [Claim.CLAIMED]
    assert await one.claim([key]) == [Claim.IN_FLIGHT]


def test_no_two_tokens_are_alike_nor_a_forked_childs() -> None:
    """A token published by a confirmation stands for its request's claims only: no other
    request of the process, nor of a child forked from it (uvicorn's workers), has it."""
    tokens = {new_token() for _ in range(1000)}
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child
        os.write(writer, new_token())
        os._exit(0)
    os.waitpid(child, 0)
    childs = os.read(reader, 64)
    os.close(reader)
    os.close(writer)
    mine = new_token()
    assert len(tokens | {mine}) == 1001
    assert len(childs) == len(mine) == 16
    assert childs[:8] != mine[:8]  # another process half, though its count is the same
