"""ManagedProducer's deadlines for single records (``_Deadlines``): each caller waits at least
the delivery timeout from its own send, however late it joined the others, and not much more
(its own deadline + SLACK: a timer set for a later entry's deadline, or one timeout too late,
is 0.7 s or more past it here); an answer cancelled in the middle of the queue is passed over;
a send never acknowledged is the caller's BrokerUnavailable, as with a timeout scope."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from shared.kafka.codec import OutboundRecord
from shared.kafka.producer import BrokerUnavailable, ManagedProducer, _Deadlines
from shared.kafka.settings import KafkaSettings
from tests.support.waiting import wait_until

TopicFactory = Callable[..., Awaitable[str]]
DEADLINE = 30.0  # the broker's fixtures (connecting, listing partitions)
TIMEOUT = 1.0  # the delivery timeout of the deadline tests
# How late past its own deadline a caller may fail: a bound for correctness, not speed.
# The mutants it catches (timer re-armed at the last entry's deadline, or at a deadline +
# TIMEOUT, or kept at a cancelled front) are 0.7 s late or more with the joins below.
SLACK = 0.5
LOST = 10.0  # a timer lost (never fires): fail after this rather than hang


async def _failed_at(answer: asyncio.Future[None]) -> float:
    with pytest.raises(TimeoutError):
        await answer
    return asyncio.get_running_loop().time()


async def _sleep_until(at: float) -> None:
    await asyncio.sleep(max(0.0, at - asyncio.get_running_loop().time()))


async def test_each_answer_fails_at_its_own_deadline_also_when_it_joined_late() -> None:
    loop = asyncio.get_running_loop()
    deadlines = _Deadlines(TIMEOUT)
    watched: list[tuple[float, asyncio.Task[float]]] = []
    start = loop.time()
    # Later ones join while the first waits; the second's deadline is 0.8 s before the last's.
    for offset in (0.0, 0.1, 0.2, 0.9):
        await _sleep_until(start + offset)
        answer: asyncio.Future[None] = loop.create_future()
        at = loop.time()
        deadlines.watch(answer)
        watched.append((at, asyncio.create_task(_failed_at(answer))))
    for at, failed in watched:
        failed_at = await asyncio.wait_for(failed, LOST)
        assert at + TIMEOUT <= failed_at <= at + TIMEOUT + SLACK  # at its own deadline


async def test_answered_and_cancelled_answers_are_left_as_they_are_and_let_go() -> None:
    loop = asyncio.get_running_loop()
    deadlines = _Deadlines(0.1)
    answered: list[asyncio.Future[None]] = []
    for _ in range(50):
        answer: asyncio.Future[None] = loop.create_future()
        deadlines.watch(answer)
        answer.set_result(None)
        answered.append(answer)
    cancelled: asyncio.Future[None] = loop.create_future()
    deadlines.watch(cancelled)
    cancelled.cancel()
    open_one: asyncio.Future[None] = loop.create_future()
    deadlines.watch(open_one)
    assert len(deadlines) <= 2  # the answered ones left the front as new ones came
    await asyncio.wait_for(_failed_at(open_one), LOST)
    assert all(answer.result() is None for answer in answered)
    assert cancelled.cancelled()
    assert len(deadlines) == 0


async def test_an_answer_cancelled_in_the_middle_is_passed_over_when_the_timer_fires() -> None:
    loop = asyncio.get_running_loop()
    deadlines = _Deadlines(TIMEOUT)
    first: asyncio.Future[None] = loop.create_future()
    deadlines.watch(first)
    failed_first = asyncio.create_task(_failed_at(first))
    await asyncio.sleep(0.05)
    middle: asyncio.Future[None] = loop.create_future()
    deadlines.watch(middle)
    await asyncio.sleep(0.05)
    live: asyncio.Future[None] = loop.create_future()
    live_at = loop.time()
    deadlines.watch(live)
    failed_live = asyncio.create_task(_failed_at(live))
    middle.cancel()  # after the last watch: only the timer meets it, behind an open front
    assert len(deadlines) == 3
    await asyncio.wait_for(failed_first, LOST)
    failed_at = await asyncio.wait_for(failed_live, LOST)  # not lost on the cancelled one
    assert live_at + TIMEOUT <= failed_at <= live_at + TIMEOUT + SLACK  # nor kept behind it
    assert middle.cancelled()  # left as it is
    assert len(deadlines) == 0


class _Unacknowledged:
    """A started ManagedProducer whose producer submits every batch and is never
    acknowledged, with a count of the answers its deadline timer was given."""

    def __init__(self, managed: ManagedProducer, topic: str) -> None:
        self.managed = managed
        self.topic = topic
        self.watched = 0

    def record(self, n: int) -> OutboundRecord:
        return OutboundRecord(topic=self.topic, key=b"k", value=b"%d" % n, headers=[])

    async def start(self, monkeypatch: pytest.MonkeyPatch) -> None:
        managed = self.managed

        async def connected() -> bool:
            return managed.producer is not None

        await wait_until(connected, timeout=DEADLINE, what="the producer connected")
        await managed.send_and_wait([self.record(0)])  # the topic's partitions listed
        assert managed.producer is not None
        never: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        async def unacknowledged(*args: Any, **kwargs: Any) -> Any:
            return never  # submitted, never acknowledged

        monkeypatch.setattr(managed.producer, "send_batch", unacknowledged)
        watch = managed._deadlines.watch

        def counted(answer: asyncio.Future[None]) -> None:
            self.watched += 1
            watch(answer)

        monkeypatch.setattr(managed._deadlines, "watch", counted)

    async def timed(self, n: int, delay: float) -> float:
        """How long a send of record n, made after delay, waited for its BrokerUnavailable."""
        await asyncio.sleep(delay)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(BrokerUnavailable, match="in time"):
            await self.managed.send_and_wait([self.record(n)])
        return loop.time() - started


def _watched(sends: _Unacknowledged, count: int) -> Callable[[], Awaitable[bool]]:
    async def enough() -> bool:
        return sends.watched >= count

    return enough


async def _unacknowledged(
    kafka_bootstrap: str, topic_factory: TopicFactory, name: str
) -> tuple[ManagedProducer, str]:
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap, delivery_timeout_s=TIMEOUT)
    topic = await topic_factory(name, 1)
    return ManagedProducer(settings, client_id=name, max_timeouts=1000), topic


@pytest.mark.integration
async def test_single_records_never_acknowledged_are_broker_unavailable_in_time(
    kafka_bootstrap: str, topic_factory: TopicFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    managed, topic = await _unacknowledged(kafka_bootstrap, topic_factory, "deadlines")
    upkeep = asyncio.create_task(managed.maintain())
    sends = _Unacknowledged(managed, topic)
    try:
        await sends.start(monkeypatch)
        # Callers join while the first ones wait; the second group's deadline is 0.8 s
        # before the third's.
        delays = (0.0, 0.1, 0.9)
        waits = await asyncio.wait_for(
            asyncio.gather(*(sends.timed(n, delays[n % 3]) for n in range(21))),
            TIMEOUT + 0.9 + LOST,
        )
    finally:
        upkeep.cancel()
        await asyncio.gather(upkeep, return_exceptions=True)
        await managed.close()
    assert sends.watched == 21  # every caller on the watched path
    assert all(TIMEOUT <= wait <= TIMEOUT + SLACK for wait in waits), waits  # at its own deadline


@pytest.mark.integration
async def test_a_caller_cancelled_while_waiting_is_cancelled_and_the_others_time_out(
    kafka_bootstrap: str, topic_factory: TopicFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    managed, topic = await _unacknowledged(kafka_bootstrap, topic_factory, "deadlines-cancel")
    upkeep = asyncio.create_task(managed.maintain())
    sends = _Unacknowledged(managed, topic)
    try:
        await sends.start(monkeypatch)
        first = asyncio.create_task(sends.timed(1, 0.0))
        cancelled = asyncio.create_task(sends.timed(2, 0.05))
        live = asyncio.create_task(sends.timed(3, 0.1))
        await wait_until(_watched(sends, 3), timeout=DEADLINE, what="the three callers waiting")
        cancelled.cancel()  # after the last watch: the timer meets its answer, not watch()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(cancelled, LOST)
        assert len(managed._deadlines) == 3  # still queued, behind the open first
        waits = await asyncio.wait_for(asyncio.gather(first, live), TIMEOUT + LOST)
    finally:
        upkeep.cancel()
        await asyncio.gather(upkeep, return_exceptions=True)
        await managed.close()
    assert all(TIMEOUT <= wait <= TIMEOUT + SLACK for wait in waits), waits  # on time, each
