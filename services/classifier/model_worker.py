"""The model's predictions on the second core: a backlog's next poll predicted in a worker
process while this one judges and commits the poll before.

Why: the model's ``predict_batch`` is ~27-31 µs of the classifier's ~90 µs of CPU a demand
(docs/performance.md), all on the event loop's core, and a prediction is a pure function of
the model and the text. So while a backlog's poll is handled, the next poll is taken (what
aiokafka has fetched, no wait: ``PredictingRunner._take_ahead``) and its demands' values go
to the worker, which decodes them as the runner will (``codec.decode``) and predicts their
texts with the model version it was asked for. When the run loop handles that poll,
``ClassifyDemands`` takes the worker's predictions (``PollPredictions.answered``) instead of
predicting here. Exactly as the metrics service's decoding worker (services/metrics/
live_decode.py, whose docstring says why a child on pipes and not multiprocessing's pool).

The model version: every request names the version it is for, and the worker answers with
the version it predicted with. The handler stamps a batch with the model in use when it
handles it; the worker's answer is used only if its version is that one (a retrain or a
model watch's switch in between: predicted here). The worker gets each model the service
swaps to (pickled once, ``use``) and says when it holds it; nothing is asked of it for a
version it does not hold yet.

Exactly-once is the runner's, unchanged: only predictions cross, and a poll taken ahead is
committed only when it is handled; a stop, a failed run or a rebalance before then drops it
(a rebalance since its poll: its partitions go back to the committed offsets, as any poll a
rebalance overtook, ``ConsumerRunner._refetch``). A poll near the head (not a full poll) is
neither taken ahead nor sent: it is predicted here, as before.

The worker is ``python -P -c`` importing this module from the service's own sys.path, a
child on pipes (stdin: requests, stdout: answers), started with the service (which does not
wait for it: until it holds the model in use, predictions are made here) and stopped with
it; it ignores SIGINT and SIGTERM and ends on end of file, so it dies with its service even
after a SIGKILL. A worker that dies, does not answer in time (ANSWER_TIMEOUT_S), is not up
by its start-up's deadline, or answers other than its request is killed, logged once and
left: its polls and all later ones are predicted here (counted,
``demandscope_classifier_model_worker_polls_total{predicted_by="service"}``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import pickle
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from prometheus_client import Counter

from services.classifier.live_model import ModelInUse
from services.classifier.model.text_model import Prediction, TextModel
from shared.events import DemandReceived
from shared.kafka.codec import decode
from shared.kafka.consumer import ConsumerRunner, Inbound
from shared.service import pipe_worker

log = logging.getLogger(__name__)

_READY = "ready"  # the worker's first answer (with its module's path), after its imports
_HOLDS = "holds"  # the worker's answer to a model: it holds that version now
# The worker must be up this long after start() (its imports: 1-5 s, more on a loaded
# machine beside the service's own start), or it is killed and every poll is predicted here.
# Generous: the service never waits for it, this only ends a worker stuck in its imports.
START_WAIT_S = 60.0
# An answer awaited this long at most (a worker stopped, starved or stuck never answers and
# stays alive): then the worker is killed and the poll predicted here. A poll of 1,500
# demands takes the worker ~50 ms.
ANSWER_TIMEOUT_S = 5.0
# Models the worker keeps (the one in use and the one before: a request sent just before a
# swap is still answered with the version it named).
_KEPT_MODELS = 2

# A prediction as it crosses the pipe: Prediction's fields in order (a plain tuple pickles
# and unpickles faster than the frozen dataclass).
_Fields = tuple[str, float, str, float, str | None, float, tuple[tuple[str, float], ...]]


@dataclass
class Predicted:
    """The worker's answer to one request: each value's prediction, in order, as
    Prediction's fields (None: the value does not decode, or its text failed alone)."""

    seq: int  # the request's number, echoed
    version: str | None  # the model version predicted with (None: not held, nothing done)
    predictions: list[_Fields | None]
    cpu_s: float = 0.0  # the worker's CPU time predicting so far, and the texts it took
    texts: int = 0


def predict_values(model: TextModel, values: Sequence[bytes]) -> list[_Fields | None]:
    """Each value decoded as the runner decodes it, its text predicted as the service
    predicts (a batch; if it fails, each text alone)."""
    texts: list[str] = []
    at: list[int] = []
    for i, value in enumerate(values):
        try:
            event = decode(DemandReceived, value)
        except Exception:
            continue  # the runner sets it aside: nothing to predict
        texts.append(event.text)
        at.append(i)
    answers: list[_Fields | None] = [None] * len(values)
    try:
        batch: list[Prediction | None] = list(model.predict_batch(texts))
        if len(batch) != len(texts):
            raise ValueError(f"{len(batch)} predictions for {len(texts)} texts")
    except Exception:
        batch = []
        for text in texts:
            try:
                batch.append(model.predict(text))
            except Exception:
                batch.append(None)  # the service predicts it, and rejects it as before
    for i, p in zip(at, batch, strict=True):
        if p is not None:
            answers[i] = (
                p.purpose,
                p.purpose_probability,
                p.demand_type,
                p.demand_type_probability,
                p.failure_kind,
                p.failure_kind_probability,
                p.alternatives,
            )
    return answers


