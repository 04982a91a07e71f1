"""The one consumer loop every service runs.

Guarantees, in the order they matter:
- no auto-commit: offsets are committed only after the handler has succeeded and its output
  has been acknowledged (or, in transactional mode, atomically with that output);
- a record that cannot be decoded, or that the handler rejects, goes to ``<topic>.dlq`` with
  the reason and its original coordinates in headers, and the loop carries on;
- a handler failure that may be transient (database down) is retried with backoff, from the
  same records, without committing; a record that keeps failing on its own is dead-lettered;
- a revoked partition is never committed by an instance that no longer owns it; in
  transactional mode not even by one that missed the rebalance (paused past its session
  timeout, a zombie): each input partition has its own transactional producer, opened by
  whoever is assigned the partition, which fences the previous holder (``transactions.py``);
- a record too large to handle (or to copy to the dead-letter topic whole) is dead-lettered
  with its value cut to ``DLQ_MAX_VALUE_BYTES`` and its size and digest in headers, so a
  dead letter always fits in a request and never stalls the partition;
- a commit that fails, or does not finish within ``commit_timeout_s`` (a producer whose
  sender died in a broker restart answers nothing), ends the run (``CommitFailed``): the
  supervisor starts afresh with
  new producers and the committed positions, which is the only way out of a transactional
  producer's fatal state, and the only thing a fenced instance may do;
- a transaction the broker completed without writing its markers (a broker whose partitions
  have no leader, in its shutdown, answers EndTxn and skips them) is ended as aborted by the
  next producer of its id before that producer's first transaction, so its records are never
  committed with that one's (``transactions.py``, ``LeftOpen``);
- ``stop()`` (SIGTERM) finishes the batch in hand, commits it and leaves the group cleanly.

In transactional mode a poll's tasks (one transaction each, on producers of their own) are
handled one after the other, and a task's commit (five round trips to the broker) may still
be in flight while the next task is handled, when the handler says the next task's records
cannot see what the first one changes (``BatchResult.conflicts_with``): a handler's
in-memory state still changes only once its own task has committed. A handler may do once
per poll, over all of its tasks' records, what does not depend on any commit (a model's
prediction: ``PollHandler``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata, TopicPartition

from shared.events import Event
from shared.kafka.codec import DecodeError, Headers, OutboundRecord, decode
from shared.kafka.producer import send_all
from shared.kafka.runtime_metrics import ConsumerMetrics
from shared.kafka.settings import KafkaSettings
from shared.kafka.transactions import (
    LeftOpen,
    OffsetsPending,
    PartitionProducers,
    is_fenced,
    raise_if_cancelling,
    stable_committed,
)
from shared.topics import dlq_name

log = logging.getLogger(__name__)

E = TypeVar("E", bound=Event)

# Kafka's default max.request.size and message.max.bytes are about 1 MiB: a dead letter keeps
# at most this much of the original value, so it always fits with its headers.
DLQ_MAX_VALUE_BYTES = 256 * 1024
DLQ_MAX_HEADER_BYTES = 64 * 1024
# The lag gauge is scraped every 15-30 s: exported at most this often, not after every poll
# (a position look-up per assigned partition, ~200 µs a loop at 24 partitions, and the loop
# comes round 30-50 times a second at 1,000 demands/s).
LAG_EXPORT_INTERVAL_S = 1.0
# After the fence, a transaction's offsets are written within milliseconds: offsets of an
# assigned partition still pending this long were left open by a transaction the broker
# completed without its markers (transactions.py), and are ended as aborted.
LEFT_OPEN_AFTER_S = 5.0


@dataclass(frozen=True)
class Inbound(Generic[E]):
    """A decoded record, with the coordinates needed to trace it back."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    event: E
    headers: Headers
    timestamp_ms: int


@dataclass(frozen=True)
class Rejection:
    """The handler's verdict that a record can never be processed, and why."""

    message: Inbound[Any]
    reason: str


@dataclass
class BatchResult:
    outbound: list[OutboundRecord] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    # Runs only once the batch is durably committed: in-memory state changes go here, so a
    # retried or aborted batch never applies them twice.
    after_commit: Callable[[], None] | None = None
    # Whether later records (another task's) may read or change what ``after_commit``
    # changes: if so, or if this is None, they are handled only once this batch has
    # committed; if not, they are handled while its commit is in flight. Transactional
    # mode only, and only for records of other tasks (a task's own batches commit in turn).
    conflicts_with: Callable[[Sequence[Inbound[Any]]], bool] | None = None

    def must_precede(self, later: Sequence[Inbound[Any]]) -> bool:
        """Whether ``later`` must wait for this batch's commit before being handled."""
        if self.after_commit is None:
            return False  # nothing in memory changes when this batch commits
        return self.conflicts_with is None or self.conflicts_with(later)


class BatchHandler(Protocol):
    async def __call__(self, messages: Sequence[Inbound[Any]]) -> BatchResult: ...


@runtime_checkable
class PollHandler(BatchHandler, Protocol):
    """A handler that can do once per poll what it would otherwise do per batch.

    In transactional mode a poll holds one batch per task (partition number, or partition),
    each committed on its own. A handler with a fixed cost per call (a model's prediction,
    a database trip) pays it once per poll if it does that work in ``for_poll`` over all of
    the poll's records; the runner then calls the handler it returns with each batch, as
    before, and each batch is committed and applied exactly as before. Only what is
    idempotent and independent of the batches' commits may be done there (a retried or
    re-polled batch is prepared again). Called only for polls of more than one batch.
    """

    async def for_poll(self, messages: Sequence[Inbound[Any]]) -> BatchHandler: ...


