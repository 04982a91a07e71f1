"""send_all's partition lists, kept between calls: listed again after every metadata update
that aiokafka makes (a topic grown to more partitions, a leader lost), never stale."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from aiokafka.cluster import ClusterMetadata
from aiokafka.protocol.metadata import MetadataResponse_v0

from shared.kafka.producer import _partitions

TOPIC = "t"


def _metadata(leaders: list[int]) -> Any:
    """A metadata response of one broker and TOPIC's partitions, each led by ``leaders[p]``
    (-1: no leader, so not available)."""
    partitions = [(0, p, leader, [0], [0]) for p, leader in enumerate(leaders)]
    return MetadataResponse_v0([(0, "localhost", 9092)], [(0, TOPIC, partitions)])


class _Producer:
    """What _partitions reads of a producer: its client's cluster metadata."""

    def __init__(self, cluster: ClusterMetadata) -> None:
        self.client = SimpleNamespace(cluster=cluster)

    async def partitions_for(self, topic: str) -> set[int]:
        raise AssertionError("not reached: the topic is in the metadata")


def _producer(cluster: ClusterMetadata) -> Any:
    return _Producer(cluster)


async def test_partitions_follow_every_metadata_update() -> None:
    cluster = ClusterMetadata()
    cluster.update_metadata(_metadata([0, 0, 0]))
    producer = _producer(cluster)
    assert await _partitions(producer, TOPIC) == ([0, 1, 2], [0, 1, 2])
    cluster.update_metadata(_metadata([0, 0, 0, 0, 0]))  # the topic grew
    assert await _partitions(producer, TOPIC) == ([0, 1, 2, 3, 4], [0, 1, 2, 3, 4])
    cluster.update_metadata(_metadata([0, -1, 0, 0, 0]))  # partition 1 lost its leader
    assert await _partitions(producer, TOPIC) == ([0, 1, 2, 3, 4], [0, 2, 3, 4])
    cluster.update_metadata(_metadata([0, 0, 0, 0, 0]))
    assert await _partitions(producer, TOPIC) == ([0, 1, 2, 3, 4], [0, 1, 2, 3, 4])


async def test_partitions_are_listed_once_per_metadata() -> None:
    cluster = ClusterMetadata()
    cluster.update_metadata(_metadata([0, 0, 0]))
    producer = _producer(cluster)
    first = await _partitions(producer, TOPIC)
    assert await _partitions(producer, TOPIC) is first  # kept, not listed again
    cluster.update_metadata(_metadata([0, 0, 0]))  # the same partitions, new metadata
    assert await _partitions(producer, TOPIC) is not first
