"""``_refetch`` while a rebalance still installs its assignment (a poll taken ahead, the
metrics runner's prefetch, reaches it then): a partition revoked while its committed offset
was awaited is not sought (aiokafka raises IllegalStateError for it, which ended the run)."""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka.errors import IllegalStateError
from aiokafka.structs import TopicPartition
from prometheus_client import CollectorRegistry

from shared.kafka.consumer import ConsumerRunner, RunnerOptions
from shared.kafka.runtime_metrics import ConsumerMetrics
from shared.kafka.settings import KafkaSettings

T0, T1 = TopicPartition("t", 0), TopicPartition("t", 1)


@dataclass
class Record:
    offset: int


class Revoking:
    """Two partitions owned; the rebalance's new assignment (only ``T0``) is installed while
    the first committed offset is awaited. ``seek`` raises as aiokafka's does on a partition
    not assigned."""

    def __init__(self) -> None:
        self.partitions = {T0, T1}
        self.sought: dict[TopicPartition, int] = {}

    def assignment(self) -> set[TopicPartition]:
        return set(self.partitions)

    async def committed(self, tp: TopicPartition) -> int | None:
        self.partitions = {T0}
        return {T0: 40, T1: 70}[tp]

    def seek(self, tp: TopicPartition, offset: int) -> None:
        if tp not in self.partitions:
            raise IllegalStateError(f"No current assignment for partition {tp}")
        self.sought[tp] = offset


async def test_a_partition_revoked_while_its_committed_offset_is_awaited_is_not_sought() -> None:
    runner = ConsumerRunner(
        settings=KafkaSettings(),
        topics={},
        handler=None,  # type: ignore[arg-type]
        options=RunnerOptions(group_id="g", client_id="c", source="s"),
        metrics=ConsumerMetrics(CollectorRegistry()),
        producer=object(),
    )
    consumer = Revoking()

    await runner._refetch(
        consumer,
        {T0: [Record(45), Record(46)], T1: [Record(75)]},
    )

    assert consumer.sought == {T0: 40}  # the partition kept, back to its committed offset
