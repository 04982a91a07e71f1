"""One transactional producer per assigned input partition: how a zombie is fenced.

A consumer that pauses (GC, SIGSTOP, a stalled VM) past its session timeout is dropped from
its group, and its partitions go to another instance. When it wakes up it still holds the
batch it was working on, and nothing in the group protocol stops it from committing that
batch: aiokafka 0.14 sends ``TxnOffsetCommit`` version 0 (transactional id, group id,
producer id and epoch only), so the group coordinator cannot check that the committer is
still a member of the current generation (KIP-447's group-metadata fencing is not
implemented). Its output and its stale offsets would both be committed: duplicates, and
offsets moved backwards.

So fencing rests on transactional ids, as Kafka Streams did before KIP-447: the id is
``<prefix>-<topic>-<partition>``, the same on every instance, and whoever is assigned an
input partition opens (``init_transactions``) the producer of that id before it handles
any record of it. That bumps the id's epoch, aborts whatever transaction the previous
holder left open, and makes the previous holder's next send, offset commit or commit fail
with ``ProducerFenced``. An instance keeps as many producers as it has assigned input
partitions, and closes them when the partitions are revoked.

An instance that holds every input partition may commit a whole poll in one transaction
(``RunnerOptions.one_transaction_per_poll``) through one more producer, of the id
``<prefix>-all-partitions``. Whoever takes over any partition opens that producer too (and
so fences it and aborts what it left open) before handling anything, so a zombie that held
every partition is fenced by the first instance to take over any of them, as a partition's
own producer would have fenced it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import InvalidProducerEpoch, ProducerFenced, TransactionCoordinatorFenced

from shared.kafka.producer import create_producer
from shared.kafka.settings import KafkaSettings

log = logging.getLogger(__name__)

_FENCED = (ProducerFenced, InvalidProducerEpoch, TransactionCoordinatorFenced)


def transactional_id(prefix: str, tp: TopicPartition) -> str:
    return f"{prefix}-{tp.topic}-{tp.partition}"


def shared_transactional_id(prefix: str) -> str:
    """The id of the producer that commits a poll of every partition in one transaction:
    no ``<topic>-<partition>`` ends in ``all-partitions``, so it never names a partition's."""
    return f"{prefix}-all-partitions"


def is_fenced(error: BaseException) -> bool:
    """Whether ``error`` (or what it was raised from) says another producer took our id.

    A fenced send fails the transaction; leaving ``transaction()`` then raises from the
    abort, with the fencing error as its context.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, _FENCED):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


class PartitionProducers:
    """The transactional producers of the partitions this instance is assigned."""

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        prefix: str,
        client_id: str,
        open_timeout_s: float = 60.0,
    ) -> None:
        self._settings = settings
        self._prefix = prefix
        self._client_id = client_id
        self._open_timeout_s = open_timeout_s
        self._producers: dict[TopicPartition, AIOKafkaProducer] = {}
        self._shared: AIOKafkaProducer | None = None

    def __len__(self) -> int:
        return len(self._producers)

    def get(self, tp: TopicPartition) -> AIOKafkaProducer | None:
        return self._producers.get(tp)

    @property
    def shared(self) -> AIOKafkaProducer | None:
        """The producer of ``shared_transactional_id``, if open."""
        return self._shared

    async def open_shared(self) -> None:
        """Start the shared producer afresh: this fences (and aborts what was left open by)
        whoever held it before. Whoever takes over any partition calls this, so a zombie
        that committed every partition at once through it is fenced as a partition's own
        producer would fence it."""
        await self.close_shared()
        self._shared = await self._started(shared_transactional_id(self._prefix))

    async def close_shared(self) -> None:
        shared, self._shared = self._shared, None
        if shared is not None:
            await _stop(shared)

    async def open(self, partitions: Iterable[TopicPartition]) -> None:
        """Start (and so fence any earlier holder of) the producer of each new partition."""
        new = sorted(set(partitions) - set(self._producers))
        if not new:
            return
        # Each producer is kept as soon as it has started, so that close() finds it even if
        # this is cancelled (the consumer stopping mid-rebalance) or a sibling fails.
        outcomes = await asyncio.gather(*(self._start(tp) for tp in new), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        log.info("opened %d transactional producers (%d in all)", len(new), len(self._producers))

    async def _start(self, tp: TopicPartition) -> None:
        self._producers[tp] = await self._started(transactional_id(self._prefix, tp))

    async def _started(self, transactional_id: str) -> AIOKafkaProducer:
        producer = create_producer(
            self._settings, client_id=self._client_id, transactional_id=transactional_id
        )
        try:
            # start() sends InitProducerId: the fencing of the previous holder happens here.
            await asyncio.wait_for(producer.start(), self._open_timeout_s)
        except BaseException:
            with contextlib.suppress(Exception):
                await producer.stop()
            raise
        return producer

    async def close(self, partitions: Iterable[TopicPartition] | None = None) -> None:
        """Close the producers of ``partitions`` (all of them, and the shared one, by
        default)."""
        if partitions is None:
            await self.close_shared()
        chosen = list(self._producers) if partitions is None else list(partitions)
        closing = [p for tp in chosen if (p := self._producers.pop(tp, None)) is not None]
        if closing:
            await asyncio.gather(*(_stop(p) for p in closing))


async def _stop(producer: AIOKafkaProducer) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(producer.stop(), 10)


__all__ = ["PartitionProducers", "is_fenced", "shared_transactional_id", "transactional_id"]
