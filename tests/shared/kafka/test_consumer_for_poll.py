"""A handler that prepares a poll's batches together (``PollHandler.for_poll``): the runner
hands it all of a poll's records once, then each task's batch to the handler it returned,
and still commits each task on its own, each record once. A preparation that fails leaves
each batch to the handler itself."""

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
from shared.kafka.consumer import (
    BatchHandler,
    BatchResult,
    ConsumerRunner,
    Inbound,
    PollHandler,
    RunnerOptions,
)
from shared.kafka.read_to_end import read_all
from shared.kafka.runtime_metrics import ConsumerMetrics
from shared.kafka.settings import KafkaSettings
from shared.topics import Topic, topic_name
from tests.support.factories import demand_received
from tests.support.kafka_io import committed_to_end, publish_events
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

MAX_BATCH = 10
SECOND_WAVE = 2 * MAX_BATCH - 1  # fewer than a poll takes, over both partitions


class Preparing:
    """Echoes each demand's id. ``for_poll`` notes the poll's ids and returns a handler that
    notes which poll each batch it handles came from. Its first call waits at ``gate``, so
    the test decides what the next poll finds."""

    def __init__(self, output: str, *, fail_preparing: bool) -> None:
        self._output = output
        self._fail_preparing = fail_preparing
        self.gate = asyncio.Event()
        self.first_call = asyncio.Event()
        self.polls: list[frozenset[str]] = []  # the ids of each prepared poll
        self.prepared_batches: list[tuple[int, frozenset[str], frozenset[int]]] = []
        self.plain_batches: list[frozenset[str]] = []

    def _echo(self, messages: Sequence[Inbound[Any]]) -> BatchResult:
        return BatchResult(
            outbound=[
                OutboundRecord(topic=self._output, key=m.key, value=m.event.id.encode(), headers=[])
                for m in messages
            ]
        )

    async def __call__(self, messages: Sequence[Inbound[Any]]) -> BatchResult:
        if not self.first_call.is_set():
            self.first_call.set()
            await self.gate.wait()
        self.plain_batches.append(frozenset(m.event.id for m in messages))
        return self._echo(messages)

    async def for_poll(self, messages: Sequence[Inbound[Any]]) -> BatchHandler:
        self.polls.append(frozenset(m.event.id for m in messages))
        if self._fail_preparing:
            raise RuntimeError("preparing failed")
        index = len(self.polls) - 1

        async def handle(messages: Sequence[Inbound[Any]]) -> BatchResult:
            ids = frozenset(m.event.id for m in messages)
            self.prepared_batches.append((index, ids, frozenset(m.partition for m in messages)))
            return self._echo(messages)

        return handle


@pytest.mark.parametrize("fail_preparing", [False, True], ids=["prepared", "preparing-fails"])
async def test_a_polls_batches_are_prepared_together_and_committed_apart(
    kafka_settings: KafkaSettings, fail_preparing: bool
) -> None:
    source = topic_name(kafka_settings, Topic.DEMAND_RECEIVED)
    output = topic_name(kafka_settings, Topic.DEMAND_CLASSIFIED)
    group = f"test-group-{uuid.uuid4().hex[:12]}"
    first = [demand_received(id="d0", customer_ref="C-0")]
    second = [demand_received(id=f"d{n}", customer_ref=f"C-{n % 20}") for n in range(1, 20)]
    await publish_events(kafka_settings, first)
    handler = Preparing(output, fail_preparing=fail_preparing)
    assert isinstance(handler, PollHandler)
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
        # Nothing is fetched while the first batch is in hand: the next poll finds the whole
        # second wave, in both partitions (two tasks), at once.
        await publish_events(kafka_settings, second)
        handler.gate.set()
        await wait_until(
            lambda: committed_to_end(kafka_settings, group, [source]),
            timeout=120,
            what="every record committed",
        )
    finally:
        handler.gate.set()
        runner.stop()
        await asyncio.wait_for(task, 60)

    ids = {d.id for d in first + second}
    # The first poll held one batch: not prepared. The second held both tasks' batches.
    assert handler.plain_batches[0] == {"d0"}
    assert frozenset(d.id for d in second) in handler.polls
    if fail_preparing:
        assert handler.prepared_batches == []
        assert set().union(*handler.plain_batches) == ids
    else:
        assert handler.plain_batches == [{"d0"}]
        # Each batch came from the poll prepared for it; each poll's batches are all of it,
        # one task (partition) each.
        by_poll: dict[int, list[frozenset[str]]] = {}
        tasks: dict[int, set[int]] = {}
        for index, batch, partitions in handler.prepared_batches:
            assert batch <= handler.polls[index]
            assert len(partitions) == 1  # a batch is one task's (split at max_batch)
            by_poll.setdefault(index, []).append(batch)
            tasks.setdefault(index, set()).update(partitions)
        for index, batches in by_poll.items():
            assert frozenset().union(*batches) == handler.polls[index]
        second_wave = handler.polls.index(frozenset(d.id for d in second))
        assert tasks[second_wave] == {0, 1}
    published = await read_all(kafka_settings, [output], timeout=60)
    counts = Counter((record.value or b"").decode() for record in published)
    assert counts == Counter(ids)  # each once
