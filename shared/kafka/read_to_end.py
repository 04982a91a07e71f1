"""Read topics from the beginning (or given offsets) to the end seen at the start, and stop.

The one bounded read of the project: the classifier's context restore, the metrics rebuild
and the tests all use it. No consumer group (partitions are assigned by hand), no commit.

Where a read ends: the end offsets are taken once, when the read starts. With
``read_committed`` they are the last stable offsets, and the last offset before one is often
a transaction's commit or abort marker, or records of an aborted transaction: none of them
is ever handed to the consumer. So "stop when the record at end - 1 has arrived" never
stops on a transactional topic. The condition that holds for every topic is that the
consumer's *position* (the offset it will fetch next, which moves past markers and aborted
records too) has reached the end offset.

    async with read_to_end(settings, ["demand.classified"], timeout=30) as reader:
        async for batch in reader:
            ...

    records = await read_all(settings, ["classifier.context"], timeout=30)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Iterable, Mapping
from types import TracebackType
from typing import Literal, TypeAlias

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from shared.kafka.settings import KafkaSettings

Record: TypeAlias = ConsumerRecord[bytes, bytes]
Source: TypeAlias = str | TopicPartition  # a whole topic, or one partition of it
IsolationLevel: TypeAlias = Literal["read_committed", "read_uncommitted"]
_POLL_S = 0.5


class ReadToEndTimeout(TimeoutError):
    """The read did not reach the end offsets before its deadline, or stopped advancing."""


class ReadToEnd:
    """An async context manager (it owns the consumer) and an iterator of record batches.

    Each batch is a non-empty list of records, in offset order within each partition, all
    below the end offsets taken at the start; the iteration ends when every partition's
    position has reached its end offset. Raises :class:`ReadToEndTimeout` when ``timeout``
    seconds have passed since entering (the caller's time between batches included) or when
    no partition's position has moved for ``idle_timeout`` seconds.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        sources: Iterable[Source],
        *,
        from_offsets: Mapping[TopicPartition, int] | None = None,
        timeout: float | None = 30.0,
        idle_timeout: float | None = None,
        isolation_level: IsolationLevel = "read_committed",
        max_records: int = 500,
        client_id: str = "demandscope-read-to-end",
    ) -> None:
        self._sources = list(sources)
        self._from = dict(from_offsets or {})
        self._timeout = timeout
        self._idle_timeout = idle_timeout
        self._max_records = max_records
        self._consumer = AIOKafkaConsumer(
            **settings.client_options(),
            client_id=client_id,
            group_id=None,
            enable_auto_commit=False,
            isolation_level=isolation_level,
            auto_offset_reset="earliest",
        )
        self._deadline = float("inf")
        self._pending: set[TopicPartition] = set()
        self.partitions: list[TopicPartition] = []
        self.start_offsets: dict[TopicPartition, int] = {}
        self.end_offsets: dict[TopicPartition, int] = {}
        self.positions: dict[TopicPartition, int] = {}

    @property
    def total(self) -> int:
        """Offsets between the start and the end: an upper bound of the records to read."""
        return sum(max(0, self.end_offsets[tp] - self.start_offsets[tp]) for tp in self.partitions)

    @property
    def offsets_read(self) -> int:
        """How far the read has come, in offsets (equals ``total`` at the end)."""
        return sum(
            max(0, min(self.positions[tp], self.end_offsets[tp]) - self.start_offsets[tp])
            for tp in self.partitions
        )

    async def __aenter__(self) -> ReadToEnd:
        if self._timeout is not None:
            self._deadline = time.monotonic() + self._timeout
        try:
            await self._bounded(self._consumer.start())
            await self._bounded(self._assign())
        except BaseException:
            await self._consumer.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self._consumer.stop()

    def __aiter__(self) -> AsyncIterator[list[Record]]:
        return self._batches()

    async def _assign(self) -> None:
        self.partitions = await self._resolve()
        if not self.partitions:
            return
        self._consumer.assign(self.partitions)
        firsts = await self._consumer.beginning_offsets(self.partitions)
        # With read_committed these are the last stable offsets (ListOffsets honours the
        # consumer's isolation level): nothing at or past them is readable yet.
        self.end_offsets = await self._consumer.end_offsets(self.partitions)
        for tp in self.partitions:
            start = max(self._from.get(tp, firsts[tp]), firsts[tp])
            self.start_offsets[tp] = start
            self.positions[tp] = start
            if start < self.end_offsets[tp]:
                self._consumer.seek(tp, start)
                self._pending.add(tp)
            else:
                self._consumer.pause(tp)

    async def _resolve(self) -> list[TopicPartition]:
        partitions = [s for s in self._sources if isinstance(s, TopicPartition)]
        topics = [s for s in self._sources if isinstance(s, str)]
        if topics:
            counts = await _partition_counts(self._consumer, topics)
            partitions += [TopicPartition(t, p) for t in topics for p in range(counts[t])]
        return sorted(set(partitions))

    async def _batches(self) -> AsyncIterator[list[Record]]:
        moved_at = time.monotonic()
        while self._pending:
            wait = min(_POLL_S, max(0.0, self._deadline - time.monotonic()))
            fetched = await self._consumer.getmany(
                *self._pending, timeout_ms=int(wait * 1000), max_records=self._max_records
            )
            batch = [
                record
                for tp, records in fetched.items()
                for record in records
                if record.offset < self.end_offsets[tp]  # later ones arrived after the start
            ]
            for tp in sorted(self._pending):
                position = await self._consumer.position(tp)
                if position != self.positions[tp]:
                    self.positions[tp] = position
                    moved_at = time.monotonic()
                # Not "the record at end - 1 arrived": markers and aborted records never do.
                if position >= self.end_offsets[tp]:
                    self._pending.discard(tp)
                    self._consumer.pause(tp)
            if batch:
                yield batch
            if self._pending:
                self._check_time(moved_at)

    def _check_time(self, moved_at: float) -> None:
        now = time.monotonic()
        if now >= self._deadline:
            raise ReadToEndTimeout(f"not at the end after {self._timeout}s: {self._behind()}")
        if self._idle_timeout is not None and now - moved_at >= self._idle_timeout:
            raise ReadToEndTimeout(
                f"no progress for {self._idle_timeout}s, not at the end: {self._behind()}"
            )

    def _behind(self) -> str:
        return ", ".join(
            f"{tp.topic}[{tp.partition}] at {self.positions[tp]} of {self.end_offsets[tp]}"
            for tp in sorted(self._pending)
        )

    async def _bounded(self, step: Awaitable[object]) -> None:
        remaining = None if self._timeout is None else self._deadline - time.monotonic()
        try:
            await asyncio.wait_for(step, remaining)
        except TimeoutError as error:
            raise ReadToEndTimeout(f"could not start reading within {self._timeout}s") from error


