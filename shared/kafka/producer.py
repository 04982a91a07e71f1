"""Producers: idempotent with acks=all by default, transactional where asked."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import weakref
from collections import deque
from collections.abc import Iterable
from functools import partial
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2
from aiokafka.producer.message_accumulator import BatchBuilder

from shared.kafka.codec import OutboundRecord
from shared.kafka.settings import KafkaSettings

log = logging.getLogger(__name__)


# How long a partition's first record waits for others before its batch leaves: aiokafka's
# linger for send(), and the gathering's (below) for single records.
LINGER_MS = 2


def create_producer(
    settings: KafkaSettings, *, client_id: str, transactional_id: str | None = None
) -> AIOKafkaProducer:
    # aiokafka defaults to acks=1 without idempotence: a leader crash can lose an ack'd record.
    return AIOKafkaProducer(
        **settings.client_options(),
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        transactional_id=transactional_id,
        linger_ms=LINGER_MS,
        max_batch_size=256 * 1024,
        compression_type=None,
    )


# A partition's records of one call go as one aiokafka batch from this many on; fewer go
# through send(), which appends them to the partition's open batch so that concurrent small
# calls (intake's single requests) share one produce request. A batch of our own is closed
# and waits for the partition's previous batch to leave, so one record per batch there would
# be one produce request per call.
BATCH_FROM = 8

# One FIFO gate per producer and partition. aiokafka's send_batch waits for the partition's
# pending batch to leave and then checks again; whoever is scheduled first in between (a
# fresh send() or send_batch) takes the partition, so a waiting batch can lose every round,
# and its timeout shrinks by the whole time waited at each round (aiokafka 0.14's
# add_batch): four concurrent callers on three partitions timed out within seconds
# (measured). Batches go through the gate one at a time, so a batch waits for at most the
# batch in front of it; small calls go straight to send() unless a batch holds the gate, and
# then queue behind it rather than race it for the partition.
_gates: weakref.WeakKeyDictionary[AIOKafkaProducer, dict[tuple[str, int], asyncio.Lock]] = (
    weakref.WeakKeyDictionary()
)


@functools.lru_cache(maxsize=1 << 14)
def _key_hash(key: bytes) -> int:
    # aiokafka's murmur2 is pure Python (~2.5 µs a short key, 4% of a batch's samples), and
    # a customer's key recurs: the partitioner's hash, kept. ~175 bytes an entry besides the
    # key (measured), so about 3 MB when full.
    return int(murmur2(key)) & 0x7FFFFFFF


def partition_for(key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
    """aiokafka's DefaultPartitioner (what every producer here uses): murmur2 of the key
    over all partitions, a random available one for no key."""
    if key is None:
        return random.choice(available or all_partitions)
    return all_partitions[_key_hash(key) % len(all_partitions)]


class _Gathered:
    """Single records of concurrent callers to one partition, sent as one batch a round.

    The first record starts a drain task; until it runs, and while its batch waits for the
    partition (aiokafka keeps one pending batch a partition), later records gather behind
    it and leave as the next batch: one batch and one future for them all, not a send()
    coroutine and a future each. Each caller is answered when its record's batch is."""

    def __init__(self, producer: AIOKafkaProducer, where: tuple[str, int]) -> None:
        # Weakly: this lives in _gathered, keyed weakly by the producer; a strong reference
        # would keep a retired producer (and its entry) alive for good.
        self.producer = weakref.ref(producer)
        self.where = where
        self.records: list[OutboundRecord] = []
        self.answers: list[asyncio.Future[None]] = []
        self.draining: asyncio.Task[None] | None = None

    def add(self, record: OutboundRecord) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[None] = loop.create_future()
        self.records.append(record)
        self.answers.append(answer)
        if self.draining is None:
            self.draining = loop.create_task(self._drain())
        return answer

    async def _drain(self) -> None:
        try:
            while self.records:
                # The producer's linger, as send() lingers: over HTTP single requests come
                # spread out, and without it each round left as a produce request of its
                # own (the broker's CPU a request 65 -> 85 µs in bench intake, measured).
                await asyncio.sleep(LINGER_MS / 1000)
                records, self.records = self.records, []
                answers, self.answers = self.answers, []
                producer = self.producer()
                if producer is None:  # gone: nothing can send these
                    _answer_all(answers, _stopped())
                    continue
                try:
                    async with _gate(producer, self.where):
                        futures = await _put(producer, self.where, records, batched=True)
                except Exception as error:  # refused (a Kafka error, a timeout): theirs too
                    _answer_all(answers, error)
                    continue
                except BaseException:
                    _answer_all(answers, _stopped())
                    raise
                for future in futures[:-1]:
                    future.add_done_callback(partial(_answer_if_failed, answers))
                futures[-1].add_done_callback(partial(_answer_after, futures, answers))
        finally:
            self.draining = None
            if self.records:  # cancelled with records gathered: refused, not left waiting
                _answer_all(self.answers, _stopped())
                self.records, self.answers = [], []