def _serve() -> None:
    """The worker: models (``("model", version, pickled)``) and requests (``(seq, version,
    values)``), in the order sent."""
    requests, answers = pipe_worker.worker_pipes()

    def say(message: object) -> None:
        pipe_worker.write_frame(answers, pickle.dumps(message, protocol=5))

    gc.freeze()  # the imports: out of the collector's generations, as the service does
    gc.set_threshold(50_000, 10, 10)  # the service's young collections (shared.service)
    say((_READY, __file__))
    models: dict[str, TextModel] = {}
    cpu_s, texts = 0.0, 0
    while (frame := pipe_worker.read_frame(requests)) is not None:
        started = time.process_time()
        message = pickle.loads(frame)
        if message[0] == "model":
            _, version, pickled = message
            try:
                models[version] = pickle.loads(pickled)
            except Exception:
                log.exception("the model worker could not load model version %s", version)
                continue  # never said it holds it: nothing is asked of it for that version
            while len(models) > _KEPT_MODELS:
                del models[next(iter(models))]
            gc.freeze()
            say((_HOLDS, version))
            continue
        seq, version, values = message
        model = models.get(version)
        if model is None:
            answer = Predicted(seq, None, [])
        else:
            try:
                answer = Predicted(seq, version, predict_values(model, values))
            except Exception:  # a defect: the service predicts the poll itself
                log.exception("predicting a poll failed; it is predicted in the service")
                answer = Predicted(seq, None, [])
            texts += len(values)
        answer.cpu_s, answer.texts = cpu_s + time.process_time() - started, texts
        say(answer)
        cpu_s += time.process_time() - started


class WorkerGone(Exception):
    """The worker died or answered nonsense: its polls are predicted in the service."""


