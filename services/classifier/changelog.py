"""The context changelog: a compacted topic keyed by customer, written in each batch's
transaction and read back when partitions are assigned.

Alignment: ``demand.received``, ``case.events`` and ``classifier.context`` are all keyed by
``customer_ref`` and written with the default (murmur2) partitioner, so with equal partition
counts a customer lives in partition *p* of all three; the consumer uses the range assignor
so partition *p* of both input topics goes to one instance. If the counts differ the
restorer reads the whole changelog and keeps the customers whose demand partition it owns.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner
from pydantic import ValidationError

from services.classifier.context import (
    STATE_JSON,
    ContextStore,
    CustomerState,
    is_empty,
    prune,
    state_json,
)
from shared.kafka.codec import OutboundRecord
from shared.kafka.read_to_end import ReadToEndTimeout, partition_counts, read_to_end
from shared.kafka.settings import KafkaSettings

log = logging.getLogger(__name__)
_RESTORE_ATTEMPTS = 3
_RESTORE_IDLE_S = 30.0  # a restore that stops advancing this long fails (and is retried)


def state_record(topic: str, customer_ref: str, state: CustomerState) -> OutboundRecord:
    return OutboundRecord(
        topic=topic,
        key=customer_ref.encode(),
        value=state_json(state),
        headers=[],
    )


def parse_state(value: bytes | None) -> CustomerState | None:
    if not value:
        return None
    try:
        return STATE_JSON.validate_json(value)
    except ValidationError:
        return None  # a record we cannot read is context lost for one customer, not a crash


def partition_for(key: bytes, partitions: int) -> int:
    """The partition the default producer partitioner picks for ``key``."""
    chosen: int = DefaultPartitioner()(key, list(range(partitions)), list(range(partitions)))
    return chosen


class ContextRestorer:
    """PartitionListener: rebuild the owned customers' context from the changelog."""

    def __init__(
        self,
        *,
        settings: KafkaSettings,
        store: ContextStore,
        changelog_topic: str,
        keyed_topics: set[str],
    ) -> None:
        self._settings = settings
        self._store = store
        self._topic = changelog_topic
        self._keyed_topics = keyed_topics
        self._owned: set[int] = set()
        self.restored_customers = 0

    async def on_revoked(self, partitions: set[TopicPartition]) -> None:
        lost = {tp.partition for tp in partitions if tp.topic in self._keyed_topics}
        self._store.drop_partitions(lost)
        self._owned -= lost

    async def on_assigned(self, partitions: set[TopicPartition]) -> None:
        owned = {tp.partition for tp in partitions if tp.topic in self._keyed_topics}
        self._store.drop_partitions(self._owned - owned)
        new = owned - self._owned
        self._owned = owned
        if not new:
            return
        # The runner handles no record of these partitions until this returns.
        for attempt in range(1, _RESTORE_ATTEMPTS + 1):
            try:
                self.restored_customers = await self._restore(new)
                break
            except (KafkaError, ReadToEndTimeout):
                if attempt == _RESTORE_ATTEMPTS:
                    raise
                log.warning("restoring the context failed; retrying", exc_info=True)
                await asyncio.sleep(attempt)

    async def _restore(self, owned: set[int]) -> int:
        counts = await partition_counts(self._settings, [self._topic, *self._keyed_topics])
        changelog_partitions = counts[self._topic]
        input_count = max((counts[t] for t in self._keyed_topics), default=0)
        aligned = input_count == changelog_partitions
        if not aligned:
            log.warning(
                "%s has %d partitions but the input topics %s: reading it all",
                self._topic,
                changelog_partitions,
                input_count,
            )
        read = owned if aligned else set(range(changelog_partitions))
        states = await _latest_states(
            [TopicPartition(self._topic, p) for p in read], self._settings
        )
        now = datetime.now(UTC)
        count = 0
        for key, (state, partition) in states.items():
            if not aligned:
                partition = partition_for(key.encode(), input_count)
                if partition not in owned:
                    continue
            prune(state, now=now, window=self._store.window, max_demands=self._store.max_demands)
            if not is_empty(state):
                self._store.put(key, partition, state)
                count += 1
        log.info("restored the context of %d customers for partitions %s", count, sorted(owned))
        return count


async def _latest_states(
    partitions: list[TopicPartition], settings: KafkaSettings
) -> dict[str, tuple[CustomerState, int]]:
    """The latest state per customer in ``partitions``, read up to the last stable offset."""
    states: dict[str, tuple[CustomerState, int]] = {}
    if not partitions:
        return states
    # With read_committed the end offsets are the last stable offsets: open transactions of
    # a fenced producer have been aborted by our own producer's start (same transactional id).
    async with read_to_end(
        settings,
        partitions,
        timeout=None,
        idle_timeout=_RESTORE_IDLE_S,
        client_id="classifier-context-restore",
    ) as reader:
        async for batch in reader:
            for record in batch:
                if record.key is None:
                    continue
                state = parse_state(record.value)
                key = record.key.decode()
                if state is None:
                    states.pop(key, None)
                else:
                    states[key] = (state, record.partition)
    return states