def _answer_all(answers: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for answer in answers:
        if not answer.done():
            if error is None:
                answer.set_result(None)
            else:
                answer.set_exception(error)


def _answer_if_failed(answers: list[asyncio.Future[None]], future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        _answer_all(answers, future.exception())


def _answer_after(
    futures: list[asyncio.Future[Any]],
    answers: list[asyncio.Future[None]],
    last: asyncio.Future[Any],
) -> None:
    for future in futures:
        if not future.done():  # an earlier batch of the call still in flight: answer with it
            future.add_done_callback(partial(_answer_after, futures, answers))
            return
        error = _stopped() if future.cancelled() else future.exception()
        if error is not None:
            _answer_all(answers, error)
            return
    _answer_all(answers, None)


def _stopped() -> KafkaError:
    """What a gathered record's caller is told if its batch never left (the loop stopped)."""
    return KafkaError("the producer stopped before the batch was sent")


_gathered: weakref.WeakKeyDictionary[AIOKafkaProducer, dict[tuple[str, int], _Gathered]] = (
    weakref.WeakKeyDictionary()
)


def _gate(producer: AIOKafkaProducer, where: tuple[str, int]) -> asyncio.Lock:
    gates = _gates.get(producer)
    if gates is None:
        gates = _gates[producer] = {}
    gate = gates.get(where)
    if gate is None:
        gate = gates[where] = asyncio.Lock()
    return gate


async def send_gathered(producer: AIOKafkaProducer, records: Iterable[OutboundRecord]) -> None:
    """send_all for a producer outside transactions, its small calls' records gathered with
    other callers' into one batch a partition (``_Gathered``)."""
    records = list(records)
    if len(records) != 1:
        await send_all(producer, records)
        return
    (record,) = records
    where = (record.topic, partition_for(record.key, *await _partitions(producer, record.topic)))
    await _gathering(producer, where).add(record)


def gathered_now(producer: AIOKafkaProducer, record: OutboundRecord) -> asyncio.Future[None] | None:
    """``send_gathered`` of one record without waiting for anything: its answer, or None
    when its topic's partitions are not listed yet (then ``send_gathered``, which waits)."""
    known = _known_partitions(producer, record.topic)
    if known is None:
        return None
    return _gathering(producer, (record.topic, partition_for(record.key, *known))).add(record)


def _gathering(producer: AIOKafkaProducer, where: tuple[str, int]) -> _Gathered:
    gathered = _gathered.get(producer)
    if gathered is None:
        gathered = _gathered[producer] = {}
    group = gathered.get(where)
    if group is None:
        group = gathered[where] = _Gathered(producer, where)
    return group


async def send_all(producer: AIOKafkaProducer, records: Iterable[OutboundRecord]) -> None:
    """Send records and wait until the broker has acknowledged every one.

    Each record goes to the partition ``send()`` would choose for its key, in the order
    given. A partition's records are one ``create_batch()`` per ``max_batch_size`` submitted
    with ``send_batch()``: a future per batch, not a ``send()`` coroutine and a future per
    record (aiokafka's 14 µs a record in intake's profile; 6 this way). Idempotence and
    transactions hold for these batches as for ``send()``'s: the accumulator stamps the
    producer id and sequence numbers on any batch it drains, and adds the partition to the
    open transaction when it takes one.
    """
    groups: dict[tuple[str, int], list[OutboundRecord]] = {}
    partitions: dict[str, tuple[list[int], list[int]]] = {}
    for record in records:
        known = partitions.get(record.topic)
        if known is None:
            known = partitions[record.topic] = await _partitions(producer, record.topic)
        where = (record.topic, partition_for(record.key, *known))
        group = groups.get(where)
        if group is None:
            groups[where] = [record]
        else:
            group.append(record)
    futures: list[asyncio.Future[Any]] = []
    for where, group in groups.items():
        gate = _gate(producer, where)
        if len(group) < BATCH_FROM and not gate.locked():
            futures += await _put(producer, where, group)  # no batch waiting: no queue
            continue
        async with gate:
            futures += await _put(producer, where, group)
    if len(futures) == 1:
        await futures[0]  # a single request's record: gather's own future is 2-3 µs
    elif futures:
        await asyncio.gather(*futures)


# A topic's partitions as last listed, with the metadata they were listed from: aiokafka
# replaces a topic's partition map with a new dict on every metadata update, so the same
# dict is the same partitions. Listing them costs 2.1 µs (two sets, two lists, a coroutine;
# measured), a single request's send paid it every time.
_listed: weakref.WeakKeyDictionary[
    AIOKafkaProducer, dict[str, tuple[object, tuple[list[int], list[int]]]]
] = weakref.WeakKeyDictionary()


def _known_partitions(producer: AIOKafkaProducer, topic: str) -> tuple[list[int], list[int]] | None:
    """``_partitions`` as listed from the current metadata, or None (to be listed)."""
    listed = _listed.get(producer)
    if listed is None:
        return None
    known = listed.get(topic)
    current = producer.client.cluster._partitions.get(topic)  # replaced, never changed
    if known is not None and current is not None and known[0] is current:
        return known[1]
    return None


async def _partitions(producer: AIOKafkaProducer, topic: str) -> tuple[list[int], list[int]]:
    """All and available partitions as send() lists them, from the metadata it waits for."""
    known = _known_partitions(producer, topic)
    if known is not None:
        return known
    cluster = producer.client.cluster
    listed = _listed.get(producer)
    if listed is None:
        listed = _listed[producer] = {}
    if cluster.partitions_for_topic(topic) is None:
        await producer.partitions_for(topic)
    partitions = (
        list(cluster.partitions_for_topic(topic)),
        list(cluster.available_partitions_for_topic(topic)),
    )
    listed[topic] = (cluster._partitions.get(topic), partitions)
    return partitions


async def _put(
    producer: AIOKafkaProducer,
    where: tuple[str, int],
    group: list[OutboundRecord],
    *,
    batched: bool = False,
) -> list[asyncio.Future[Any]]:
    topic, partition = where
    if len(group) < BATCH_FROM and not batched:
        return [
            await producer.send(
                topic, value=r.value, key=r.key, partition=partition, headers=r.headers
            )
            for r in group
        ]
    futures: list[asyncio.Future[Any]] = []
    batch = producer.create_batch()
    for r in group:
        if batch.append(key=r.key, value=r.value, timestamp=None, headers=r.headers) is None:
            # Full (max_batch_size): submit it, and the next one starts with this record.
            futures.append(await _submit(producer, batch, where))
            batch = producer.create_batch()
            batch.append(key=r.key, value=r.value, timestamp=None, headers=r.headers)
    futures.append(await _submit(producer, batch, where))
    return futures


async def _submit(
    producer: AIOKafkaProducer, batch: BatchBuilder, where: tuple[str, int]
) -> asyncio.Future[Any]:
    # Closed, so no send() appends to it: it leaves with the sender's next round instead of
    # lingering, holding exactly this call's records.
    batch.close()
    future: asyncio.Future[Any] = await producer.send_batch(batch, where[0], partition=where[1])
    return future


class ManagedProducer:
    """An idempotent producer that is kept alive for the life of a service.

    ``maintain()`` is a background task (run it under the service's ``Supervisor``): it
    connects, retrying with back-off so a service can start before its broker, and replaces
    the producer whenever it is broken. A broker restart under traffic can leave an
    idempotent producer in a state it never leaves (``OutOfOrderSequenceNumber``: its
    sequence numbers no longer match what the broker kept; aiokafka issue #1017). librdkafka
    treats that as fatal and starts over with a new producer id; so do we: any Kafka error
    from a send, or ``max_timeouts`` sends in a row that time out, retire the producer and
    ``maintain()`` opens a fresh one. Until then callers get ``BrokerUnavailable`` (intake's
    503 with Retry-After), never a success that was not acknowledged.
    """

    def __init__(self, settings: KafkaSettings, *, client_id: str, max_timeouts: int = 3) -> None:
        self._settings = settings
        self._client_id = client_id
        self._max_timeouts = max_timeouts
        self._producer: AIOKafkaProducer | None = None
        self._broken = asyncio.Event()
        self._timeouts_in_a_row = 0
        self._deadlines = _Deadlines(settings.delivery_timeout_s)
        self.replacements = 0  # producers retired because they were broken

    @property
    def producer(self) -> AIOKafkaProducer | None:
        return self._producer

    async def maintain(self) -> None:
        """Connect, then replace the producer each time it breaks. Runs until cancelled."""
        while True:
            if self._producer is None:
                self._producer = await self._connect()
                self._timeouts_in_a_row = 0
                self._broken.clear()
                log.info(
                    "producer %s connected to %s", self._client_id, self._settings.bootstrap_servers
                )
            await self._broken.wait()
            retired, self._producer = self._producer, None
            self.replacements += 1
            log.warning("producer %s is broken; replacing it with a fresh one", self._client_id)
            if retired is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(retired.stop(), self._settings.delivery_timeout_s)

    async def _connect(self) -> AIOKafkaProducer:
        delay = 0.5
        while True:
            candidate = create_producer(self._settings, client_id=self._client_id)
            try:
                await candidate.start()
            except asyncio.CancelledError:
                # Stopped while still connecting: close what was half opened.
                with contextlib.suppress(Exception):
                    await candidate.stop()
                raise
            except (KafkaError, OSError) as error:
                log.warning("broker not reachable yet (%r); retrying in %.1fs", error, delay)
                with contextlib.suppress(Exception):
                    await candidate.stop()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            return candidate

    async def send_and_wait(self, records: Iterable[OutboundRecord]) -> None:
        """Publish and wait for acks=all. Raises BrokerUnavailable if that cannot happen in time."""
        producer = self._producer
        if producer is None or self._broken.is_set():
            raise BrokerUnavailable("not connected to the Kafka broker")
        records = list(records)
        # One record whose partition is known (a single request's, after the first): its
        # answer is watched by the producer's one deadline timer (_Deadlines), which fails
        # it with TimeoutError at its own deadline, as the timeout scope below would.
        # A scope per call costs a timer set and cancelled each time (~3% of an intake
        # request's instructions, callgrind).
        answer = gathered_now(producer, records[0]) if len(records) == 1 else None
        try:
            if answer is not None:
                self._deadlines.watch(answer)
                await answer
            else:
                # A timeout scope, not wait_for: on Python 3.11 wait_for wraps every send in
                # a task of its own (10% of an intake request's CPU, profiled).
                async with asyncio.timeout(self._settings.delivery_timeout_s):
                    await send_gathered(producer, records)
        except TimeoutError as error:
            self._timeouts_in_a_row += 1
            if self._timeouts_in_a_row >= self._max_timeouts:
                self._retire(producer, f"{self._timeouts_in_a_row} sends in a row timed out")
            raise BrokerUnavailable(f"broker did not acknowledge in time: {error!r}") from error
        except KafkaError as error:
            self._retire(producer, repr(error))
            raise BrokerUnavailable(f"broker did not acknowledge: {error!r}") from error
        self._timeouts_in_a_row = 0

    def _retire(self, producer: AIOKafkaProducer, reason: str) -> None:
        if producer is self._producer and not self._broken.is_set():
            log.warning("retiring producer %s: %s", self._client_id, reason)
            self._broken.set()

    async def is_ready(self) -> bool:
        """Connected, not broken, and the broker answers a metadata request."""
        producer = self._producer
        if producer is None or self._broken.is_set():
            return False
        try:
            await asyncio.wait_for(producer.client.fetch_all_metadata(), 2.0)
        except (TimeoutError, KafkaError, OSError):
            return False
        return True

    async def close(self) -> None:
        """Flush what is in flight and close (after ``maintain`` has been stopped)."""
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), self._settings.delivery_timeout_s * 2)


