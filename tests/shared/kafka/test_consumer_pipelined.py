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
    ``after_commit``. Notes, at every call, the batches handled but not applied yet. Its
    first call waits at ``gate`` (the runner holds its assignment paused meanwhile), so the
    test decides what the next poll finds."""

    def __init__(self, output: str, *, independent: bool) -> None:
        self._output = output
        self._independent = independent
        self.gate = asyncio.Event()
        self.first_call = asyncio.Event()
        self.unapplied: list[frozenset[int]] = []  # the partitions of each such batch
        self.applied: list[str] = []
        self.seen_unapplied_of_other_tasks = 0
        self.seen_unapplied_of_own_task = 0

    async def __call__(self, messages: Sequence[Inbound[Any]]) -> BatchResult:
        if not self.first_call.is_set():
            self.first_call.set()
            await self.gate.wait()
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


MAX_BATCH = 10  # a poll takes up to a batch per task: 20 records over the two partitions
# Published while the first batch is held: fewer than a poll takes, over both partitions
# (20 customers), so the next poll holds both partitions' records (two tasks) for sure.
SECOND_WAVE = 2 * MAX_BATCH - 1
# Then many per partition: several batches per task and poll.
THIRD_WAVE = 180


@pytest.mark.parametrize("independent", [True, False], ids=["independent", "conflicting"])
async def test_a_commit_in_flight_overlaps_only_what_cannot_see_its_changes(
    kafka_settings: KafkaSettings, independent: bool
) -> None:
    source = topic_name(kafka_settings, Topic.DEMAND_RECEIVED)
    output = topic_name(kafka_settings, Topic.DEMAND_CLASSIFIED)
    group = f"test-group-{uuid.uuid4().hex[:12]}"
    waves = [
        [demand_received(id=f"d{n}", customer_ref=f"C-{n % 20}") for n in range(start, end)]
        for start, end in [
            (0, 1),
            (1, 1 + SECOND_WAVE),
            (1 + SECOND_WAVE, 1 + SECOND_WAVE + THIRD_WAVE),
        ]
    ]
    await publish_events(kafka_settings, waves[0])
    handler = Applier(output, independent=independent)
    runner = ConsumerRunner(
        settings=kafka_settings,
        topics={source: DemandReceived},
        handler=handler,
        options=RunnerOptions(
            group_id=group,
            client_id="test",
            source="test",
            max_batch=MAX_BATCH,
            transactional=True,
        ),
        metrics=ConsumerMetrics(CollectorRegistry()),
        transactional_id_prefix=f"{group}-{uuid.uuid4().hex[:6]}",
    )
    task = asyncio.create_task(runner.run())
    try:
        await asyncio.wait_for(handler.first_call.wait(), 60)
        # Nothing is fetched while the first batch is in hand: the next poll's fetch finds
        # the whole second wave, in both partitions, at once.
        await publish_events(kafka_settings, waves[1])
        handler.gate.set()
        await wait_until(
            lambda: committed_to_end(kafka_settings, group, [source]),
            timeout=120,
            what="the first two waves committed",
        )
        second_wave_overlaps = handler.seen_unapplied_of_other_tasks
        await publish_events(kafka_settings, waves[2])
        await wait_until(
            lambda: committed_to_end(kafka_settings, group, [source]),
            timeout=120,
            what="every record committed",
        )
    finally:
        handler.gate.set()
        runner.stop()
        await asyncio.wait_for(task, 60)

    if independent:
        assert second_wave_overlaps > 0  # the second task ran while the first committed
    else:
        assert handler.seen_unapplied_of_other_tasks == 0
    # A task's next batch always waits for its previous one (one producer, and its state).
    assert handler.seen_unapplied_of_own_task == 0
    assert handler.unapplied == []
    ids = [demand.id for wave in waves for demand in wave]
    assert sorted(handler.applied) == sorted(ids)
    published = await read_all(kafka_settings, [output], timeout=60)
    counts = Counter((record.value or b"").decode() for record in published)
    assert counts == Counter(ids)  # each once
