"""How a transactional consumer cuts a task's records into transactions."""

from __future__ import annotations

from aiokafka.structs import TopicPartition

from shared.kafka.consumer import _chunks

DEMANDS, CASES = TopicPartition("demands", 0), TopicPartition("cases", 0)


def test_a_task_within_the_limit_is_one_transaction() -> None:
    task = {DEMANDS: [1, 2, 3], CASES: [10]}

    assert _chunks(task, 4) == [task]


def test_a_larger_task_is_cut_into_batches_within_the_limit_keeping_each_partitions_order() -> None:
    task = {DEMANDS: list(range(7)), CASES: [10, 11]}

    chunks = _chunks(task, 4)

    assert all(sum(len(records) for records in chunk.values()) <= 4 for chunk in chunks)
    assert [r for chunk in chunks for r in chunk.get(DEMANDS, [])] == list(range(7))
    assert [r for chunk in chunks for r in chunk.get(CASES, [])] == [10, 11]
