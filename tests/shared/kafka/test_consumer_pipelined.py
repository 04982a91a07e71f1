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
from shared.kafka.admin import ensure_topics
from shared.kafka.codec import OutboundRecord
from shared.kafka.consumer import BatchResult, ConsumerRunner, Inbound, RunnerOptions
from shared.kafka.read_to_end import read_all
from shared.kafka.runtime_metrics import ConsumerMetrics
from shared.kafka.settings import KafkaSettings
from shared.topics import Topic, topic_name, topic_specs
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


# Whether a poll holds both partitions' records (the only way two tasks meet) depends on
# what aiokafka's first fetches return; a run whose polls each held one partition shows no
# overlap, so an independent handler gets up to this many fresh runs to show one.
ATTEMPTS = 3


@pytest.mark.parametrize("independent", [True, False], ids=["independent", "conflicting"])
async def test_a_commit_in_flight_overlaps_only_what_cannot_see_its_changes(
    kafka_settings: KafkaSettings, independent: bool
) -> None:
    overlapped = 0
    for attempt in range(ATTEMPTS if independent else 1):
        settings = kafka_settings
        if attempt:  # topics of its own, so each run reads and writes only its own records
            settings = kafka_settings.model_copy(
                update={"topic_prefix": f"t{uuid.uuid4().hex[:10]}."}
            )
            await ensure_topics(settings, topic_specs(settings))
        handler = await _run_once(settings, f"test-group-{uuid.uuid4().hex[:12]}", independent)
        overlapped = handler.seen_unapplied_of_other_tasks
        if not independent:
            assert overlapped == 0
        if overlapped:
            break
    if independent:
        assert overlapped > 0  # the commits were overlapped


async def _run_once(kafka_settings: KafkaSettings, group: str, independent: bool) -> Applier:
    """One run over its own topics: what must hold in every run, whatever the polls held."""
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
            group_id=group,
            client_id="test",
            source="test",
            max_batch=10,  # several batches per task and poll
            transactional=True,
        ),
        metrics=ConsumerMetrics(CollectorRegistry()),
        transactional_id_prefix=f"{group}-{uuid.uuid4().hex[:6]}",
    )
    task = asyncio.create_task(runner.run())
    try:
        await wait_until(
            lambda: committed_to_end(kafka_settings, group, [source]),
            timeout=120,
            what="every record committed",
        )
    finally:
        runner.stop()
        await asyncio.wait_for(task, 60)

    # A task's next batch always waits for its previous one (one producer, and its state).
    assert handler.seen_unapplied_of_own_task == 0
    assert handler.unapplied == []
    assert sorted(handler.applied) == sorted(ids)
    published = await read_all(kafka_settings, [output], timeout=60)
    counts = Counter((record.value or b"").decode() for record in published)
    assert counts == Counter(ids)  # each once
    return handler
