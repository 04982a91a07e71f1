"""Live ingestion's decoding on the second core: a backlog's records decoded, and made ready
to apply, in a worker process while this one writes the batch before.

Why a process: a batch's database work releases the GIL only in short pieces (sqlite3's
steps, ~3 µs each), so a thread decoding beside it made it wait for the GIL at every piece
and bought nothing (docs/performance.md, round thirteen). What depends only on a batch's
records (decoding, why_unstorable, the rows to insert, the audit's inputs: ingest.
prepare_live) is about a quarter of a live event's CPU, and needs nothing of the database.

How: when a poll brings more than one batch (a backlog), the runner (``OffloadingRunner``)
splits it into batches of ``max_batch`` and sends every batch's raw values to the worker at
once; it then applies them in order, each in its own transaction with its offsets committed
after it, exactly as before, while the worker prepares the next. A poll of one batch or
less (a consumer near the head, where a batch's latency counts) is decoded here, as before.
A backlog polled while the worker is still starting (a service restarted behind one) waits
for it, up to ``START_WAIT_S``. While a backlog poll's last batch is written, the next poll
is taken (what aiokafka has fetched, no wait) and all its batches, the first too, sent to
the worker (``_take_ahead``); the run loop gets it from ``_poll`` with the generation it was
taken in, so a rebalance since drops it and its partitions go back to the committed
offsets (``ConsumerRunner._refetch``), and a stop or a failed run drops it uncommitted.
What crosses: the values' bytes in, plain tuples out (ingest.PreparedLive).

Exactly-once is the runner's, unchanged: the batches' rows and offsets commit in order, one
transaction each; what the worker returns is a pure function of the records. An undecodable
record is dead-lettered with its reason, an unstorable one is refused with it (the worker
says which and why; the runner and the handler route them as before). A rebalance waits for
the batch in hand, not for the poll (the rest, uncommitted, is read again), as a stop does.
A worker that dies, does not answer in time (ANSWER_TIMEOUT_S), is not up by its start-up's
deadline, or answers other than its request (each request is numbered, and its answer must
cover its values exactly) is killed, logged once and left: its batches and all later ones
are decoded here. A batch the worker fails on is answered "not prepared" (decoded here).

The worker is ``python -P -c`` importing this module from the service's own sys.path (not
its working directory's code), a child on pipes (stdin: requests, stdout: answers), started
with the service and stopped with it (it ignores SIGINT and SIGTERM: a signal to the whole
process group does not end it before its service; it ends on end of file). Not
multiprocessing's pool:
a pool's worker keeps its own copy of the queue's write end, so it does not see its parent
die (SIGKILL) and would outlive it; this one reads end-of-file on stdin and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import pickle
import time
import weakref
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition
from prometheus_client import Counter

from services.metrics.handler import DemandCounts, PreparedMessages, Undecoded, demand_counts
from services.metrics.ingest import PreparedLive, by_kind, prepare_live
from shared.events import Event
from shared.kafka.codec import DecodeError, decode
from shared.kafka.consumer import (
    BatchHandler,
    BatchResult,
    ConsumerRunner,
    Inbound,
    _Prepared,
    dead_letter_record,
)
from shared.service import pipe_worker

log = logging.getLogger(__name__)

# Batches of a poll: a backlog is polled as this many batches, so that the worker prepares
# the next ones while this process writes one. The first batch's decoding is not overlapped.
BATCHES_A_POLL = 4
_READY = "ready"  # the worker's first answer (with its module's path), after its imports
# The worker must be up this long after start() (its imports: ~0.6 s of CPU), or it is
# killed and its batches are decoded here; a backlog polled meanwhile waits for it.
START_WAIT_S = 5.0
# A batch's answer awaited this long at most (a worker stopped, starved or stuck never
# answers and stays alive): then the worker is killed and the batch decoded here. A batch
# takes the worker ~15-20 ms; the lock it is awaited under also holds up a rebalance.
ANSWER_TIMEOUT_S = 5.0


@dataclass
class Decoded:
    """The worker's answer for one batch's values."""

    seq: int  # the request's number, echoed: an answer is matched to its own request
    undecodable: list[tuple[int, str]]  # (position among the values, why)
    # None: the batch holds labels or recorded changes, applied here from its records.
    prepared: PreparedLive | None
    decoded: list[int]  # positions of the values decoded, in order (prepared.refused's index)
    counts: DemandCounts | None  # the applied demands' counts (handler.demand_counts)
    # The worker's CPU time in decode_values so far, and the values it took (the bench).
    cpu_s: float = 0.0
    values: int = 0


def decode_values(
    topics: Mapping[str, type[Event]],
    dialect: str,
    batch: tuple[list[str], list[bytes]],
    seq: int = 0,
) -> Decoded:
    """What the runner's _prepare and apply_events compute from the records alone."""
    names, values = batch
    events: list[Event] = []
    decoded: list[int] = []
    undecodable: list[tuple[int, str]] = []
    for i, (topic, value) in enumerate(zip(names, values, strict=True)):
        try:
            events.append(decode(topics[topic], value))
        except DecodeError as error:
            undecodable.append((i, f"undecodable: {error}"))
            continue
        decoded.append(i)
    try:
        prepared = prepare_live(events, dialect)
    except Exception:  # a defect: apply_events meets it in the service, which isolates it
        log.exception("preparing a batch failed; it is decoded and applied in the service")
        prepared = None
    counts = None
    if prepared is not None:
        refused = {i for i, _ in prepared.refused}
        applied = [e for i, e in enumerate(events) if i not in refused] if refused else events
        counts = demand_counts(by_kind(applied)[0])
    return Decoded(seq, undecodable, prepared, decoded, counts)