class _Deadlines:
    """Answers that must come within ``timeout_s`` of being watched, each failed with
    TimeoutError at its own deadline (watch time + timeout_s) if not answered by then.

    One timer, at the earliest deadline still open: the timeout is the same for every
    answer, so deadlines come in the order answers are watched, and a FIFO holds them.
    The timer is set again when it fires, never early (a deadline not yet reached sets it
    again); answered entries leave the front as new ones are watched. An answer a caller
    stopped waiting for (cancelled) is done, and left as it is.

    The rule that keeps it correct: every unanswered entry always has a timer due at or
    before its own deadline. While any entry is queued a timer is set, due at or before
    the front's deadline (watch() may pop done entries from the front, leaving it earlier),
    and deadlines never decrease along the queue (one loop's monotonic clock, and
    timeout_s not changed after the first watch), so it is due no later than any of them.
    _expire pops only done or expired entries and sets the timer for the first entry it
    stops at. A done entry (answered or cancelled) only needs passing over, wherever it
    is: its caller was answered or stopped waiting, so nothing may be set on it.

    The one difference from the asyncio.timeout scope it replaces: an expired answer gets
    TimeoutError set on it instead of being cancelled by the scope. The caller sees a
    TimeoutError (so BrokerUnavailable) either way, and either way the record may still be
    sent: the gathered batch is not withdrawn, only its answer is no longer awaited."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._watched: deque[tuple[float, asyncio.Future[None]]] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def watch(self, answer: asyncio.Future[None]) -> None:
        loop = answer.get_loop()
        # One loop at a time (assumed, not checked): the producer (aiokafka's) is bound to
        # the loop it started on, so answers from a new loop mean the old one is done with
        # it (in tests, one loop after another). Its entries are dropped, not failed:
        # nothing on a stopped loop resumes to read them, and its timer would never fire.
        if loop is not self._loop:
            if self._timer is not None:
                self._timer.cancel()
            self._watched.clear()
            self._timer, self._loop = None, loop
        watched = self._watched
        while watched and watched[0][1].done():
            watched.popleft()
        watched.append((loop.time() + self.timeout_s, answer))
        if self._timer is None:
            self._timer = loop.call_at(watched[0][0], self._expire)

    def __len__(self) -> int:
        return len(self._watched)

    def _expire(self) -> None:
        self._timer = None
        loop, watched = self._loop, self._watched
        assert loop is not None
        now = loop.time()
        while watched:
            deadline, answer = watched[0]
            if not answer.done():
                if deadline > now:
                    self._timer = loop.call_at(deadline, self._expire)
                    return
                answer.set_exception(TimeoutError())
            watched.popleft()


class BrokerUnavailable(RuntimeError):
    """The broker could not acknowledge in time: the caller must not report success."""
