"""A run that ends never ends as if cancelled because aiokafka's consumer let out a
cancellation of its own while stopping.

aiokafka's ``Fetcher.close()`` cancels its fetch tasks and awaits them without catching
their ``CancelledError``. In test_faults' broker restart a fetch task was sleeping in its
retry back-off when a commit failed: the stray cancellation left ``run()`` in place of the
``CommitFailed``, the supervisor took it for the service stopping, and the consumer was
never started again (nothing logged, every later record left unread).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaConnectionError
from prometheus_client import CollectorRegistry

from shared.kafka import consumer as consumer_module
from shared.kafka import transactions
from shared.kafka.consumer import ConsumerRunner, RunnerOptions
from shared.kafka.runtime_metrics import ConsumerMetrics
from shared.kafka.settings import KafkaSettings


class StrayCancellingConsumer:
    """Polls as told; ``stop()`` raises CancelledError, as aiokafka's fetcher lets one out."""

    def __init__(self, **_: Any) -> None:
        self.poll: asyncio.Future[dict[Any, Any]] = asyncio.get_running_loop().create_future()
        self.stopped = False
        # Set: stop() waits on ``release`` (after setting ``stopping``) instead of raising.
        self.hold: bool = False
        self.stopping = asyncio.Event()
        self.release = asyncio.Event()
        made.append(self)

    def subscribe(self, topics: list[str], listener: Any) -> None:
        pass

    async def start(self) -> None:
        pass

    async def getmany(self, **_: Any) -> dict[Any, Any]:
        return await self.poll

    def assignment(self) -> set[Any]:
        return set()

    async def stop(self) -> None:
        self.stopped = True
        if self.hold:
            self.stopping.set()
            await self.release.wait()
            return
        raise asyncio.CancelledError()


made: list[StrayCancellingConsumer] = []


def runner(monkeypatch: pytest.MonkeyPatch) -> ConsumerRunner:
    made.clear()
    monkeypatch.setattr(consumer_module, "AIOKafkaConsumer", StrayCancellingConsumer)
    return ConsumerRunner(
        settings=KafkaSettings(),
        topics={},
        handler=None,  # type: ignore[arg-type]
        options=RunnerOptions(group_id="g", client_id="c", source="s"),
        metrics=ConsumerMetrics(CollectorRegistry()),
        producer=object(),
    )


async def _started(run: asyncio.Task[None]) -> StrayCancellingConsumer:
    for _ in range(100):
        if made:
            return made[0]
        await asyncio.sleep(0.01)
    run.cancel()
    raise AssertionError("the runner never made its consumer")


async def test_a_failed_run_ends_with_its_error_not_with_aiokafkas_cancellation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made_runner = runner(monkeypatch)
    run = asyncio.create_task(made_runner.run())
    consumer = await _started(run)
    consumer.poll.set_exception(KafkaConnectionError("broker gone"))
    with pytest.raises(KafkaConnectionError, match="broker gone"):
        await asyncio.wait_for(run, 10)
    assert consumer.stopped


async def test_a_stopped_run_returns(monkeypatch: pytest.MonkeyPatch) -> None:
    made_runner = runner(monkeypatch)
    run = asyncio.create_task(made_runner.run())
    consumer = await _started(run)
    made_runner.stop()
    consumer.poll.set_result({})
    await asyncio.wait_for(run, 10)  # returns: no stray CancelledError
    assert consumer.stopped


async def test_a_run_cancelled_while_stopping_its_consumer_is_cancelled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The run ends normally (stop()), and is cancelled while inside the consumer's stop():
    that cancellation is the task's own and goes on, not taken for aiokafka's stray one."""
    made_runner = runner(monkeypatch)
    run = asyncio.create_task(made_runner.run())
    consumer = await _started(run)
    released: list[bool] = []

    async def release() -> None:
        released.append(True)

    made_runner._release = release  # type: ignore[method-assign]
    consumer.hold = True
    made_runner.stop()
    consumer.poll.set_result({})
    await asyncio.wait_for(consumer.stopping.wait(), 10)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(run, 10)
    assert run.cancelled()
    assert released  # what the run held is given up all the same


class StrayCancellingProducer:
    async def stop(self) -> None:
        raise asyncio.CancelledError()


async def test_a_transactional_producers_stray_cancellation_is_logged_and_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="shared.kafka.transactions"):
        await transactions._stop(StrayCancellingProducer())
    assert "cancellation of aiokafka's own" in caplog.text


@pytest.mark.integration
async def test_a_stray_cancellation_while_stopping_still_closes_the_consumers_client(
    kafka_bootstrap: str, topic_factory: Any
) -> None:
    """aiokafka's stop() marks the consumer closed, then a fetch task's CancelledError comes
    out of Fetcher.close() before the client is closed: its connections and its metadata
    task were left running for good (stop() again does nothing), one set a recovered
    broker restart. ``_stop_consumer`` finishes the close."""
    topic = await topic_factory(prefix="stop", partitions=1)
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=None)
    await consumer.start()
    consumer.assign([TopicPartition(topic, 0)])
    await consumer.getmany(timeout_ms=200)  # the fetch routine is fetching
    client: Any = consumer._client
    fetcher: Any = consumer._fetcher
    sync_task = client._sync_task
    assert sync_task is not None
    assert not sync_task.done()
    # Fetch tasks in flight, as the fetcher's routine leaves them when it is cancelled; the
    # first one Fetcher.close() cancels and awaits lets its CancelledError out. Added with
    # no await before stop(): the routine, without an assignment, would clear them itself.
    in_flight = [asyncio.create_task(asyncio.sleep(3600)) for _ in range(2)]
    fetcher._pending_tasks.update(in_flight)
    async with asyncio.timeout(20):
        await consumer_module._stop_consumer(consumer)

    assert all(task.done() for task in in_flight)
    assert fetcher._fetch_task.done()
    assert sync_task.done()
    assert client._sync_task is None