class PartitionListener(Protocol):
    async def on_assigned(self, partitions: set[TopicPartition]) -> None: ...

    async def on_revoked(self, partitions: set[TopicPartition]) -> None: ...


class CommitFailed(Exception):
    """The batch's output or offsets could not be committed: nothing of it counts, and this
    run of the consumer ends so that it restarts from the committed positions."""


class Fenced(CommitFailed):
    """Another instance has been assigned the partition and opened its producer: this
    instance missed a rebalance (it was paused or cut off) and must not commit."""


class RetryableError(Exception):
    """Raised by a handler for failures that are not the record's fault (a database outage):
    the batch is retried until it succeeds or the consumer stops, never dead-lettered."""


@dataclass(frozen=True)
class RunnerOptions:
    group_id: str
    client_id: str
    source: str  # the CloudEvents source of dead letters
    max_batch: int = 500
    poll_timeout_ms: int = 500
    max_attempts: int = 3  # per record, for unexpected errors, before it is dead-lettered
    transactional: bool = False
    # A commit (in transactional mode the whole transaction) that has not finished by then is
    # abandoned as failed (``CommitFailed``; the batch is read again by the next run). aiokafka
    # can leave it waiting for ever: its producer's sender task dies on some connection errors
    # during a broker restart, and nothing it waits for is then answered. 60 s is the broker's
    # own limit on a transaction (aiokafka's ``transaction_timeout_ms``).
    commit_timeout_s: float = 60.0
    from_beginning: bool = True
    isolation_level: str = "read_committed"
    # Larger values are dead-lettered unread: their output could not be published anyway.
    max_record_bytes: int = 900 * 1024
    # Range assignment gives partition p of every subscribed topic to one instance, so state
    # keyed like the records (per customer) sees all of that key's topics.
    co_partitioned: bool = False
    # Group membership: an instance silent this long is dropped and its partitions move.
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    # Static membership (KIP-345): a name of this instance, the same across its restarts and
    # unique in the group. A restarted instance rejoins as itself and gets its partitions
    # back at once; a new member would wait until the dead one's session timed out. The
    # price: an instance that stops does not leave, so its partitions move only after its
    # session timeout (unless it comes back first). None: a new member at every start.
    group_instance_id: str | None = None
    # Transactional: while this instance holds every partition of its topics (one instance,
    # the common case), commit a poll's batches in one transaction, through a producer
    # that whoever takes over any partition fences as well (``transactions.py``): five
    # round trips a poll instead of five per task (~2 ms of the client's CPU each time).
    # Batches that must see an earlier batch's changes (``must_precede``, or the same
    # task's next batch) still wait for its commit, which then ends the transaction so far.
    one_transaction_per_poll: bool = False
    # How long the broker may hold a fetch for ``fetch_min_bytes`` to arrive (aiokafka's
    # defaults: 1 byte, 500 ms, i.e. answered as soon as anything is there). A floor on the
    # poll cycle: the loop polls as soon as the previous poll has committed, so a cheap poll
    # means more polls, each with its fixed costs (a transaction, a prediction); holding
    # the fetch gathers more records per poll at the price of that wait in latency.
    fetch_min_bytes: int = 1
    fetch_max_wait_ms: int = 500
    # Transactional: the topics the handler's output goes to (dead letters aside). A
    # transaction that the broker completed without its markers is ended (as aborted) over
    # every partition of these and of any topic this process has written to; with none of
    # either known, offsets it left pending are waited for, never ended (transactions.py).
    output_topics: tuple[str, ...] = ()


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, runner: ConsumerRunner, consumer: AIOKafkaConsumer) -> None:
        self._runner = runner
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        # Wait for the batch in hand to commit: after this returns another instance owns them.
        async with self._runner.processing:
            self._runner.generation += 1
            try:
                await self._runner.give_up(set(revoked))
            except Exception as error:
                self._runner.listener_failed = error
                raise

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        # aiokafka may fetch records of the new partitions while this still runs: holding the
        # lock keeps them from being handled before their producers and state are set up.
        async with self._runner.processing:
            self._runner.generation += 1
            try:
                await self._runner.take_over(self._consumer, set(assigned))
            except Exception as error:
                # aiokafka only logs a listener's failure: the run loop raises it instead.
                self._runner.listener_failed = error
                raise
            finally:
                # Again at the end: a poll that returned while this ran may hold records
                # fetched from positions take_over has since moved (seek_to_committed after
                # the fence); the run loop drops them, and the next fetch starts from the
                # committed offsets.
                self._runner.generation += 1