def _serve() -> None:
    """The worker: the topics and the dialect first, then a batch's values at a time."""
    requests, answers = pipe_worker.worker_pipes()
    first = pipe_worker.read_frame(requests)
    if first is None:
        return
    topics, dialect = pickle.loads(first)
    gc.freeze()  # the imports: out of the collector's generations, as the service does
    pipe_worker.write_frame(answers, pickle.dumps((_READY, __file__), protocol=5))
    cpu_s, values = 0.0, 0
    while (frame := pipe_worker.read_frame(requests)) is not None:
        started = time.process_time()
        seq, names, batch_values = pickle.loads(frame)
        try:
            decoded = decode_values(topics, dialect, (names, batch_values), seq)
        except Exception:  # a defect (or a topic it does not know): the service decodes it
            log.exception("decoding a batch failed; it is decoded in the service")
            decoded = Decoded(seq, [], None, [], None)
        values += len(batch_values)
        # This answer's pickling is counted in the next answer's figure.
        decoded.cpu_s, decoded.values = cpu_s + time.process_time() - started, values
        answer = pickle.dumps(decoded, protocol=5)
        cpu_s += time.process_time() - started
        pipe_worker.write_frame(answers, answer)


class WorkerGone(Exception):
    """The worker died or answered nonsense: its batches are decoded in the service."""