class ModelWorker:
    """The worker process of one service: started with it (``start``), given each model the
    service swaps to (``use``), stopped with it (``close``). Requests are numbered and
    answered in order. Anything unexpected ends the worker: logged once, and every poll is
    predicted in the service from then on."""

    def __init__(
        self,
        *,
        answer_timeout_s: float = ANSWER_TIMEOUT_S,
        start_wait_s: float = START_WAIT_S,
        polls: Counter | None = None,
    ) -> None:
        self._answer_timeout_s = answer_timeout_s
        self._start_wait_s = start_wait_s
        self._polls = polls  # polls asked of the worker, by who predicted them (predicted_by)
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._overdue: asyncio.TimerHandle | None = None
        # (request number, values sent, its answer to come), in the order sent.
        self._waiting: list[tuple[int, int, asyncio.Future[Predicted]]] = []
        self._seq = 0
        self._gone = False
        self._ready = False
        self._sent_model: str | None = None  # the last version sent
        self.holds: str | None = None  # the version the worker said it holds, last
        self.module_file: str | None = None
        self.cpu_s = 0.0  # what the worker last said of its CPU time predicting, and texts
        self.texts = 0

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def usable(self) -> bool:
        return self._ready and self._process is not None and not self._gone

    def ready_for(self, version: str) -> bool:
        """Whether a request for ``version`` is answered with it (the worker holds it)."""
        return self.usable and self.holds == version and self._sent_model == version

    def _command(self) -> list[str]:
        # The service's own code, never what the worker's working directory holds.
        return pipe_worker.command(__name__)

    async def start(self) -> None:
        """Start the worker without waiting for it; one that cannot even be started (no
        interpreter, no memory, no process slots) is logged and left: the service predicts
        every poll itself, as after the worker's death."""
        try:
            self._process = await pipe_worker.spawn(self._command())
        except OSError as error:
            self._give_up(WorkerGone(f"the model worker could not be started: {error!r}"))
            return
        self._reader = asyncio.create_task(self._read(), name="model-worker-reader")
        self._overdue = asyncio.get_running_loop().call_later(
            self._start_wait_s, self._start_overdue
        )

    def _start_overdue(self) -> None:
        if not self._ready and not self._gone:
            self._give_up(WorkerGone(f"the model worker not up in {self._start_wait_s} s"))

    def use(self, model: ModelInUse) -> None:
        """Give the worker ``model`` (the service's model in use from now on). Until it says
        it holds it, polls are predicted here."""
        if self._process is None or self._gone or self._sent_model == model.version:
            return
        try:
            # One pickling a swap (the model's state, without its caches: ~0.1 s of CPU).
            pickled = pickle.dumps(model.model, protocol=5)
            self._write(("model", model.version, pickled))
        except Exception as error:
            self._give_up(WorkerGone(f"the model could not be sent: {error!r}"))
            return
        self._sent_model = model.version

    def submit(self, version: str, values: list[bytes]) -> asyncio.Future[Predicted] | None:
        """The values' predictions with ``version`` to come, or None if the worker does not
        hold it (or is gone)."""
        if not self.ready_for(version):
            return None
        self._seq += 1
        try:
            self._write((self._seq, version, values))
        except Exception as error:  # the pipe is closed: the worker has gone
            self._give_up(WorkerGone(repr(error)))
            return None
        answer: asyncio.Future[Predicted] = asyncio.get_running_loop().create_future()
        self._waiting.append((self._seq, len(values), answer))
        return answer

    async def answer(self, answer: asyncio.Future[Predicted]) -> Predicted:
        """``answer``'s Predicted, awaited at most ``answer_timeout_s``: a worker that does
        not answer by then is killed (WorkerGone)."""
        try:
            return await asyncio.wait_for(asyncio.shield(answer), self._answer_timeout_s)
        except TimeoutError:
            self._give_up(WorkerGone(f"no answer in {self._answer_timeout_s} s"))
            raise WorkerGone("no answer") from None

    def count(self, predicted_by: str) -> None:
        if self._polls is not None:
            self._polls.labels(predicted_by=predicted_by).inc()

    def _write(self, message: Any) -> None:
        assert self._process is not None
        pipe_worker.send(self._process, message)

    async def _read(self) -> None:
        assert self._process is not None
        assert self._process.stdout is not None
        stdout = self._process.stdout
        try:
            said = await pipe_worker.receive(stdout)
            if not (isinstance(said, tuple) and len(said) == 2 and said[0] == _READY):
                raise WorkerGone("the model worker did not start")
            self.module_file = str(said[1])
            if self.module_file != __file__:  # the same sys.path: the same file
                raise WorkerGone(f"the model worker runs other code: {self.module_file}")
            self._ready = True
            if self._overdue is not None:
                self._overdue.cancel()
            while True:
                said = await pipe_worker.receive(stdout)
                if isinstance(said, tuple) and len(said) == 2 and said[0] == _HOLDS:
                    self.holds = str(said[1])
                    continue
                if not self._waiting:
                    raise WorkerGone("an answer to no request")
                seq, sent, waiting = self._waiting.pop(0)
                _check(said, seq, sent)
                self.cpu_s, self.texts = said.cpu_s, said.texts
                if not waiting.done():
                    waiting.set_result(said)
        except asyncio.CancelledError:
            self._fail(WorkerGone("the model worker was stopped"))
            raise
        except Exception as error:
            self._give_up(error if isinstance(error, WorkerGone) else WorkerGone(repr(error)))

    def _give_up(self, error: WorkerGone) -> None:
        """The worker is not used again: logged once, killed, its requests failed."""
        if not self._gone:
            log.error(
                "the model worker is gone (%r): demands are predicted in the service from now on",
                error,
            )
        if self._process is not None and self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()
        self._fail(error)

    def _fail(self, error: WorkerGone) -> None:
        self._gone = True
        if self._overdue is not None:
            self._overdue.cancel()
        while self._waiting:
            _, _, waiting = self._waiting.pop(0)
            if not waiting.done():
                waiting.set_exception(error)
                waiting.exception()  # retrieved: a poll dropped never awaits it

    async def close(self) -> None:
        """End the worker: end of file on its stdin, then a kill if it lingers."""
        process, self._process = self._process, None
        self._gone = True
        if process is None:
            return
        await pipe_worker.end(process)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        self._fail(WorkerGone("the model worker was stopped"))


def _check(said: Any, seq: int, sent: int) -> None:
    """WorkerGone unless ``said`` answers request ``seq`` of ``sent`` values."""
    if not isinstance(said, Predicted):
        raise WorkerGone(f"unexpected answer: {type(said).__name__}")
    if said.seq != seq:
        raise WorkerGone(f"the answer to request {said.seq} came for request {seq}")
    if said.version is not None and len(said.predictions) != sent:
        raise WorkerGone(f"the answer to request {seq} does not cover its {sent} values")


@dataclass(frozen=True)
class _Asked:
    """A poll's demands asked of the worker: each one's place in the request, by its
    record's (partition, offset) on the demands' topic, and the answer to come."""

    version: str
    places: dict[tuple[int, int], int]
    answer: asyncio.Future[Predicted]


