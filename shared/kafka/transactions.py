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

What fencing cannot mend: a transaction whose markers the broker never wrote. A broker whose
partitions have no leader (a single broker in its controlled shutdown, or any partition whose
only in-sync replica is restarting) answers ``EndTxn`` and then completes the transaction
without writing its commit or abort markers to those partitions: Kafka's
``TransactionMarkerChannelManager`` takes a partition without a leader for a deleted one
("Couldn't find leader endpoint ... likely deleted already and hence can be skipped"), and
``InitProducerId`` later finds nothing to abort. The transaction's records then stay open on
those partitions, and so do its offsets in the group's ``__consumer_offsets`` partition, until
the same producer id writes its next marker there, whose outcome they take. Our next
transaction of that id commits, so what was aborted (or what is then read and handled again)
lands twice, and offsets still pending keep the stable read below waiting for good. So
whoever opens a producer of an id that may have left such a transaction ends it first, as
aborted, over every partition it may have written to and the group's offsets
(``abort_left_open``): the records are handled again, once, from the offsets before it.
Once only if the broker skipped the markers of every partition of the transaction, as the
single broker's shutdown does (one metadata change takes every leader away at once). Had it
written some (a committed transaction's records marked, its offsets not), aborting the rest
hands that input over again and its output lands twice: not covered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.client import ConnectionGroup
from aiokafka.errors import (
    CoordinatorNotAvailableError,
    InvalidProducerEpoch,
    KafkaError,
    NotCoordinatorError,
    ProducerFenced,
    TransactionCoordinatorFenced,
)
from aiokafka.errors import for_code as kafka_error_for_code
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import (
    Boolean,
    CompactArray,
    CompactString,
    Int16,
    Int32,
    Int64,
    Schema,
    TaggedFields,
)
from aiokafka.structs import OffsetAndMetadata

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


@dataclass
class Failed:
    """A transaction that failed before its commit was asked for: the topics it wrote to and
    the offsets it carried."""

    topics: set[str] = field(default_factory=set)
    offsets: dict[TopicPartition, OffsetAndMetadata] = field(default_factory=dict)


@dataclass
class LeftOpen:
    """What the transactions of one consumer may have left open on the broker, kept across
    its runs (``ConsumerService`` hands the same one to each of its runners).

    ``written``: the topics its transactions write to (those it names, and every one a
    transaction of this process has written to): where a transaction whose markers were
    never written may have records. ``failed``: by transactional id, a transaction that
    failed before its commit was asked for, whose outcome is therefore an abort, and whose
    markers may be missing all the same: the next producer of that id ends it, over the
    topics it wrote to and its offsets (``abort_left_open``), before anything else.
    """

    written: set[str] = field(default_factory=set)
    failed: dict[str, Failed] = field(default_factory=dict)
    # The dead-letter topics of the topics consumed: written to by any transaction that sets
    # a record aside, so ended too, but only those that exist (a topic never created has
    # nothing open, and asking for its partitions would wait out the request timeout).
    dead_letters: set[str] = field(default_factory=set)

    def note_failed(
        self,
        transactional_id: str,
        topics: Iterable[str],
        offsets: Mapping[TopicPartition, OffsetAndMetadata],
    ) -> None:
        failed = self.failed.setdefault(transactional_id, Failed())
        failed.topics.update(topics)
        failed.offsets.update(offsets)
        self.written.update(topics)


async def abort_left_open(
    producer: AIOKafkaProducer,
    *,
    topics: Iterable[str],
    group_id: str,
    offsets: Mapping[TopicPartition, OffsetAndMetadata],
    if_there: Iterable[str] = (),
) -> None:
    """End, as aborted, what earlier producers of ``producer``'s transactional id left open
    (module docstring): one transaction of this producer (started, so the id's current
    epoch) over every partition of ``topics`` and, through ``offsets``, the group's offsets
    partition, aborted. A marker ends its producer id's open transaction on a partition
    whatever epoch began it; where nothing is open it is only a marker. ``offsets`` are
    never committed: any offsets of the group's partitions will do. ``if_there``: more
    topics, ended only if the cluster has them (dead-letter topics).
    """
    # aiokafka adds a partition to the transaction when send() first writes to it; here the
    # partition is added without a record (AddPartitionsToTxn), which is all a marker needs.
    # Should anything here fail (or the caller's deadline cancel it), the transaction is left
    # as it is, not aborted on the way out: an abort waits for a sender that may be dead (the
    # commit deadline's reason, consumer.py). The caller stops the producer, and the id's
    # next InitProducerId (or the transaction's timeout) aborts it.
    manager: Any = producer._txn_manager
    ending = set(topics)
    maybe = set(if_there) - ending
    if maybe:
        cluster = await producer.client.fetch_all_metadata()
        ending |= maybe & set(cluster.topics())
    await producer.begin_transaction()
    for topic in sorted(ending):
        for partition in sorted(await producer.partitions_for(topic)):
            manager.maybe_add_partition_to_txn(TopicPartition(topic, partition))
    if offsets:
        await producer.send_offsets_to_transaction(dict(offsets), group_id)
    await producer.abort_transaction()


class PartitionProducers:
    """The transactional producers of the partitions this instance is assigned."""

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        prefix: str,
        client_id: str,
        group_id: str,
        left_open: LeftOpen | None = None,
        open_timeout_s: float = 60.0,
    ) -> None:
        self._settings = settings
        self._prefix = prefix
        self._client_id = client_id
        self._group_id = group_id
        self.left_open = left_open if left_open is not None else LeftOpen()
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
            # Any earlier producer of this id may have left a transaction without markers
            # (module docstring): one whose failure this process noted (aborted, offsets
            # known), or one of another instance, or of this one before a restart, which
            # nothing here knows of (a failed transaction that wrote records but no offsets,
            # then the partition moved: our first commit would commit its records). So
            # every open ends, as aborted, what may be open on every topic known to be
            # written to: one more transaction per producer opened.
            failed = self.left_open.failed.get(transactional_id)
            topics = set(self.left_open.written)
            if failed is not None:
                topics |= failed.topics
            if topics or failed is not None or self.left_open.dead_letters:
                async with asyncio.timeout(self._open_timeout_s):
                    await abort_left_open(
                        producer,
                        topics=topics,
                        group_id=self._group_id,
                        offsets=failed.offsets if failed is not None else {},
                        if_there=self.left_open.dead_letters,
                    )
                self.left_open.failed.pop(transactional_id, None)
                log.log(
                    logging.INFO if failed is not None else logging.DEBUG,
                    "ended what %s may have left open, as aborted",
                    transactional_id,
                )
        except BaseException:
            await _stop(producer)
            raise
        return producer

    async def abort_left_open(self, partitions: Mapping[TopicPartition, int | None]) -> None:
        """End, as aborted, what earlier producers left open on these partitions' offsets
        (which stay pending after the fence) and on every topic of ``left_open.written``,
        through each partition's producer and the shared one. ``partitions`` give offsets
        to send (never committed); None is sent as 0."""
        offsets = {tp: OffsetAndMetadata(offset or 0, "") for tp, offset in partitions.items()}
        producers = {id(p): p for tp in offsets if (p := self._producers.get(tp)) is not None}
        if self._shared is not None:
            producers[id(self._shared)] = self._shared
        async with asyncio.timeout(self._open_timeout_s):
            for producer in producers.values():
                await abort_left_open(
                    producer,
                    topics=self.left_open.written,
                    group_id=self._group_id,
                    offsets=offsets,
                    if_there=self.left_open.dead_letters,
                )

    async def close(self, partitions: Iterable[TopicPartition] | None = None) -> None:
        """Close the producers of ``partitions`` (all of them, and the shared one, by
        default)."""
        if partitions is None:
            await self.close_shared()
        chosen = list(self._producers) if partitions is None else list(partitions)
        closing = [p for tp in chosen if (p := self._producers.pop(tp, None)) is not None]
        if closing:
            await asyncio.gather(*(_stop(p) for p in closing))