class DecodeWorker:
    """The worker process of one service: started with it (``start``), stopped with it
    (``close``). Requests are numbered and answered in order; nothing is sent before
    ``start``. Anything unexpected (no answer in time, an answer that is not its request's,
    positions that do not cover the batch) ends the worker: logged once, and its batches and
    all later ones are decoded in the service."""

    def __init__(
        self,
        topics: Mapping[str, type[Event]],
        dialect: str,
        *,
        answer_timeout_s: float = ANSWER_TIMEOUT_S,
        start_wait_s: float = START_WAIT_S,
    ) -> None:
        self._topics = dict(topics)
        self._dialect = dialect
        self._answer_timeout_s = answer_timeout_s
        self._start_wait_s = start_wait_s
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._overdue: asyncio.TimerHandle | None = None
        # (request number, values sent, its answer to come), in the order sent.
        self._waiting: deque[tuple[int, int, asyncio.Future[Decoded]]] = deque()
        self._seq = 0
        self._gone = False
        self._ready = False  # the worker has imported what it runs, and said so
        self._settled = asyncio.Event()  # ready, or gone
        self.module_file: str | None = None  # the worker's live_decode, as it said
        # What the worker last said of its CPU time decoding, and the values decoded.
        self.cpu_s = 0.0
        self.values = 0
        _WORKERS.add(self)

    @property
    def usable(self) -> bool:
        """Up and answering (it has said so, after its imports: ~0.6 s of CPU)."""
        return self._ready and self._process is not None and not self._gone

    @property
    def starting(self) -> bool:
        return not self._ready and self._process is not None and not self._gone

    def _command(self) -> list[str]:
        # The service's own code, never what the worker's working directory holds.
        return pipe_worker.command(__name__)

    async def start(self) -> None:
        """Start the worker without waiting for it; one that cannot even be started (no
        interpreter, no memory, no process slots) is logged and left: the service decodes
        every batch itself, as after the worker's death."""
        try:
            self._process = await pipe_worker.spawn(self._command())
        except OSError as error:
            self._give_up(WorkerGone(f"the decoding worker could not be started: {error!r}"))
            return
        self._write((self._topics, self._dialect))
        self._reader = asyncio.create_task(self._read(self._process), name="live-decode-reader")
        # The start-up's deadline, once: a worker stuck in its imports is ended, not waited
        # for again at every backlog poll.
        self._overdue = asyncio.get_running_loop().call_later(
            self._start_wait_s, self._start_overdue
        )

    def _start_overdue(self) -> None:
        if self.starting:
            self._give_up(WorkerGone(f"the decoding worker not up in {self._start_wait_s} s"))

    def submit(self, names: list[str], values: list[bytes]) -> asyncio.Future[Decoded]:
        """The values' Decoded, once the worker has answered the requests before."""
        answer: asyncio.Future[Decoded] = asyncio.get_running_loop().create_future()
        if not self.usable:
            answer.set_exception(WorkerGone("the decoding worker is not running"))
            answer.exception()  # retrieved: see _fail
            return answer
        self._seq += 1
        try:
            self._write((self._seq, names, values))
        except Exception as error:  # the pipe is closed: the worker has gone
            self._give_up(WorkerGone(repr(error)))
            answer.set_exception(WorkerGone("the decoding worker is not running"))
            answer.exception()
            return answer
        self._waiting.append((self._seq, len(values), answer))  # only once it is sent
        return answer

    async def answer(self, answer: asyncio.Future[Decoded]) -> Decoded:
        """``answer``'s Decoded, awaited at most ``answer_timeout_s``: a worker that does not
        answer by then is killed (WorkerGone)."""
        try:
            return await asyncio.wait_for(asyncio.shield(answer), self._answer_timeout_s)
        except TimeoutError:
            self._give_up(WorkerGone(f"no answer in {self._answer_timeout_s} s"))
            raise WorkerGone("no answer") from None

    def _write(self, message: Any) -> None:
        assert self._process is not None
        pipe_worker.send(self._process, message)

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        # The process is passed, not read from self: a close right after the start (before
        # this task first runs) has already let go of it.
        assert process.stdout is not None
        stdout = process.stdout
        try:
            said = await pipe_worker.receive(stdout)
            if not (isinstance(said, tuple) and len(said) == 2 and said[0] == _READY):
                raise WorkerGone("the decoding worker did not start")
            self.module_file = str(said[1])
            if self.module_file != __file__:  # the same sys.path: the same file name
                raise WorkerGone(f"the decoding worker runs other code: {self.module_file}")
            self._ready = True
            self._settled.set()
            while True:
                decoded = await pipe_worker.receive(stdout)
                if not self._waiting:
                    raise WorkerGone("an answer to no request")
                seq, sent, waiting = self._waiting.popleft()
                _check(decoded, seq, sent)
                self.cpu_s, self.values = decoded.cpu_s, decoded.values
                if not waiting.done():  # a batch dropped (a stop): its answer is not wanted
                    waiting.set_result(decoded)
        except asyncio.CancelledError:
            self._fail(WorkerGone("the decoding worker was stopped"))
            raise
        except Exception as error:
            self._give_up(error if isinstance(error, WorkerGone) else WorkerGone(repr(error)))

    async def started(self) -> bool:
        """Wait until the worker is up (True) or gone (False): the start-up's deadline at
        most."""
        await self._settled.wait()
        return self.usable

    def _give_up(self, error: WorkerGone) -> None:
        """The worker is not used again: logged once, killed, its requests failed."""
        if not self._gone:
            log.error(
                "the decoding worker is gone (%r): live records are decoded in the service "
                "from now on",
                error,
            )
        if self._process is not None and self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()
        self._fail(error)

    def _fail(self, error: WorkerGone) -> None:
        self._gone = True
        self._settled.set()
        if self._overdue is not None:
            self._overdue.cancel()
        while self._waiting:
            _, _, waiting = self._waiting.popleft()
            if not waiting.done():
                waiting.set_exception(error)
                # Retrieved here: a batch dropped (a run that ended) never awaits it, and
                # asyncio would report it; one awaited still raises it.
                waiting.exception()

    async def close(self) -> None:
        """End the worker: end of file on its stdin, then a kill if it lingers. A worker
        still starting is killed at once: it reads its input only after its imports (most
        of a second of CPU), has been sent nothing, and a service stopping soon after its
        start (a restart, a test's app) would otherwise wait for them."""
        process, self._process = self._process, None
        starting = not self._ready
        self._gone = True
        _WORKERS.discard(self)
        if process is None:
            return
        await pipe_worker.end(process, kill=starting)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        self._fail(WorkerGone("the decoding worker was stopped"))