class PollPredictions:
    """Between the runner and the handler: the worker's predictions for the poll in hand."""

    def __init__(self, worker: ModelWorker, demands_topic: str) -> None:
        self.worker = worker
        self.demands_topic = demands_topic
        self.current: _Asked | None = None

    def ask(self, version: str, records: Sequence[Any]) -> _Asked | None:
        """The demands among ``records`` sent to the worker for ``version``; None if it does
        not hold that version (or is gone)."""
        topic = self.demands_topic
        demands = [r for r in records if r.topic == topic]
        if not demands:
            return None
        answer = self.worker.submit(version, [r.value for r in demands])
        if answer is None:
            return None
        places = {(r.partition, r.offset): i for i, r in enumerate(demands)}
        return _Asked(version, places, answer)

    async def answered(
        self, model: ModelInUse, demands: Sequence[Inbound[Any]]
    ) -> list[Prediction | None] | None:
        """The worker's prediction of each of ``demands`` (None for one it did not predict),
        if the poll in hand was asked of it and answered with ``model``'s version; else
        None (the service predicts them)."""
        asked = self.current
        if asked is None or not demands:
            return None
        places = asked.places
        try:
            at = [places[(m.partition, m.offset)] for m in demands]
        except KeyError:
            return None  # not the poll asked (a retried record alone): predicted here
        try:
            said = await self.worker.answer(asked.answer)
        except WorkerGone:
            said = None
        if said is None or said.version != model.version:
            # The worker gone, or a swap since the poll was asked: the batch is stamped with
            # the model in use now, so it is predicted with that one, here.
            self.worker.count("service")
            return None
        self.worker.count("worker")
        answers = said.predictions
        return [None if (f := answers[i]) is None else Prediction(*f) for i in at]


@dataclass(frozen=True)
class _Ahead:
    """A poll taken ahead: by which consumer, in which generation, and what was asked."""

    consumer: AIOKafkaConsumer
    generation: int
    poll: Mapping[TopicPartition, Sequence[Any]]
    asked: _Asked | None


class PredictingRunner(ConsumerRunner):
    """The consumer runner that takes a backlog's next poll while this one is handled and
    asks the model worker for its demands' predictions (``PollPredictions``)."""

    def __init__(self, *, predictions: PollPredictions, model: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._predictions = predictions
        self._model = model  # () -> ModelInUse: the version asked for
        self._ahead: _Ahead | None = None
        self.polls_ahead = 0  # polls taken ahead (tests, the bench)

    async def _poll(
        self, consumer: AIOKafkaConsumer
    ) -> tuple[Mapping[TopicPartition, Sequence[Any]], int]:
        """The poll taken ahead, if any, with the generation it was taken in: a rebalance
        since makes the run loop drop it and seek its partitions back to their committed
        offsets (``_refetch``)."""
        ahead, self._ahead = self._ahead, None
        self._predictions.current = None
        if ahead is not None and ahead.consumer is consumer:
            self._predictions.current = ahead.asked
            return ahead.poll, ahead.generation
        return await super()._poll(consumer)

    async def _process(
        self, consumer: AIOKafkaConsumer, batches: Mapping[TopicPartition, Sequence[Any]]
    ) -> None:
        if sum(len(records) for records in batches.values()) >= self._poll_size(consumer):
            # A full poll: a backlog. The next poll is taken now and its demands sent to
            # the worker, which predicts them while this one is judged and committed.
            await self._take_ahead(consumer)
        await super()._process(consumer, batches)

    async def _take_ahead(self, consumer: AIOKafkaConsumer) -> None:
        if not self._predictions.worker.ready_for(self._model().version):
            return
        # A rebalance begun whose listener does not wait for the lock yet: aiokafka's
        # getmany would wait for the new assignment, whose listener waits for this lock
        # (private names, aiokafka 0.14: either missing means nothing is taken ahead).
        subscription = getattr(consumer, "_subscription", None)
        if getattr(subscription, "reassignment_in_progress", True):
            return
        # The run loop paused fetching for this poll (for a consumer near the head); behind
        # a backlog the next records are fetched meanwhile instead.
        consumer.resume(*consumer.assignment())
        polled = await consumer.getmany(timeout_ms=0, max_records=self._poll_size(consumer))
        poll = {tp: records for tp, records in polled.items() if records}
        if not poll:
            return
        records = [r for rs in poll.values() for r in rs]
        asked = self._predictions.ask(self._model().version, records)
        self._ahead = _Ahead(consumer, self.generation, poll, asked)
        self.polls_ahead += 1

    def _first_unapplied(self, consumer: AIOKafkaConsumer, tp: TopicPartition) -> int | None:
        # The lag counts a poll held ahead (its getmany moved the position past it).
        ahead = self._ahead
        if ahead is None or ahead.consumer is not consumer:
            return None
        records = ahead.poll.get(tp)
        return records[0].offset if records else None
