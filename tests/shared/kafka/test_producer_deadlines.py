"""ManagedProducer's deadlines for single records (``_Deadlines``): each caller waits at most
the delivery timeout from its own send, however late it joined the others, and no less;
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
DEADLINE = 30.0


async def _failed_at(answer: asyncio.Future[None]) -> float:
    with pytest.raises(TimeoutError):
        await answer
    return asyncio.get_running_loop().time()


async def test_each_answer_fails_at_its_own_deadline_also_when_it_joined_late() -> None:
    loop = asyncio.get_running_loop()
    deadlines = _Deadlines(0.2)
    watched: list[tuple[float, asyncio.Task[float]]] = []
    for _ in range(4):  # one watched every 0.07 s: later ones join while earlier ones wait
        answer: asyncio.Future[None] = loop.create_future()
        at = loop.time()
        deadlines.watch(answer)
        watched.append((at, asyncio.create_task(_failed_at(answer))))
        await asyncio.sleep(0.07)
    for at, failed in watched:
        assert await asyncio.wait_for(failed, DEADLINE) >= at + 0.2  # never before its own


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
    await _failed_at(open_one)
    assert all(answer.result() is None for answer in answered)
    assert cancelled.cancelled()
    assert len(deadlines) == 0


@pytest.mark.integration
async def test_single_records_never_acknowledged_are_broker_unavailable_in_time(
    kafka_bootstrap: str, topic_factory: TopicFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap, delivery_timeout_s=0.3)
    topic = await topic_factory("deadlines", 1)
    managed = ManagedProducer(settings, client_id="deadlines", max_timeouts=1000)
    upkeep = asyncio.create_task(managed.maintain())

    async def connected() -> bool:
        return managed.producer is not None

    def record(n: int) -> OutboundRecord:
        return OutboundRecord(topic=topic, key=b"k", value=b"%d" % n, headers=[])

    try:
        await wait_until(connected, timeout=DEADLINE, what="the producer connected")
        await managed.send_and_wait([record(0)])  # the topic's partitions listed
        assert managed.producer is not None
        never: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        async def unacknowledged(*args: Any, **kwargs: Any) -> Any:
            return never  # submitted, never acknowledged

        monkeypatch.setattr(managed.producer, "send_batch", unacknowledged)
        watched = 0
        watch = managed._deadlines.watch

        def counted(answer: asyncio.Future[None]) -> None:
            nonlocal watched
            watched += 1
            watch(answer)

        monkeypatch.setattr(managed._deadlines, "watch", counted)
        loop = asyncio.get_running_loop()

        async def timed(n: int) -> float:
            await asyncio.sleep(0.1 * (n % 5))  # callers join rounds late
            started = loop.time()
            with pytest.raises(BrokerUnavailable, match="in time"):
                await managed.send_and_wait([record(n)])
            return loop.time() - started

        waits = await asyncio.wait_for(asyncio.gather(*(timed(n) for n in range(20))), DEADLINE)
    finally:
        upkeep.cancel()
        await asyncio.gather(upkeep, return_exceptions=True)
        await managed.close()
    assert watched == 20  # every caller on the watched path
    assert all(wait >= 0.3 for wait in waits)