def _check(decoded: Any, seq: int, sent: int) -> None:
    """WorkerGone unless ``decoded`` is the answer to request ``seq`` of ``sent`` values: its
    number, every position once (decoded or not), and as many events prepared as decoded."""
    if not isinstance(decoded, Decoded):
        raise WorkerGone(f"unexpected answer: {type(decoded).__name__}")
    if decoded.seq != seq:
        raise WorkerGone(f"the answer to request {decoded.seq} came for request {seq}")
    prepared = decoded.prepared
    if prepared is None:
        return  # not prepared: the runner decodes the batch itself, from its records
    positions = sorted([*decoded.decoded, *(i for i, _ in decoded.undecodable)])
    if positions != list(range(sent)):
        raise WorkerGone(f"the answer to request {seq} does not cover its {sent} values")
    if prepared.decoded != len(decoded.decoded):
        raise WorkerGone(f"the answer to request {seq} prepared other events than it decoded")


def batches_of(
    poll: Mapping[TopicPartition, Sequence[Any]], size: int
) -> list[dict[TopicPartition, Sequence[Any]]]:
    """The poll's records in batches of ``size`` (the last one less), each partition's
    records in order, taken partition after partition as aiokafka's poll takes them: a
    backlog of 8,000 records is 8 transactions, where an even share of each partition per
    batch (consumer._chunks, for transactional tasks) made 9-10 of them at 3 partitions."""
    batches: list[dict[TopicPartition, Sequence[Any]]] = []
    batch: dict[TopicPartition, Sequence[Any]] = {}
    room = size
    for tp, records in poll.items():
        start = 0
        while start < len(records):
            taken = records[start : start + room]
            batch[tp] = taken
            start += len(taken)
            room -= len(taken)
            if not room:
                batches.append(batch)
                batch, room = {}, size
    if batch:
        batches.append(batch)
    return batches


_WORKERS: weakref.WeakSet[DecodeWorker] = weakref.WeakSet()


