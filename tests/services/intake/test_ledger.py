"""The idempotency ledger on SQLite and PostgreSQL: claims, duplicates, crashes, retention."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.intake.db import repository
from services.intake.db.migrate import upgrade
from services.intake.db.tables import PENDING, PUBLISHED, AcceptedEvent
from services.intake.ledger import Claim, IdempotencyLedger, LedgerUnavailable, new_token
from shared.database.engine import create_engine
from tests.support.waiting import wait_until

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


async def test_a_late_confirmation_of_the_first_claimer_publishes_a_row_taken_over(
    ledger_factory: list[IdempotencyLedger],
) -> None:
    """Window 1: the claimer stalls after its ack, its claim is taken over, then its
    confirmation lands. The broker acknowledged its records: the row is published (a
    take-over keeps the row's token), and the taker's confirmation publishes it too."""
    crashed, survivor = ledger_factory  # the survivor's lease is 0 s: every claim is stale
    key = ("demand", "demo", "late")
    late, taker = new_token(), new_token()
    assert await crashed.claim([key], late) == [Claim.CLAIMED]
    assert await survivor.claim([key], taker) == [Claim.CLAIMED]
    crashed.confirm_soon([key], late)
    await landed(crashed)
    assert await crashed.claim([key]) == [Claim.DUPLICATE]
    survivor.confirm_soon([key], taker)
    await landed(survivor)
    assert await crashed.claim([key]) == [Claim.DUPLICATE]
    assert await survivor.claim([key]) == [Claim.DUPLICATE]  # not taken over again


async def test_the_takers_confirmation_publishes_the_keys_it_took_over(
    ledger_factory: list[IdempotencyLedger],
) -> None:
    """The first claimer never confirms (it died): the row keeps its token, so the taker's
    confirmation marks the key it took over by key, beside its own new key's token."""
    crashed, survivor = ledger_factory
    taken, fresh = ("demand", "demo", "taken"), ("demand", "demo", "fresh")
    assert await crashed.claim([taken]) == [Claim.CLAIMED]
    taker = new_token()
    assert await survivor.claim([taken, fresh], taker) == [Claim.CLAIMED, Claim.CLAIMED]
    survivor.confirm_soon([taken, fresh], taker)
    await landed(survivor)
    # The crashed claimer's lease is 60 s: a pending row would be in flight to it.
    assert await crashed.claim([taken, fresh]) == [Claim.DUPLICATE, Claim.DUPLICATE]


async def test_an_acknowledged_id_survives_the_takers_release(
    ledger_factory: list[IdempotencyLedger],
) -> None:
    """The claimer's late confirmation lands after a take-over, then the taker's broker
    refuses and it releases: the id the claimer was answered 202 for stays a duplicate."""
    claimer, taker = ledger_factory
    key, first, second = ("demand", "demo", "kept-late"), new_token(), new_token()
    assert await claimer.claim([key], first) == [Claim.CLAIMED]
    assert await taker.claim([key], second) == [Claim.CLAIMED]  # taken over
    claimer.confirm_soon([key], first)
    await landed(claimer)
    await taker.release([key], second)
    assert await claimer.claim([key]) == [Claim.DUPLICATE]
    assert await taker.claim([key]) == [Claim.DUPLICATE]


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


# --- the repository's guards, one statement at a time ------------------------------------------


async def test_a_take_over_leaves_a_row_published_by_its_token(database_url: str) -> None:
    """The take-over's own "not published by a token" guard (the bursts read the state
    first, so only a confirmation committed between that read and the UPDATE reaches it)."""
    await asyncio.to_thread(upgrade, database_url)
    engine = create_engine(database_url)
    key, token, now = ("demand", "demo", "guarded"), new_token(), datetime.now(UTC)
    async with engine.begin() as connection:
        await repository.insert_claims(connection, {key: token}, now - timedelta(hours=1))
        await repository.confirm_tokens(connection, [token], now)
    later = now + timedelta(hours=1)  # every claim is stale
    async with engine.begin() as connection:
        assert not await repository.take_over_stale(connection, key, stale_before=later, at=now)
    database = engine.url.database
    if engine.dialect.name == "sqlite" and database:
        plain = sqlite3.connect(database)
        try:
            stored = repository.stored_datetime
            taken = plain.execute(repository._TAKE_OVER, (stored(now), *key, stored(later)))
            assert taken.rowcount == 0
            plain.commit()
        finally:
            plain.close()
    async with engine.connect() as connection:
        assert await repository.states(connection, [key]) == {key: PUBLISHED}
    await engine.dispose()


async def test_a_take_over_racing_a_token_confirmation_on_postgresql(
    fresh_postgres_url: str,
) -> None:
    """Read committed: the take-over does not see a token confirmation written but not yet
    committed (another table's insert) and takes the row over; once both commit the row is
    published by the claimer's token, and the taker's release (its broker refused) keeps it."""
    url = fresh_postgres_url
    await asyncio.to_thread(upgrade, url)
    engine = create_engine(url)
    key, token, now = ("demand", "demo", "race"), new_token(), datetime.now(UTC)
    async with engine.begin() as connection:
        await repository.insert_claims(connection, {key: token}, now - timedelta(seconds=31))
    confirmer, taker = await engine.connect(), await engine.connect()
    try:
        await confirmer.begin()
        await repository.confirm_tokens(confirmer, [token], now)
        await taker.begin()
        stale_before = now - timedelta(seconds=30)
        assert await repository.take_over_stale(taker, key, stale_before=stale_before, at=now)
        await confirmer.commit()
        await taker.commit()
    finally:
        await confirmer.close()
        await taker.close()
    async with engine.begin() as connection:
        assert await repository.states(connection, [key]) == {key: PUBLISHED}
        await repository.delete_pending(connection, [key])
    async with engine.connect() as connection:
        assert await repository.states(connection, [key]) == {key: PUBLISHED}
    await engine.dispose()


async def _state(engine: AsyncEngine, key: tuple[str, str, str]) -> str | None:
    """What the ledger says of ``key`` now (a token confirmation read as published)."""
    async with engine.connect() as connection:
        return (await repository.states(connection, [key])).get(key)


async def test_a_token_confirmation_lands_with_no_other_operation(
    ledger_factory: list[IdempotencyLedger], database_url: str
) -> None:
    """An idle instance's 202: nothing else wakes its writer, the confirmation must."""
    one, _ = ledger_factory
    key, token = ("demand", "demo", "idle"), new_token()
    assert await one.claim([key], token) == [Claim.CLAIMED]
    one.confirm_soon([key], token)
    engine = create_engine(database_url)
    try:
        await wait_until(
            lambda: _state(engine, key),
            accept=lambda state: state == PUBLISHED,
            timeout=10,
            what="the token confirmation to land",
        )
    finally:
        await engine.dispose()


# --- confirmation by token off: what the code before intake_0004 reads -----------------------


@contextlib.asynccontextmanager
async def running(
    engine: AsyncEngine, *, confirm_by_token: bool
) -> AsyncIterator[IdempotencyLedger]:
    ledger = IdempotencyLedger(
        engine, lease=timedelta(seconds=60), confirm_by_token=confirm_by_token
    )
    writer = asyncio.create_task(ledger.run())
    await asyncio.sleep(0)
    try:
        yield ledger
    finally:
        ledger.request_stop()
        await asyncio.wait_for(writer, 10)


async def test_with_confirmation_by_token_off_an_older_reader_sees_the_id_published(
    database_url: str,
) -> None:
    """A rolling upgrade from before intake_0004: the new code confirms by key (the state
    column, all the older code reads), and still reads a token-published row as published."""
    await asyncio.to_thread(upgrade, database_url)
    engine = create_engine(database_url)
    by_key, by_token = ("demand", "demo", "by-key"), ("demand", "demo", "by-token")
    async with running(engine, confirm_by_token=False) as expanding:
        token = new_token()
        assert await expanding.claim([by_key], token) == [Claim.CLAIMED]
        expanding.confirm_soon([by_key], token)  # the request path passes its token
        await landed(expanding)
        async with engine.connect() as connection:  # the older code's read: state only
            rows = await connection.execute(
                select(AcceptedEvent.event_id, AcceptedEvent.state).where(
                    AcceptedEvent.event_id.in_(["by-key"])
                )
            )
            assert rows.all() == [("by-key", PUBLISHED)]
        async with running(engine, confirm_by_token=True) as contracted:
            token = new_token()
            assert await contracted.claim([by_token], token) == [Claim.CLAIMED]
            contracted.confirm_soon([by_token], token)
            await landed(contracted)
        assert await _state(engine, by_token) == PUBLISHED
        async with engine.connect() as connection:
            rows = await connection.execute(
                select(AcceptedEvent.state).where(AcceptedEvent.event_id == "by-token")
            )
            assert rows.scalar_one() == PENDING  # what the older code would read
        assert await expanding.claim([by_key, by_token]) == [Claim.DUPLICATE, Claim.DUPLICATE]
    await engine.dispose()


async def test_purge_keeps_a_row_claimed_before_the_cutoff_and_confirmed_after_it(
    database_url: str,
) -> None:
    """A token-published row goes with its confirmation's age, not its claim's."""
    await asyncio.to_thread(upgrade, database_url)
    engine = create_engine(database_url)
    key, token, now = ("demand", "demo", "edge"), new_token(), datetime.now(UTC)
    async with engine.begin() as connection:
        await repository.insert_claims(connection, {key: token}, now - timedelta(days=2))
        await repository.confirm_tokens(connection, [token], now)
    async with engine.begin() as connection:
        cutoff = now - timedelta(days=1)
        assert await repository.delete_expired(connection, published_before=cutoff) == 0
    assert await _state(engine, key) == PUBLISHED
    await engine.dispose()