def read_to_end(
    settings: KafkaSettings,
    sources: Iterable[Source],
    *,
    from_offsets: Mapping[TopicPartition, int] | None = None,
    timeout: float | None = 30.0,
    idle_timeout: float | None = None,
    isolation_level: IsolationLevel = "read_committed",
    max_records: int = 500,
    client_id: str = "demandscope-read-to-end",
) -> ReadToEnd:
    """Every record of ``sources`` (topics or topic-partitions) from their first offset, or
    from ``from_offsets`` where given, up to the end offsets seen at the start.

    ``timeout``: a deadline for the whole read; ``idle_timeout``: the longest the read may
    make no progress (``None`` for either: no such limit).
    """
    return ReadToEnd(
        settings,
        sources,
        from_offsets=from_offsets,
        timeout=timeout,
        idle_timeout=idle_timeout,
        isolation_level=isolation_level,
        max_records=max_records,
        client_id=client_id,
    )


async def read_all(
    settings: KafkaSettings,
    sources: Iterable[Source],
    *,
    from_offsets: Mapping[TopicPartition, int] | None = None,
    timeout: float | None = 30.0,
    isolation_level: IsolationLevel = "read_committed",
) -> list[Record]:
    """:func:`read_to_end`, gathered into one list (for reads that fit in memory)."""
    records: list[Record] = []
    async with read_to_end(
        settings,
        sources,
        from_offsets=from_offsets,
        timeout=timeout,
        isolation_level=isolation_level,
    ) as reader:
        async for batch in reader:
            records += batch
    return records


async def partition_counts(settings: KafkaSettings, topics: Iterable[str]) -> dict[str, int]:
    """How many partitions each of ``topics`` has (0 for a topic that does not exist)."""
    consumer = AIOKafkaConsumer(**settings.client_options(), group_id=None)
    await consumer.start()
    try:
        return await _partition_counts(consumer, topics)
    finally:
        await consumer.stop()


async def _partition_counts(consumer: AIOKafkaConsumer, topics: Iterable[str]) -> dict[str, int]:
    # A consumer with no subscription has no topic metadata, and aiokafka's public topics()
    # fetches it but returns the names only: ask its client for the partitions.
    cluster = await consumer._client.fetch_all_metadata()
    return {topic: len(cluster.partitions_for_topic(topic) or ()) for topic in topics}