# OffsetFetch v7 (KIP-447's require_stable), which aiokafka 0.14 does not have (its newest is
# v3). Without it the group coordinator answers with the offsets committed so far and
# ignores a transaction's offsets that are still pending: a commit whose markers are not yet
# written, as after a broker crash right after EndTxn was answered. Read then, a partition's
# committed offset is the one from before that commit, and its records are handled (and
# published) a second time. With it, such a partition is answered UNSTABLE_OFFSET_COMMIT
# until the transaction has completed.
_UNSTABLE_OFFSET_COMMIT = 88


class _OffsetFetchResponseV7(Response):  # type: ignore[misc]
    API_KEY = 9
    API_VERSION = 7
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "topics",
            CompactArray(
                ("name", CompactString("utf-8")),
                (
                    "partitions",
                    CompactArray(
                        ("partition_index", Int32),
                        ("committed_offset", Int64),
                        ("committed_leader_epoch", Int32),
                        ("metadata", CompactString("utf-8")),
                        ("error_code", Int16),
                        ("tags", TaggedFields),
                    ),
                ),
                ("tags", TaggedFields),
            ),
        ),
        ("error_code", Int16),
        ("tags", TaggedFields),
    )


class _OffsetFetchRequestV7(RequestStruct):  # type: ignore[misc]
    FLEXIBLE_VERSION = True
    API_KEY = 9
    API_VERSION = 7
    RESPONSE_TYPE = _OffsetFetchResponseV7
    SCHEMA = Schema(
        ("group_id", CompactString("utf-8")),
        (
            "topics",
            CompactArray(
                ("name", CompactString("utf-8")),
                ("partition_indexes", CompactArray(Int32)),
                ("tags", TaggedFields),
            ),
        ),
        ("require_stable", Boolean),
        ("tags", TaggedFields),
    )


