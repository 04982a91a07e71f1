"""Transactional tasks in flight together: a task's records are handled while another task's
commit is in flight only when the earlier batch says they cannot see what it changes
(``BatchResult.conflicts_with``); otherwise, and within one task, a batch is handled only
once the batches before it have committed and applied their changes (``after_commit``)."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from shared.events import DemandReceived
from shared.kafka.codec import OutboundRecord
from shared.kafka.consumer import BatchResult, ConsumerRunner, Inbound, RunnerOptions
from shared.kafka.read_to_end import read_all
from shared.kafka.runtime_metrics import ConsumerMetrics
from shared.kafka.settings import KafkaSettings
from shared.topics import Topic, topic_name
from tests.support.factories import demand_received
from tests.support.kafka_io import committed_to_end, publish_events
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

DEMANDS = 200


class Applier:
    """Echoes each demand's id; its in-memory state (the ids applied) changes only in
    ``after_commit``. Notes, at every call, the batches handled but not applied yet."""

    def __init__(self, output: str, *, independent: bool) -> None:
        self._output = output
        self._independent = independent
        self.unapplied: list[frozenset[int]] = []  # the partitions of each such batch
        self.applied: list[str] = []
        self.seen_unapplied_of_other_tasks = 0
        self.seen_unapplied_of_own_task = 0

    async def __call__(self, messages: Sequence[Inbound[Any]]) -> BatchResult:
        mine = frozenset(m.partition for m in messages)
        for earlier in self.unapplied:
            if earlier & mine:
                self.seen_unapplied_of_own_task += 1
            else:
                self.seen_unapplied_of_other_tasks += 1
        self.unapplied.append(mine)
        ids = [m.event.id for m in messages]

        def apply() -> None:
            self.unapplied.remove(mine)
            self.applied += ids

        return BatchResult(
            outbound=[
                OutboundRecord(topic=self._output, key=m.key, value=m.event.id.encode(), headers=[])
                for m in messages
            ],
            after_commit=apply,
            conflicts_with=lambda later: not self._independent,
        )


@pytest.mark.parametrize("independent", [True, False], ids=["independent", "conflicting"])
async def test_a_commit_in_flight_overlaps_only_what_cannot_see_its_changes(
    kafka_settings: KafkaSettings, unique_group: str, independent: bool
) -> None:
    source = topic_name(kafka_settings, Topic.DEMAND_RECEIVED)
    output = topic_name(kafka_settings, Topic.DEMAND_CLASSIFIED)
    ids = [f"d{i}" for i in range(DEMANDS)]
    # Published before the runner starts: its polls find both partitions' records at once.
    await publish_events(
        kafka_settings,
        [demand_received(id=i, customer_ref=f"C-{n % 20}") for n, i in enumerate(ids)],
    )
    handler = Applier(output, independent=independent)
    runner = ConsumerRunner(
        settings=kafka_settings,
        topics={source: DemandReceived},
        handler=handler,
        options=RunnerOptions(
            group_id=unique_group,
            client_id="test",
            source="test",
            max_batch=10,  # several batches per task and poll
            transactional=True,
        ),
        metrics=ConsumerMetrics(CollectorRegistry()),
        transactional_id_prefix=f"{unique_group}-{uuid.uuid4().hex[:6]}",
    )
    task = asyncio.create_task(runner.run())
    try:
        await wait_until(
            lambda: committed_to_end(kafka_settings, unique_group, [source]),
            timeout=120,
            what="every record committed",
        )
    finally:
        runner.stop()
        await asyncio.wait_for(task, 60)

    # A task's next batch always waits for its previous one (one producer, and its state).
    assert handler.seen_unapplied_of_own_task == 0
    if independent:
        assert handler.seen_unapplied_of_other_tasks > 0  # the commits were overlapped
    else:
        assert handler.seen_unapplied_of_other_tasks == 0
    assert handler.unapplied == []
    assert sorted(handler.applied) == sorted(ids)
    published = await read_all(kafka_settings, [output], timeout=60)
    counts = Counter((record.value or b"").decode() for record in published)
    assert counts == Counter(ids)  # each once