class _WatchedLock(asyncio.Lock):
    """An asyncio.Lock that counts the tasks waiting for it."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = 0

    async def acquire(self) -> Literal[True]:
        self.waiting += 1
        try:
            return await super().acquire()
        finally:
            self.waiting -= 1


def workers_cpu() -> tuple[float, int]:
    """The CPU seconds the live workers of this process spent decoding, and the values they
    decoded (the bench's CPU per event of the worker)."""
    workers = list(_WORKERS)
    return sum(w.cpu_s for w in workers), sum(w.values for w in workers)


_Sent = tuple[list[Any], list[tuple[Any, str]], asyncio.Future[Decoded]]


@dataclass(frozen=True)
class _Ahead:
    """A poll taken ahead: by which consumer, in which generation, and its batches' values
    with the worker (the kept records, those set aside, the answer to come, a batch each)."""

    consumer: AIOKafkaConsumer
    generation: int
    poll: Mapping[TopicPartition, Sequence[Any]]
    cut: list[tuple[tuple[TopicPartition, int, int], ...]]
    sent: list[_Sent]


def _cut(
    chunks: Sequence[Mapping[TopicPartition, Sequence[Any]]],
) -> list[tuple[tuple[TopicPartition, int, int], ...]]:
    """The batches' records, a partition's first and last offsets a batch: a poll handed
    to _process_task is the one taken ahead only if it is cut the same."""
    return [
        tuple((tp, records[0].offset, records[-1].offset) for tp, records in chunk.items())
        for chunk in chunks
    ]


class OffloadingRunner(ConsumerRunner):
    """The consumer runner with a backlog's decoding in ``worker`` (plain mode only: the
    metrics service commits its offsets after its own database transaction)."""

    def __init__(
        self, *, worker: DecodeWorker, batches: Counter | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        if self.options.transactional:
            raise ValueError("the decoding worker serves a plain (not transactional) consumer")
        self._worker = worker
        self._batches = batches  # sent to the worker, by who prepared them (prepared_by)
        # The batch being applied: a refused record's dead letter is its value as sent.
        self._in_hand: Mapping[TopicPartition, Sequence[Any]] = {}
        # Tells when a rebalance's listener waits for the poll in hand: the poll then ends
        # after the batch in hand, as for a stop, not after up to BATCHES_A_POLL of them.
        self.processing = _WatchedLock()
        # The next poll, taken while a backlog poll's last batch is applied and sent to the
        # worker (_take_ahead); handed to the run loop by _poll, then applied by
        # _process_task from the worker's answers.
        self._ahead: _Ahead | None = None
        self._current: _Ahead | None = None
        self.polls_ahead = 0  # polls taken ahead (tests, the bench)

    @property
    def revoke_pending(self) -> bool:
        """A rebalance waits for the poll in hand (the runner's only other lock holders)."""
        lock = self.processing
        return isinstance(lock, _WatchedLock) and lock.waiting > 0

    def _ends_poll(self, consumer: AIOKafkaConsumer, rest: Sequence[Any]) -> bool:
        """Whether the poll ends before the batches ``rest`` (a stop, or a rebalance that
        waits): they are uncommitted, and read again (a rebalance resets the positions to
        the committed offsets; so does this, for the partitions it leaves)."""
        if self._stopping.is_set():
            return True
        if not self.revoke_pending:
            return False
        owned = consumer.assignment()
        first: dict[TopicPartition, int] = {}
        for chunk in rest:
            for tp, records in chunk.items():
                if records and tp not in first:
                    first[tp] = records[0].offset
        for tp, offset in first.items():
            if tp in owned:
                consumer.seek(tp, offset)
        return True

    def _poll_size(self, consumer: AIOKafkaConsumer) -> int:
        worker = self._worker
        batches = BATCHES_A_POLL if worker.usable or worker.starting else 1
        return self.options.max_batch * batches

    async def _poll(
        self, consumer: AIOKafkaConsumer
    ) -> tuple[Mapping[TopicPartition, Sequence[Any]], int]:
        """The poll taken ahead, if any, with the generation it was taken in: a rebalance
        since then makes the run loop drop it and seek its partitions back to their
        committed offsets (``_refetch``), as for any poll that a rebalance overtook."""
        ahead, self._ahead = self._ahead, None
        self._current = None
        if ahead is not None and ahead.consumer is consumer:
            self._current = ahead
            return ahead.poll, ahead.generation
        # None, or one of a run that ended (its consumer closed): never handled.
        return await super()._poll(consumer)

    async def _process_task(
        self,
        consumer: AIOKafkaConsumer,
        batches: Mapping[TopicPartition, Sequence[Any]],
        producer: AIOKafkaProducer,
    ) -> None:
        chunks = batches_of(batches, self.options.max_batch)
        ahead, self._current = self._current, None
        # The poll taken ahead: its batches are with the worker already, the first too.
        sent: list[_Sent | None] | None = (
            list(ahead.sent) if ahead is not None and ahead.cut == _cut(chunks) else None
        )
        if sent is None and len(chunks) > 1 and self._worker.starting:
            # A backlog at the service's start: the worker is worth its start-up. Bounded
            # by the start-up's deadline, fixed once in DecodeWorker.start.
            await self._worker.started()
        if sent is None and (len(chunks) < 2 or not self._worker.usable):
            for i, chunk in enumerate(chunks):  # as ConsumerRunner does: decoded here
                if i and self._ends_poll(consumer, chunks[i:]):
                    return  # read again: nothing of it is committed
                await super()._process_task(consumer, chunk, producer)
            return
        if len(chunks) > 1:
            # A backlog: the next records are fetched while these are applied. (The runner
            # pauses fetching while a poll is handled, for the latency of a consumer near
            # the head: there the next fetch should read all that arrived meanwhile. Behind
            # a backlog the fetch was a round trip, ~35 ms, between every two polls.) A
            # poll taken ahead of one batch or less (the head reached) keeps the pause.
            consumer.resume(*consumer.assignment())
        if sent is None:
            # Every batch's values sent now: the worker prepares batch i+1 while i is
            # applied. The first batch decoded here while the worker prepares the others:
            # nothing waits for the worker's first answer.
            sent = [None, *(self._send(chunk) for chunk in chunks[1:])]
        last = len(chunks) - 1
        for i, chunk in enumerate(chunks):
            if i and self._ends_poll(consumer, chunks[i:]):
                return  # as above; the worker's answers for them are dropped
            if i == last and last:
                # While this poll's last batch is written, the worker prepares the next
                # poll's, its first batch too: nothing waits for the worker across polls.
                await self._take_ahead(consumer)
            in_worker = sent[i]
            batch = (
                self._prepare(chunk)
                if in_worker is None
                else await self._prepared(chunk, *in_worker)
            )
            result = await self._handle_with_retries(batch.messages)
            await self._finish(consumer, batch, result, producer)

    async def _take_ahead(self, consumer: AIOKafkaConsumer) -> None:
        """The next poll taken now (what aiokafka has fetched, no wait) and every batch of
        it sent to the worker; ``_poll`` hands it to the run loop after this poll. Nothing
        of it is committed until it is applied, so a stop, a failed run or a rebalance
        before then drops it, and its records are read again from the committed offsets."""
        # (A stop or a rebalance waiting for the lock ended the poll before its last
        # batch: _ends_poll, just before this.) A worker gone since the poll began: its
        # batches are decoded here anyway, a poll at a time.
        if not self._worker.usable:
            return
        # A rebalance begun whose listener does not wait for the lock yet: aiokafka's
        # getmany would wait for the new assignment, whose listener waits for this lock.
        # Private names (aiokafka 0.14): either missing, an unknown aiokafka, means nothing
        # is taken ahead (not an AttributeError under the lock, which ended every run).
        subscription = getattr(consumer, "_subscription", None)
        if getattr(subscription, "reassignment_in_progress", True):
            return
        polled = await consumer.getmany(timeout_ms=0, max_records=self._poll_size(consumer))
        poll = {tp: records for tp, records in polled.items() if records}
        if not poll:
            return
        chunks = batches_of(poll, self.options.max_batch)
        sent = [self._send(chunk) for chunk in chunks]
        self._ahead = _Ahead(consumer, self.generation, poll, _cut(chunks), sent)
        self.polls_ahead += 1

    def _first_unapplied(self, consumer: AIOKafkaConsumer, tp: TopicPartition) -> int | None:
        # The lag gauge counts a poll held ahead (up to BATCHES_A_POLL batches unapplied):
        # otherwise it read 0 at a backlog's end with a poll still to apply.
        ahead = self._ahead
        if ahead is None or ahead.consumer is not consumer:
            return None
        records = ahead.poll.get(tp)
        return records[0].offset if records else None

    def _send(self, chunk: Mapping[TopicPartition, Sequence[Any]]) -> _Sent:
        """The chunk's records sent to the worker (those too large set aside, as _prepare
        does), the records set aside, and the worker's answer to come."""
        limit = self.options.max_record_bytes
        kept: list[Any] = []
        dead: list[tuple[Any, str]] = []
        for records in chunk.values():
            for record in records:
                size = len(record.value or b"")
                if size > limit:
                    dead.append((record, f"too large: {size} bytes (limit {limit})"))
                else:
                    kept.append(record)
        answer = self._worker.submit([r.topic for r in kept], [r.value for r in kept])
        return kept, dead, answer

    async def _prepared(
        self,
        chunk: Mapping[TopicPartition, Sequence[Any]],
        kept: list[Any],
        dead: list[tuple[Any, str]],
        answer: asyncio.Future[Decoded],
    ) -> _Prepared:
        """The chunk as _prepare makes it, from the worker's answer (or made here, as
        _prepare makes it, if the worker is gone or the batch is not for it)."""
        started = time.perf_counter()
        try:
            decoded = await self._worker.answer(answer)
        except WorkerGone:
            decoded = None
        if decoded is None or decoded.prepared is None or decoded.counts is None:
            # The worker gone, or the batch not for it (labels or recorded changes, or a
            # failure in the worker): decoded and applied here from its records.
            self._count("service")
            return self._prepare(chunk)
        self._count("worker")
        self._in_hand = chunk
        topics = self._topics
        undecoded: Any = Undecoded  # an Inbound's event, not an Event: the handler knows it
        if decoded.undecodable:
            dead += [(kept[i], why) for i, why in decoded.undecodable]
            # In the records' order, as _prepare sets them aside (the too large ones were
            # set aside before the others were sent).
            order = {tp: n for n, tp in enumerate(chunk)}
            dead.sort(
                key=lambda d: (order[TopicPartition(d[0].topic, d[0].partition)], d[0].offset)
            )
        records = [kept[i] for i in decoded.decoded]

        def message(at: int) -> Inbound[Any]:
            record = records[at]
            return Inbound(
                record.topic,
                record.partition,
                record.offset,
                record.key,
                undecoded(topics[record.topic], record.value),
                list(record.headers or ()),
                record.timestamp,
            )

        offsets = {tp: part[-1].offset + 1 for tp, part in chunk.items()}
        prepared = PreparedMessages(
            len(records), message, decoded.prepared, decoded.prepared.refused, decoded.counts
        )
        # A sequence whose messages are made only if read, not a list: only this runner's
        # _process_task hands it on (to _handle_with_retries, which gives it to the handler
        # or, after a failure, to _handle_one_by_one, below).
        messages: Any = prepared
        return _Prepared(chunk, messages, dead, offsets, started)

    async def _handle_one_by_one(
        self, messages: list[Inbound[Any]], handler: BatchHandler
    ) -> BatchResult:
        # A prepared batch isolated after a failure: its messages made now, as a list.
        return await super()._handle_one_by_one(list(messages), handler)

    def _count(self, prepared_by: str) -> None:
        if self._batches is not None:
            self._batches.labels(prepared_by=prepared_by).inc()

    def _prepare(self, batches: Mapping[TopicPartition, Sequence[Any]]) -> _Prepared:
        self._in_hand = batches
        return super()._prepare(batches)

    def _raw_value(self, message: Inbound[Any]) -> bytes | None:
        """The value ``message``'s record came with (the batch in hand's), if found."""
        event = message.event
        if isinstance(event, Undecoded):
            return event.value
        tp = TopicPartition(message.topic, message.partition)
        for record in self._in_hand.get(tp, ()):
            if record.offset == message.offset:
                value: bytes | None = record.value
                return value
        return None

    def _dead_letter(self, message: Inbound[Any], reason: str) -> Any:
        # The record's own value, as for a record that does not decode, whichever path
        # decoded it (in the worker, or here): one dead letter for one record.
        value = self._raw_value(message)
        if value is None:
            return super()._dead_letter(message, reason)
        return dead_letter_record(
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=message.key,
            value=value,
            headers=message.headers,
            reason=reason,
            group_id=self.options.group_id,
        )


if __name__ == "__main__":
    # Through the module's own name: what it pickles (Decoded) is then what the service
    # unpickles, not this __main__'s copy.
    from services.metrics.live_decode import _serve as serve

    serve()