class ConsumerRunner:
    def __init__(
        self,
        *,
        settings: KafkaSettings,
        topics: Mapping[str, type[Event]],
        handler: BatchHandler,
        options: RunnerOptions,
        metrics: ConsumerMetrics,
        producer: AIOKafkaProducer | None = None,
        transactional_id_prefix: str | None = None,
        partition_listener: PartitionListener | None = None,
        left_open: LeftOpen | None = None,
    ) -> None:
        if options.transactional and not transactional_id_prefix:
            raise ValueError("a transactional consumer needs a transactional_id_prefix")
        if not options.transactional and producer is None:
            raise ValueError("a consumer that is not transactional needs a producer")
        self._settings = settings
        self._topics = dict(topics)
        self._handler = handler
        self._producer = producer
        # Kept by the caller across runs (ConsumerService): what a failed run's transactions
        # may have left open is ended by the next run's producers.
        self._left_open = (
            left_open if left_open is not None else LeftOpen(written=set(options.output_topics))
        )
        if options.transactional:
            # Records set aside go to these in the same transaction: after a restart (a new
            # process) nothing of this one's commits says so, and output_topics leaves them out.
            self._left_open.dead_letters.update(dlq_name(topic) for topic in topics)
        self._partition_producers = (
            PartitionProducers(
                settings,
                prefix=transactional_id_prefix,
                client_id=options.client_id,
                group_id=options.group_id,
                left_open=self._left_open,
            )
            if options.transactional and transactional_id_prefix
            else None
        )
        self.options = options
        self.metrics = metrics
        self.partition_listener = partition_listener
        self.processing = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self.started = asyncio.Event()
        self.last_poll_monotonic: float | None = None
        # Set while a batch is being retried (e.g. its database is down): readiness says so.
        self.stalled_since: float | None = None
        # Counts rebalances: a batch polled before one is dropped (positions are reset).
        self.generation = 0
        self.listener_failed: Exception | None = None
        self._held: set[TopicPartition] = set()  # set up by take_over, not yet given up
        self._by_partition_number = False
        # Whether a poll is committed in one transaction (one_transaction_per_poll)
        self._holds_everything = False
        self._lag_exported_at: float | None = None

    def lag_labels(self, tp: TopicPartition) -> tuple[str, str, str]:
        return (self.options.group_id, tp.topic, str(tp.partition))

    def stop(self) -> None:
        self._stopping.set()

    @property
    def consumer(self) -> AIOKafkaConsumer | None:
        return self._consumer

    @property
    def commits_polls_together(self) -> bool:
        """Whether a poll is committed in one transaction (``one_transaction_per_poll``)."""
        return self._holds_everything

    @property
    def producers_open(self) -> int:
        """Transactional producers held: one per assigned input partition."""
        return len(self._partition_producers) if self._partition_producers is not None else 0

    async def take_over(self, consumer: AIOKafkaConsumer, assigned: set[TopicPartition]) -> None:
        """Called with the processing lock held, before any record of ``assigned`` is handled."""
        if self._partition_producers is not None:
            # First: this fences a previous holder and aborts what it left open, so the
            # listener's restore reads up to a last stable offset that no zombie holds back.
            await self._partition_producers.open(assigned)
            if assigned and self.options.one_transaction_per_poll:
                # A zombie may have committed these partitions through the shared producer.
                await self._partition_producers.open_shared()
            if assigned:
                # Positions fetched before the fence may predate a zombie's last commit,
                # which landed before it: read them again (what comes later is refused).
                # Only once no transaction's offsets are pending: a commit answered just
                # before a broker crash may have its markers written only after the broker
                # is back, and until then the plain read gives the offsets from before it.
                await self._seek_to_stable_committed(consumer, assigned)
            self._by_partition_number = self._co_partitioned_alike(consumer)
        self._held |= assigned
        self._holds_everything = (
            self.options.one_transaction_per_poll
            and self._partition_producers is not None
            and self._partition_producers.shared is not None
            and self._held == self._every_partition(consumer)
        )
        if self.partition_listener is not None:
            await self.partition_listener.on_assigned(set(assigned))

    async def _seek_to_stable_committed(
        self, consumer: AIOKafkaConsumer, partitions: set[TopicPartition]
    ) -> None:
        """Seek each partition to its committed offset once that is stable (none: left to
        the reset policy, as ``seek_to_committed`` does).

        Called after the fence, so offsets still pending were left by a transaction the
        broker completed without its markers: it is ended, as aborted, over its offsets and
        every topic this consumer writes to (``transactions.py``), and its records are
        handled again from the offsets before it. Not when no output topic is known: its
        records would then be committed by our next transaction, and handled twice."""
        group = self.options.group_id
        try:
            committed = await stable_committed(
                consumer, group, partitions, timeout_s=LEFT_OPEN_AFTER_S
            )
        except OffsetsPending as pending:
            producers = self._partition_producers
            if producers is None or not pending.partitions or not self._left_open.written:
                committed = await stable_committed(consumer, group, partitions)
            else:
                log.warning(
                    "offsets of %s still pending after the fence: a transaction completed "
                    "without its markers; ending it as aborted over %s",
                    pending.partitions,
                    sorted(self._left_open.written),
                )
                # Any offsets of the group's partitions will do (never committed): none is
                # fetched here, where a retriable error would be retried for good inside
                # the rebalance listener, the processing lock held.
                await producers.abort_left_open(dict.fromkeys(pending.partitions))
                committed = await stable_committed(consumer, group, partitions)
        for tp, offset in committed.items():
            if offset is not None:
                consumer.seek(tp, offset)

    def _co_partitioned_alike(self, consumer: AIOKafkaConsumer) -> bool:
        """Whether partition p of every input topic is one task (one transaction).

        Only when the topics have as many partitions each: then the range assignor gives
        partition p of all of them to one instance in every generation, and whoever takes
        any of them over has fenced the producer a zombie used for that task. With unequal
        counts one instance may get p of one topic and another p of the next, so each
        partition is a task of its own.
        """
        if not self.options.co_partitioned:
            return False
        counts = {len(consumer.partitions_for_topic(topic) or ()) for topic in self._topics}
        if len(counts) > 1:
            log.warning(
                "%s have different partition counts: one transaction per partition",
                sorted(self._topics),
            )
        return len(counts) == 1

    def _every_partition(self, consumer: AIOKafkaConsumer) -> set[TopicPartition]:
        return {
            TopicPartition(topic, partition)
            for topic in self._topics
            for partition in consumer.partitions_for_topic(topic) or ()
        }

    async def give_up(self, revoked: set[TopicPartition]) -> None:
        """Called with the processing lock held: the batch in hand has been committed."""
        self._held -= revoked
        for tp in revoked:
            self.metrics.lag.remove(*self.lag_labels(tp))
        if self._partition_producers is not None:
            if revoked:
                # Whoever takes them over opens (fences) the shared producer anyway.
                self._holds_everything = False
                await self._partition_producers.close_shared()
            await self._partition_producers.close(revoked)
        if self.partition_listener is not None:
            await self.partition_listener.on_revoked(set(revoked))

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(
            **self._settings.client_options(),
            group_id=self.options.group_id,
            client_id=self.options.client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest" if self.options.from_beginning else "latest",
            isolation_level=self.options.isolation_level,
            max_poll_records=self.options.max_batch,
            fetch_min_bytes=self.options.fetch_min_bytes,
            fetch_max_wait_ms=self.options.fetch_max_wait_ms,
            session_timeout_ms=self.options.session_timeout_ms,
            heartbeat_interval_ms=self.options.heartbeat_interval_ms,
            group_instance_id=self.options.group_instance_id,
            partition_assignment_strategy=(
                (RangePartitionAssignor,)
                if self.options.co_partitioned
                else (RoundRobinPartitionAssignor,)
            ),
        )
        consumer.subscribe(list(self._topics), listener=_Rebalance(self, consumer))
        try:
            await consumer.start()
            self._consumer = consumer
            self.started.set()
            while not self._stopping.is_set():
                batches, polled_in = await self._poll(consumer)
                self.last_poll_monotonic = time.monotonic()
                if self.listener_failed is not None:
                    raise CommitFailed("setting up assigned partitions failed") from (
                        self.listener_failed
                    )
                if batches:
                    # Nothing is fetched while a poll is handled. aiokafka's fetcher fetches
                    # again as soon as a poll takes its records, keeps what had arrived by
                    # then, and sends that broker no other fetch until the next poll takes
                    # it: each record waited a whole extra batch-and-commit cycle (bench
                    # stack: the newest record of a poll was 270 ms old, median). Paused,
                    # the next poll's fetch reads all that arrived meanwhile, one round
                    # trip later. Records still buffered (a poll cut at max_records) stay
                    # for the next poll.
                    consumer.pause(*consumer.assignment())
                    try:
                        async with self.processing:
                            if polled_in == self.generation:
                                await self._process(consumer, batches)
                            else:
                                await self._refetch(consumer, batches)
                    finally:
                        # A rebalance meanwhile leaves a new assignment, never paused.
                        consumer.resume(*consumer.assignment())
                await self._export_lag(consumer)
        finally:
            self._consumer = None
            try:
                await _stop_consumer(consumer)
            finally:
                # Also when the stop lets our own cancellation out.
                await self._release()

    async def _poll(
        self, consumer: AIOKafkaConsumer
    ) -> tuple[Mapping[TopicPartition, Sequence[Any]], int]:
        """The next poll's records and the generation they were polled in (a rebalance
        since then: ``run`` reads them again from the committed offsets, ``_refetch``). A
        subclass may hand back a poll it took ahead (the metrics runner's prefetch)."""
        batches = await consumer.getmany(
            timeout_ms=self.options.poll_timeout_ms, max_records=self._poll_size(consumer)
        )
        return batches, self.generation

    def _poll_size(self, consumer: AIOKafkaConsumer) -> int:
        """Records to poll at most. Transactional, each task (partition, or partition number)
        commits on its own: a poll of ``max_batch`` over three tasks made three transactions
        of a third of a batch each, so each task gets up to a batch of its own (split again
        in ``_process`` should one task take more)."""
        if self._partition_producers is None:
            return self.options.max_batch
        assigned = consumer.assignment()
        tasks = (
            len({tp.partition for tp in assigned}) if self._by_partition_number else len(assigned)
        )
        return self.options.max_batch * max(1, tasks)

    async def _refetch(
        self, consumer: AIOKafkaConsumer, batches: Mapping[TopicPartition, Sequence[Any]]
    ) -> None:
        """A rebalance ran while these records were polled: they may be another instance's
        now, or fetched from a position the rebalance has since moved. Nothing of them is
        handled; the partitions still ours go back to their committed offsets (nothing
        uncommitted is in hand between batches; a partition never committed goes back to the
        first record polled), so no record is skipped or read twice."""
        owned = consumer.assignment()
        polled = {tp: records for tp, records in batches.items() if tp in owned and records}
        if not polled:
            return
        if self._partition_producers is not None:
            committed = await stable_committed(consumer, self.options.group_id, polled)
        else:
            committed = {tp: await consumer.committed(tp) for tp in polled}
        # A poll taken ahead (the metrics runner) reaches here while its rebalance still
        # runs: aiokafka installs the new assignment before the assigned listener waits for
        # our lock, so a partition may have gone while the offsets were awaited (a seek on
        # it raises IllegalStateError, which ended the run). Its new owner reads it.
        owned = consumer.assignment()
        for tp, records in polled.items():
            if tp not in owned:
                continue
            offset = committed.get(tp)
            # Never committed: these records came from the reset position, so start there.
            consumer.seek(tp, offset if offset is not None else records[0].offset)

    async def _release(self) -> None:
        """A run that ends gives up what it holds: the next one sets it all up afresh (a
        fenced or failed run may have committed part of what its state remembers)."""
        async with self.processing:
            held, self._held = self._held, set()
            if held and self.partition_listener is not None:
                try:
                    await self.partition_listener.on_revoked(held)
                except Exception:
                    log.exception("releasing the state of %s failed", sorted(held))
            if self._partition_producers is not None:
                await self._partition_producers.close()

    async def _export_lag(self, consumer: AIOKafkaConsumer) -> None:
        now = time.monotonic()
        if self._lag_exported_at is not None and now - self._lag_exported_at < (
            LAG_EXPORT_INTERVAL_S
        ):
            return
        self._lag_exported_at = now
        for tp in list(consumer.assignment()):
            # A rebalance changes the assignment between its two listeners, without the
            # processing lock: a partition revoked while an earlier one's position was
            # awaited is skipped (aiokafka asserts on it, which ended the run).
            if tp not in consumer.assignment():
                continue
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            try:
                position = await asyncio.wait_for(consumer.position(tp), 1.0)
            except (TimeoutError, KafkaError, AssertionError):
                continue  # not fetched yet after an assignment: the next poll will tell
            held = self._first_unapplied(consumer, tp)
            if held is not None:
                position = min(position, held)
            self.metrics.lag.labels(*self.lag_labels(tp)).set(max(0, highwater - position))

    def _first_unapplied(self, consumer: AIOKafkaConsumer, tp: TopicPartition) -> int | None:
        """The first offset of records polled but held, not applied (a subclass's poll taken
        ahead: its getmany moved the position past them), so the lag counts them."""
        return None

    async def _process(
        self, consumer: AIOKafkaConsumer, batches: Mapping[TopicPartition, Sequence[Any]]
    ) -> None:
        # Drop records of partitions revoked while we polled: we no longer own them.
        owned = consumer.assignment()
        batches = {tp: records for tp, records in batches.items() if tp in owned}
        if not batches:
            return
        if self._partition_producers is None:
            assert self._producer is not None
            await self._process_task(consumer, batches, self._producer)
            return
        # One transaction per task, through a producer that only the owner of its partitions
        # holds. Co-partitioned topics form one task per partition number (the handler sees
        # a customer's demands and cases together, in order, as with one transaction);
        # otherwise each partition is a task. Tasks are handled one after the other: a
        # handler's in-memory state may span partitions and is only updated once a task
        # commits. So a task's records are handled while an earlier task's commit is still
        # in flight only if that batch says they cannot see what it changes
        # (``BatchResult.must_precede``); otherwise, and always for the next batch of the
        # same task (its producer has one transaction at a time), they wait for it. A commit
        # in flight that fails ends the run as before: what the later tasks committed
        # meanwhile did not depend on it.
        tasks: dict[object, dict[TopicPartition, Sequence[Any]]] = {}
        for tp, records in batches.items():
            key = tp.partition if self._by_partition_number else tp
            tasks.setdefault(key, {})[tp] = records
        work: list[tuple[AIOKafkaProducer, _Prepared]] = []
        for task in tasks.values():
            first = min(task, key=lambda tp: (tp.topic, tp.partition))
            producer = self._partition_producers.get(first)
            if producer is None:
                raise CommitFailed(f"no transactional producer for {first}")
            work += [
                (producer, self._prepare(chunk)) for chunk in _chunks(task, self.options.max_batch)
            ]
        handler = await self._handler_for_poll([batch for _, batch in work])
        shared = self._partition_producers.shared
        if self._holds_everything and shared is not None:
            await self._process_together(consumer, [batch for _, batch in work], handler, shared)
            return
        in_flight: list[_InFlight] = []
        try:
            for producer, batch in work:
                # A producer has one transaction at a time; and records that may see what a
                # batch in flight changes wait for it to commit and apply it.
                for earlier in list(in_flight):
                    if earlier.producer is producer or earlier.result.must_precede(batch.messages):
                        in_flight.remove(earlier)
                        await earlier.commit
                result = await self._handle_with_retries(batch.messages, handler)
                commit = asyncio.create_task(self._finish(consumer, batch, result, producer))
                in_flight.append(_InFlight(producer, result, commit))
            while in_flight:
                await in_flight.pop(0).commit
        except BaseException as error:
            # Nothing is left in flight when the run ends: a failed commit ends it (the
            # others, of other tasks, independent of it, finish as they would have); a
            # cancelled run cancels them, as it would have cancelled the one in hand.
            pending = [f.commit for f in in_flight]
            if isinstance(error, asyncio.CancelledError):
                for waiting in pending:
                    waiting.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            raise

    async def _process_together(
        self,
        consumer: AIOKafkaConsumer,
        batches: Sequence[_Prepared],
        handler: BatchHandler,
        producer: AIOKafkaProducer,
    ) -> None:
        """A poll's batches in one transaction (``one_transaction_per_poll``). A batch that
        must see what an earlier one changes (or that is the same task's next batch) is
        handled only once the batches so far have committed and applied their changes, as
        it would have waited for that batch's own commit."""
        pending: list[tuple[_Prepared, BatchResult]] = []
        for batch in batches:
            if any(
                not earlier.records.keys().isdisjoint(batch.records)
                or result.must_precede(batch.messages)
                for earlier, result in pending
            ):
                await self._finish_together(consumer, pending, producer)
                pending = []
            pending.append((batch, await self._handle_with_retries(batch.messages, handler)))
        if pending:
            await self._finish_together(consumer, pending, producer)

    async def _process_task(
        self,
        consumer: AIOKafkaConsumer,
        batches: Mapping[TopicPartition, Sequence[Any]],
        producer: AIOKafkaProducer,
    ) -> None:
        batch = self._prepare(batches)
        result = await self._handle_with_retries(batch.messages)
        await self._finish(consumer, batch, result, producer)

    def _prepare(self, batches: Mapping[TopicPartition, Sequence[Any]]) -> _Prepared:
        """The records decoded, those that cannot be handled set aside, the offsets to commit."""
        started = time.perf_counter()
        messages: list[Inbound[Any]] = []
        dead: list[tuple[Any, str]] = []
        for records in batches.values():
            for record in records:
                size = len(record.value or b"")
                if size > self.options.max_record_bytes:
                    limit = self.options.max_record_bytes
                    dead.append((record, f"too large: {size} bytes (limit {limit})"))
                    continue
                try:
                    event = decode(self._topics[record.topic], record.value)
                except DecodeError as error:
                    dead.append((record, f"undecodable: {error}"))
                    continue
                # Positional, in Inbound's field order: keywords cost a frozen dataclass's
                # __init__ ~0.5 µs more a record (1.5 -> 1.1 µs, measured). The order and
                # each field are pinned by tests/shared/kafka/test_inbound_fields.py.
                messages.append(
                    Inbound(
                        record.topic,
                        record.partition,
                        record.offset,
                        record.key,
                        event,
                        list(record.headers or ()),
                        record.timestamp,
                    )
                )
        offsets = {tp: records[-1].offset + 1 for tp, records in batches.items()}
        return _Prepared(batches, messages, dead, offsets, started)

    async def _finish(
        self,
        consumer: AIOKafkaConsumer,
        batch: _Prepared,
        result: BatchResult,
        producer: AIOKafkaProducer,
    ) -> None:
        """Commit the batch's output and offsets, then apply it (``after_commit``)."""
        await self._finish_together(consumer, [(batch, result)], producer)

    async def _finish_together(
        self,
        consumer: AIOKafkaConsumer,
        done: Sequence[tuple[_Prepared, BatchResult]],
        producer: AIOKafkaProducer,
    ) -> None:
        """Commit the batches' output and offsets in one transaction (or one commit), then
        apply each in turn (``after_commit``)."""
        records: list[OutboundRecord] = []
        offsets: dict[TopicPartition, int] = {}
        for batch, result in done:
            records += result.outbound
            records += [self._dead_letter_from_record(r, reason) for r, reason in batch.dead]
            records += [self._dead_letter(rej.message, rej.reason) for rej in result.rejected]
            offsets |= batch.offsets
        try:
            await self._within_deadline(self._commit(consumer, records, offsets, producer))
        except (KafkaError, AssertionError) as error:
            # aiokafka signals a transaction manager in a fatal state with AssertionError.
            self.metrics.retries.labels(self.options.group_id).inc()
            if is_fenced(error):
                self.metrics.fenced.labels(self.options.group_id).inc()
                log.warning(
                    "fenced: another instance has been assigned %s; this batch is not "
                    "committed and the consumer starts afresh",
                    sorted(f"{tp.topic}[{tp.partition}]" for tp in offsets),
                )
                raise Fenced(f"fenced ({error!r}); another instance owns the batch") from error
            raise CommitFailed(
                f"commit failed ({error!r}); the batch will be read again"
            ) from error
        self.stalled_since = None
        for batch, result in done:
            self._applied(batch, result)

    def _applied(self, batch: _Prepared, result: BatchResult) -> None:
        """A committed batch: its changes applied, counted and logged."""
        batches, dead = batch.records, batch.dead
        if result.after_commit is not None:
            result.after_commit()
        for tp, records in batches.items():
            self.metrics.consumed.labels(self.options.group_id, tp.topic).inc(len(records))
        for record, reason in dead:
            self.metrics.dead_lettered.labels(
                self.options.group_id, record.topic, "undecodable"
            ).inc()
            log.warning(
                "dead-lettered %s[%s]@%s: %s", record.topic, record.partition, record.offset, reason
            )
        for rej in result.rejected:
            self.metrics.dead_lettered.labels(
                self.options.group_id, rej.message.topic, "rejected"
            ).inc()
            log.warning(
                "dead-lettered %s[%s]@%s: %s",
                rej.message.topic,
                rej.message.partition,
                rej.message.offset,
                rej.reason,
            )
        self.metrics.batch_seconds.labels(self.options.group_id).observe(
            time.perf_counter() - batch.started
        )

    async def _handler_for_poll(self, batches: Sequence[_Prepared]) -> BatchHandler:
        """The handler for a poll's batches: prepared once for all of them (``PollHandler``)
        when there are several, else the handler itself. A preparation that fails only costs
        its saving: each batch is then handled (and its failure retried) on its own."""
        if not isinstance(self._handler, PollHandler):
            return self._handler
        if sum(1 for batch in batches if batch.messages) < 2:
            return self._handler
        try:
            return await self._handler.for_poll([m for b in batches for m in b.messages])
        except Exception:
            log.exception("preparing a poll failed; its batches are handled one by one")
            return self._handler

    async def _handle_with_retries(
        self, messages: list[Inbound[Any]], handler: BatchHandler | None = None
    ) -> BatchResult:
        if not messages:
            return BatchResult()
        handler = handler or self._handler
        delay = 0.2
        while True:
            try:
                return await handler(messages)
            except RetryableError as error:
                if self._stopping.is_set():
                    raise
                if self.stalled_since is None:
                    self.stalled_since = time.monotonic()
                self.metrics.retries.labels(self.options.group_id).inc()
                log.warning("batch failed (%s); retrying in %.1fs", error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
            except Exception:
                log.exception("batch of %d failed; isolating the failing records", len(messages))
                return await self._handle_one_by_one(messages, handler)

    async def _handle_one_by_one(
        self, messages: list[Inbound[Any]], handler: BatchHandler
    ) -> BatchResult:
        combined = BatchResult()
        callbacks: list[Callable[[], None]] = []
        for message in messages:
            for attempt in range(1, self.options.max_attempts + 1):
                try:
                    result = await handler([message])
                except RetryableError:
                    raise
                except Exception as error:
                    if attempt == self.options.max_attempts:
                        combined.rejected.append(
                            Rejection(message, f"handler failed {attempt} times: {error!r}")
                        )
                    else:
                        self.metrics.retries.labels(self.options.group_id).inc()
                        await asyncio.sleep(0.1 * attempt)
                    continue
                combined.outbound += result.outbound
                combined.rejected += result.rejected
                if result.after_commit is not None:
                    callbacks.append(result.after_commit)
                break
        if callbacks:

            def run_callbacks() -> None:
                for callback in callbacks:
                    callback()

            combined.after_commit = run_callbacks
        return combined

    async def _within_deadline(self, commit_coroutine: Coroutine[Any, Any, None]) -> None:
        """A commit in a task of its own, abandoned after ``commit_timeout_s``.

        Not ``asyncio.timeout``: a transaction cancelled inside aiokafka's context manager
        awaits ``abort_transaction``, which waits for an answer a dead sender never gives,
        so the block would not end. The abandoned task is cancelled (twice, to get it out of
        that abort too) and not awaited beyond a moment; the next run's producers fence its
        producer and the broker aborts its transaction."""
        commit = asyncio.create_task(commit_coroutine)
        try:
            done, _ = await asyncio.wait({commit}, timeout=self.options.commit_timeout_s)
        except asyncio.CancelledError:
            commit.cancel()  # a cancelled run cancels its commit, as before
            raise
        if commit in done:
            commit.result()
            return
        for _ in range(2):
            commit.cancel()
            await asyncio.wait({commit}, timeout=1.0)
            if commit.done():
                break
        commit.add_done_callback(_retrieve)
        self.metrics.retries.labels(self.options.group_id).inc()
        raise CommitFailed(
            f"commit did not finish within {self.options.commit_timeout_s:g} s (the broker or "
            "the producer's connection to it was lost); the batch will be read again"
        )

    async def _commit(
        self,
        consumer: AIOKafkaConsumer,
        records: list[OutboundRecord],
        offsets: Mapping[TopicPartition, int],
        producer: AIOKafkaProducer,
    ) -> None:
        commit = {tp: OffsetAndMetadata(offset, "") for tp, offset in offsets.items()}
        if self.options.transactional:
            written = {record.topic for record in records}
            self._left_open.written |= written
            async with producer.transaction():
                try:
                    await send_all(producer, records)
                    await producer.send_offsets_to_transaction(commit, self.options.group_id)
                except BaseException:
                    # Never committed: the context aborts it next (or the producer is lost
                    # and the broker does). Its markers may still go unwritten, and its
                    # records would then be committed by this id's next transaction: the
                    # next producer of the id ends it first (transactions.py).
                    transactional_id = producer._txn_manager.transactional_id
                    self._left_open.note_failed(transactional_id, written, commit)
                    raise
        else:
            # A plain commit carries the group generation: a member that missed a
            # rebalance is refused by the coordinator (CommitFailedError).
            await send_all(producer, records)
            await consumer.commit(commit)

    def _dead_letter(self, message: Inbound[Any], reason: str) -> OutboundRecord:
        return dead_letter_record(
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=message.key,
            value=message.event.model_dump_json().encode(),
            headers=message.headers,
            reason=reason,
            group_id=self.options.group_id,
        )

    def _dead_letter_from_record(self, record: Any, reason: str) -> OutboundRecord:
        return dead_letter_record(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value,
            headers=list(record.headers or []),
            reason=reason,
            group_id=self.options.group_id,
        )


async def _stop_consumer(consumer: AIOKafkaConsumer) -> None:
    """Stop the consumer, whatever it raises but our own cancellation.

    aiokafka's ``Fetcher.close()`` cancels its fetch tasks and awaits them without catching
    their ``CancelledError`` (one sleeping in its retry back-off, after a broker restart):
    let out of ``run()``, that stray cancellation ended the run as if the service were
    stopping, and the supervisor never started the consumer again (test_faults' broker
    restart: no consumer, no error logged). Only a cancellation of this task goes on."""
    try:
        await consumer.stop()
    except asyncio.CancelledError:
        raise_if_cancelling("the consumer")
        await _finish_closing(consumer)
    except Exception:
        log.debug("stopping the consumer failed", exc_info=True)


async def _finish_closing(consumer: AIOKafkaConsumer) -> None:
    """Finish what aiokafka's ``stop()`` left undone when a stray cancellation came out of it.

    ``stop()`` sets ``_closed`` first, so calling it again does nothing; the cancellation
    came out of ``Fetcher.close()`` (which awaits each fetch task it cancels, one at a time,
    and stops at the first that raises) before ``await self._client.close()``: the client's
    connections and its metadata-sync task, which runs for ever, were left behind, one more
    set on every broker restart the consumer recovered from. So: cancel the fetcher's tasks
    still running, wait a while for them (their errors are theirs; the fetch routine
    itself can swallow a cancellation while it awaits a fetch task), and close the client."""
    fetcher: Any = getattr(consumer, "_fetcher", None)
    if fetcher is not None:
        tasks = [t for t in (fetcher._fetch_task, *fetcher._pending_tasks) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            done, left = await asyncio.wait(tasks, timeout=5)
            for task in done:
                _retrieve(task)
            if left:
                log.warning("%d fetch tasks still running after the consumer stopped", len(left))
    client: Any = getattr(consumer, "_client", None)
    if client is not None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(10):
                await client.close()


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Read a finished task's outcome that nobody awaits (an abandoned commit, whose run has
    already failed for it; an aiokafka fetch task), so that asyncio does not report it as
    never retrieved."""
    if not task.cancelled():
        task.exception()


@dataclass(frozen=True)
class _Prepared:
    records: Mapping[TopicPartition, Sequence[Any]]
    messages: list[Inbound[Any]]
    dead: list[tuple[Any, str]]  # records set aside, and why
    offsets: dict[TopicPartition, int]
    started: float


@dataclass(frozen=True)
class _InFlight:
    """A batch handled whose commit (and then ``after_commit``) is under way."""

    producer: AIOKafkaProducer
    result: BatchResult
    commit: asyncio.Task[None]


def _chunks(
    task: Mapping[TopicPartition, Sequence[Any]], limit: int
) -> list[dict[TopicPartition, Sequence[Any]]]:
    """``task``'s records in batches of at most ``limit`` (or one record per partition, if
    it has more partitions than that), each partition's records in order."""
    if sum(len(records) for records in task.values()) <= limit:
        return [dict(task)]
    step = max(1, limit // len(task))
    longest = max(len(records) for records in task.values())
    return [
        {tp: records[start : start + step] for tp, records in task.items() if len(records) > start}
        for start in range(0, longest, step)
    ]


def dead_letter_record(
    *,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    headers: Headers,
    reason: str,
    group_id: str,
) -> OutboundRecord:
    """The original record with why and where it failed in ``dlq_*`` headers.

    The value is kept whole up to ``DLQ_MAX_VALUE_BYTES``; a larger one is cut, and the
    headers say so and give its size and SHA-256, so the dead letter always fits.
    """
    original = value or b""
    extra: Headers = []
    if len(original) > DLQ_MAX_VALUE_BYTES:
        extra += [
            ("dlq_value_truncated", b"true"),
            ("dlq_value_bytes", str(len(original)).encode()),
            ("dlq_value_sha256", hashlib.sha256(original).hexdigest().encode()),
        ]
        original = original[:DLQ_MAX_VALUE_BYTES]
    kept = list(headers)
    if sum(len(k) + len(v or b"") for k, v in kept) > DLQ_MAX_HEADER_BYTES:
        extra.append(("dlq_headers_dropped", str(len(kept)).encode()))
        kept = []
    extra += [
        ("dlq_reason", reason[:4000].encode()),
        ("dlq_original_topic", topic.encode()),
        ("dlq_original_partition", str(partition).encode()),
        ("dlq_original_offset", str(offset).encode()),
        ("dlq_consumer_group", group_id.encode()),
        ("dlq_failed_at", datetime.now(UTC).isoformat().encode()),
    ]
    if key is not None and len(key) > DLQ_MAX_HEADER_BYTES:
        key = key[:DLQ_MAX_HEADER_BYTES]
    return OutboundRecord(topic=dlq_name(topic), key=key, value=original, headers=kept + extra)


__all__ = [
    "BatchHandler",
    "BatchResult",
    "CommitFailed",
    "ConsumerRunner",
    "Fenced",
    "Inbound",
    "KafkaError",
    "PartitionListener",
    "PollHandler",
    "Rejection",
    "RetryableError",
    "RunnerOptions",
    "dead_letter_record",
]
