"""A transactional ``ConsumerRunner`` on the demands topic whose handler holds its first
batch at a gate, so that a test decides what the next poll finds (the pipelining tests of
shared/kafka's runner)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client import CollectorRegistry

from shared.events import DemandReceived
from shared.kafka.codec import OutboundRecord
from shared.kafka.consumer import BatchHandler, ConsumerRunner, Inbound, RunnerOptions
from shared.kafka.read_to_end import read_all
from shared.kafka.runtime_metrics import ConsumerMetrics
from shared.kafka.settings import KafkaSettings
from shared.topics import Topic, topic_name
from tests.support.kafka_io import committed_to_end
from tests.support.waiting import wait_until


class Gated:
    """A handler's first call waits at ``gate`` (the runner holds its assignment paused
    meanwhile); ``first_call`` says it has come."""

    def __init__(self, output: str) -> None:
        self.output = output
        self.gate = asyncio.Event()
        self.first_call = asyncio.Event()

    async def hold_first(self) -> None:
        if not self.first_call.is_set():
            self.first_call.set()
            await self.gate.wait()

    def echo(self, messages: Sequence[Inbound[Any]]) -> list[OutboundRecord]:
        """Each demand's id, to the output topic."""
        return [
            OutboundRecord(topic=self.output, key=m.key, value=m.event.id.encode(), headers=[])
            for m in messages
        ]


class GatedHandler(BatchHandler, Protocol):
    gate: asyncio.Event
    first_call: asyncio.Event


@dataclass(frozen=True)
class GatedRun:
    settings: KafkaSettings
    group: str
    source: str

    async def committed(self, what: str) -> None:
        await wait_until(
            lambda: committed_to_end(self.settings, self.group, [self.source]),
            timeout=120,
            what=what,
        )


def output_topic(settings: KafkaSettings) -> str:
    return topic_name(settings, Topic.DEMAND_CLASSIFIED)


@contextlib.asynccontextmanager
async def gated_runner(
    settings: KafkaSettings, handler: GatedHandler, *, max_batch: int
) -> AsyncIterator[GatedRun]:
    """The runner running, in a group of its own, until the block ends; the gate opened
    then whatever happened."""
    source = topic_name(settings, Topic.DEMAND_RECEIVED)
    group = f"test-group-{uuid.uuid4().hex[:12]}"
    runner = ConsumerRunner(
        settings=settings,
        topics={source: DemandReceived},
        handler=handler,
        options=RunnerOptions(
            group_id=group,
            client_id="test",
            source="test",
            max_batch=max_batch,
            transactional=True,
        ),
        metrics=ConsumerMetrics(CollectorRegistry()),
        transactional_id_prefix=f"{group}-{uuid.uuid4().hex[:6]}",
    )
    task = asyncio.create_task(runner.run())
    try:
        await asyncio.wait_for(handler.first_call.wait(), 60)
        yield GatedRun(settings=settings, group=group, source=source)
    finally:
        handler.gate.set()
        runner.stop()
        await asyncio.wait_for(task, 60)


async def published(settings: KafkaSettings) -> Counter[str]:
    """How often each id was published to the output topic."""
    records = await read_all(settings, [output_topic(settings)], timeout=60)
    return Counter((record.value or b"").decode() for record in records)
