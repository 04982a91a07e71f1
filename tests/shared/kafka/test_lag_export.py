"""The runner's cheap per-poll settings: the lag gauge exported at most once per
``LAG_EXPORT_INTERVAL_S``, not after every poll (each export looks up every assigned
partition's position); the fetch's wait passed to the consumer."""

from __future__ import annotations

import pytest
from aiokafka.structs import TopicPartition
from prometheus_client import CollectorRegistry

from shared.kafka import consumer as consumer_module
from shared.kafka.consumer import LAG_EXPORT_INTERVAL_S, ConsumerRunner, RunnerOptions
from shared.kafka.runtime_metrics import ConsumerMetrics
from shared.kafka.settings import KafkaSettings


class Assigned:
    """What ``_export_lag`` asks of a consumer: two partitions, ten records behind."""

    def __init__(self) -> None:
        self.partitions = {TopicPartition("t", 0), TopicPartition("t", 1)}
        self.position_calls = 0
        self.position_at = 90

    def assignment(self) -> set[TopicPartition]:
        return self.partitions

    def highwater(self, tp: TopicPartition) -> int:
        return 100

    async def position(self, tp: TopicPartition) -> int:
        self.position_calls += 1
        return self.position_at


def lag_runner(registry: CollectorRegistry) -> ConsumerRunner:
    """A runner with no handler: only its lag export is called."""
    return ConsumerRunner(
        settings=KafkaSettings(),
        topics={},
        handler=None,  # type: ignore[arg-type]
        options=RunnerOptions(group_id="g", client_id="c", source="s"),
        metrics=ConsumerMetrics(registry),
        producer=object(),
    )


class FakeTime:
    """The consumer module's ``time``, with a clock the test moves."""

    def __init__(self, clock: list[float]) -> None:
        self._clock = clock

    def monotonic(self) -> float:
        return self._clock[0]

    def perf_counter(self) -> float:
        return self._clock[0]


async def test_the_lag_is_exported_at_most_once_an_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(consumer_module, "time", FakeTime(clock))
    registry = CollectorRegistry()
    runner = lag_runner(registry)
    consumer = Assigned()

    def lag(partition: int) -> float | None:
        labels = {"group": "g", "topic": "t", "partition": str(partition)}
        return registry.get_sample_value("demandscope_consumer_lag", labels)

    await runner._export_lag(consumer)
    assert consumer.position_calls == 2
    assert lag(0) == 10
    consumer.position_at = 95
    clock[0] += LAG_EXPORT_INTERVAL_S / 2
    await runner._export_lag(consumer)
    assert consumer.position_calls == 2  # not again within the interval
    assert lag(1) == 10
    clock[0] += LAG_EXPORT_INTERVAL_S
    await runner._export_lag(consumer)
    assert consumer.position_calls == 4
    assert lag(0) == lag(1) == 5


class Revoking(Assigned):
    """A rebalance takes the other partition away while the first one's position is
    awaited; aiokafka asserts that a partition's highwater is asked of an assigned one."""

    def assignment(self) -> set[TopicPartition]:
        return set(self.partitions)

    def highwater(self, tp: TopicPartition) -> int:
        assert tp in self.partitions, "Partition is not assigned"
        return 100

    async def position(self, tp: TopicPartition) -> int:
        self.partitions = {tp}
        return await super().position(tp)


async def test_a_partition_revoked_while_the_lag_is_exported_is_skipped() -> None:
    registry = CollectorRegistry()
    runner = lag_runner(registry)
    consumer = Revoking()

    await runner._export_lag(consumer)

    lags = {
        partition: registry.get_sample_value(
            "demandscope_consumer_lag", {"group": "g", "topic": "t", "partition": partition}
        )
        for partition in ("0", "1")
    }
    kept = consumer.partitions.pop().partition
    assert lags == {str(kept): 10, str(1 - kept): None}


async def test_the_fetch_waits_as_the_options_say(monkeypatch: pytest.MonkeyPatch) -> None:
    """``fetch_min_bytes`` and ``fetch_max_wait_ms`` reach the consumer (a floor on the poll
    cycle, the classifier's)."""
    made: list[dict[str, object]] = []

    class Refused(Exception):
        pass

    class Consumer:
        def __init__(self, *topics: str, **options: object) -> None:
            made.append(options)

        def subscribe(self, topics: list[str], listener: object) -> None:
            pass

        async def start(self) -> None:
            raise Refused

        async def stop(self) -> None:
            pass

    monkeypatch.setattr(consumer_module, "AIOKafkaConsumer", Consumer)
    runner = ConsumerRunner(
        settings=KafkaSettings(),
        topics={},
        handler=None,  # type: ignore[arg-type]
        options=RunnerOptions(
            group_id="g", client_id="c", source="s", fetch_min_bytes=4096, fetch_max_wait_ms=7
        ),
        metrics=ConsumerMetrics(CollectorRegistry()),
        producer=object(),
    )
    with pytest.raises(Refused):
        await runner.run()
    assert made[0]["fetch_min_bytes"] == 4096
    assert made[0]["fetch_max_wait_ms"] == 7