class _StableOffsetFetch(Request[_OffsetFetchRequestV7]):  # type: ignore[misc]
    API_KEY = 9

    def __init__(self, group_id: str, partitions: list[TopicPartition]) -> None:
        self._group_id = group_id
        self._partitions = partitions

    def build(self, request_struct_class: type[_OffsetFetchRequestV7]) -> _OffsetFetchRequestV7:
        by_topic: dict[str, list[int]] = {}
        for tp in sorted(self._partitions):
            by_topic.setdefault(tp.topic, []).append(tp.partition)
        topics: list[tuple[str, list[int], dict[int, bytes]]] = [
            (topic, partitions, {}) for topic, partitions in by_topic.items()
        ]
        return request_struct_class(self._group_id, topics, True, {})


async def stable_committed(
    consumer: AIOKafkaConsumer,
    group_id: str,
    partitions: Iterable[TopicPartition],
    *,
    timeout_s: float = 60.0,
    backoff_s: float = 0.1,
) -> dict[TopicPartition, int | None]:
    """The group's committed offset of each partition (None: never committed), read only once
    no transaction's offsets for it are pending (OffsetFetch with ``require_stable``).

    Raises ``OffsetsPending`` (a ``TimeoutError``) if they are not stable within
    ``timeout_s``, and the coordinator's error if it refuses otherwise.
    """
    wanted = sorted(set(partitions))
    if not wanted:
        return {}
    # The raw request goes through the consumer's own client, to its group coordinator.
    client: Any = consumer._client
    coordinator: Any = consumer._coordinator
    unstable: list[TopicPartition] = []
    try:
        async with asyncio.timeout(timeout_s):
            return await _read_stable(client, coordinator, group_id, wanted, unstable, backoff_s)
    except TimeoutError as error:
        raise OffsetsPending(unstable) from error


class OffsetsPending(TimeoutError):
    """Committed offsets still pending a transaction when the stable read gave up (none: the
    coordinator never answered)."""

    def __init__(self, partitions: Iterable[TopicPartition]) -> None:
        self.partitions = sorted(partitions)
        super().__init__(f"committed offsets pending a transaction: {self.partitions}")


async def _read_stable(
    client: Any,
    coordinator: Any,
    group_id: str,
    wanted: list[TopicPartition],
    unstable: list[TopicPartition],
    backoff_s: float,
) -> dict[TopicPartition, int | None]:
    """``stable_committed``'s loop, without its deadline; ``unstable`` holds the partitions
    the last answer said were pending."""
    logged = False
    while True:
        await coordinator.ensure_coordinator_known()
        node = coordinator.coordinator_id
        try:
            response = await client.send(
                node, _StableOffsetFetch(group_id, wanted), group=ConnectionGroup.COORDINATION
            )
        except KafkaError as error:
            if not error.retriable:
                raise
            coordinator.coordinator_dead()
            await asyncio.sleep(backoff_s)
            continue
        if response.error_code != 0:
            group_error = kafka_error_for_code(response.error_code)
            if not group_error.retriable:
                raise group_error()
            if group_error in (CoordinatorNotAvailableError, NotCoordinatorError):
                coordinator.coordinator_dead()
            await asyncio.sleep(backoff_s)
            continue
        offsets: dict[TopicPartition, int | None] = {}
        unstable.clear()
        for topic, answers, _ in response.topics:
            for partition, offset, _epoch, _meta, error_code, _ in answers:
                tp = TopicPartition(topic, partition)
                if error_code == _UNSTABLE_OFFSET_COMMIT:
                    unstable.append(tp)
                elif error_code != 0:
                    raise kafka_error_for_code(error_code)()
                else:
                    offsets[tp] = offset if offset >= 0 else None
        if not unstable:
            return {tp: offsets.get(tp) for tp in wanted}
        if not logged:  # once a read, not every 100 ms
            log.info("committed offsets of %s pending a transaction; reading again", unstable)
            logged = True
        await asyncio.sleep(backoff_s)


def raise_if_cancelling(what: str) -> None:
    """Called while handling a ``CancelledError`` out of stopping an aiokafka client: go on
    (raise) if this task is being cancelled; otherwise the cancellation is aiokafka's own (it
    cancels a task of its own and awaits it without catching its ``CancelledError``, see the
    consumer's ``_stop_consumer``): log it, and the caller ignores it."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise  # the CancelledError being handled
    log.warning("stopping %s raised a cancellation of aiokafka's own; ignored", what)


async def _stop(producer: AIOKafkaProducer) -> None:
    """Stop a producer, whatever it raises but a cancellation of this task
    (``raise_if_cancelling``)."""
    try:
        await asyncio.wait_for(producer.stop(), 10)
    except asyncio.CancelledError:
        raise_if_cancelling("a transactional producer")
    except Exception:
        log.debug("stopping a transactional producer failed", exc_info=True)


__all__ = [
    "Failed",
    "LeftOpen",
    "OffsetsPending",
    "PartitionProducers",
    "abort_left_open",
    "is_fenced",
    "raise_if_cancelling",
    "shared_transactional_id",
    "stable_committed",
    "transactional_id",
]
