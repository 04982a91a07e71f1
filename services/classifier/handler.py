"""Kafka entrypoint of the classifier: one batch of demands, case events and labels in; the
classifications and the touched customers' context out, in one transaction.

The text model predicts the whole batch at once; then, in arrival order, each demand is
judged against its customer's context, which the batch's own demands and case events keep
up to date (the logic: service.py). Here: routing the records, the label store's trip,
encoding, forwarding labels, what waits for the commit, counting. Context changes reach
memory only after the transaction commits.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence, Set
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter as CounterChild
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from services.classifier.changelog import state_record
from services.classifier.context import ContextStore, event_utc_now
from services.classifier.db.repository import LabelRepository, SeenText
from services.classifier.judgement import Thresholds
from services.classifier.live_model import ModelInUse
from services.classifier.metrics import ClassifierMetrics
from services.classifier.model.text_model import Prediction
from services.classifier.model_worker import PollPredictions
from services.classifier.service import (
    apply_case,
    classify,
    predict,
    relabel_context,
    relabel_forwarded,
)
from shared.database.errors import refused_by_the_database
from shared.events import CaseEvent, DemandClassified, DemandLabelled, DemandReceived
from shared.kafka.codec import OutboundRecord, encode_all
from shared.kafka.consumer import BatchHandler, BatchResult, Inbound, Rejection, RetryableError


@dataclass(frozen=True, slots=True)
class Topics:
    classified: str
    context: str
    # Labels re-keyed by customer for the instance that owns the customer's context: a
    # label is keyed by its demand, so whoever reads it may not hold that context.
    forwarded_labels: str | None = None


class ClassifyDemands:
    def __init__(
        self,
        *,
        topics: Topics,
        source: str,
        model: Callable[[], ModelInUse],
        context: ContextStore,
        labels: LabelRepository,
        thresholds: Thresholds,
        metrics: ClassifierMetrics,
        predictions: PollPredictions | None = None,
    ) -> None:
        self._topics = topics
        self._source = source
        self._model = model
        self._context = context
        self._labels = labels
        self._thresholds = thresholds
        self._metrics = metrics
        # The model worker's predictions for the poll in hand (a backlog's, asked ahead).
        self._predictions = predictions
        self._last_text_pruning = 0.0
        # The metrics' labelled children, by their labels (see ``_count``).
        self._children: dict[object, CounterChild] = {}

    async def for_poll(self, messages: Sequence[Inbound[Any]]) -> BatchHandler:
        """A poll's batches (one per partition number, each its own transaction) share one
        prediction and one trip to the label store: in the running stack a poll holds a
        few demands per partition, and each call of the model and each trip has a fixed
        cost (the model ~0.6 ms a call, the store two hand-offs to its thread). Both are
        done before any batch is handled and neither depends on a commit: the predictions
        are the model's alone, and the store's writes are idempotent. What each batch
        judges, changes in the context and commits is as before. If the trip fails, each
        batch makes its own (and is retried as before)."""
        model = self._model()
        ordered = sorted(messages, key=lambda m: m.timestamp_ms)
        demands = [m for m in ordered if isinstance(m.event, DemandReceived)]
        predictions = await self._predict(model, demands)
        try:
            labelled = await self._keep_for_learning(
                demands, self._labels_to_keep(ordered), datetime.now(UTC)
            )
        except Exception:
            return self
        return _PreparedPoll(
            self, _Prepared(model, predictions, labelled, frozenset(map(id, messages)))
        )

    async def __call__(self, messages: Sequence[Inbound[Any]]) -> BatchResult:
        return await self._handle(messages, None)

    async def _handle(
        self, messages: Sequence[Inbound[Any]], prepared: _Prepared | None
    ) -> BatchResult:
        started = time.perf_counter()
        if prepared is not None and not all(id(m) in prepared.messages for m in messages):
            prepared = None  # not what was prepared: handled on its own
        ordered = sorted(messages, key=lambda m: m.timestamp_ms)  # stable: keeps partition order
        demands = [m for m in ordered if isinstance(m.event, DemandReceived)]
        labels = self._labels_to_keep(ordered)
        if prepared is None:
            model = self._model()  # one version for the whole batch
            predictions = await self._predict(model, demands)
            classified_at = event_utc_now()
            labelled = await self._keep_for_learning(demands, labels, classified_at)
        else:
            model, predictions, labelled = prepared.model, prepared.predictions, prepared.labelled
            classified_at = event_utc_now()
        overlay = self._context.overlay()
        result = BatchResult()
        classified: list[DemandClassified] = []
        elsewhere: list[DemandLabelled] = []  # labels whose customer this instance lacks
        for message in ordered:
            event = message.event
            try:
                if isinstance(event, DemandReceived):
                    prediction = predictions[id(message)]
                    if isinstance(prediction, Exception):
                        raise prediction
                    classified.append(
                        classify(
                            event,
                            message.partition,
                            prediction,
                            model,
                            overlay,
                            classified_at=classified_at,
                            labelled=labelled,
                            thresholds=self._thresholds,
                        )
                    )
                elif isinstance(event, CaseEvent):
                    apply_case(event, message.partition, overlay, classified_at)
                elif isinstance(event, DemandLabelled) and self._forwarded(message):
                    # Already kept and counted where it was read: only the context learns.
                    # Keyed by customer, so this partition is the customer's and this
                    # instance owns it.
                    customer = message.key.decode() if message.key else None
                    relabel_forwarded(event, customer, message.partition, overlay, classified_at)
                elif isinstance(event, DemandLabelled) and not relabel_context(
                    event, overlay, classified_at
                ):
                    elsewhere.append(event)
            except Exception as error:  # this record's fault: dead-letter it, keep the batch
                result.rejected.append(Rejection(message, f"{type(error).__name__}: {error}"))
        # A label read before its demand in this batch: the demand is in context now.
        elsewhere = [
            label for label in elsewhere if not relabel_context(label, overlay, classified_at)
        ]
        topic = self._topics.classified
        result.outbound = encode_all(((c, topic) for c in classified), source=self._source)
        result.outbound += await self._forward(elsewhere)
        changed_states = overlay.changed
        result.outbound += [
            state_record(self._topics.context, customer, state)
            for customer, state in changed_states.items()
        ]

        def after_commit() -> None:
            overlay.commit()
            self._count(classified, classified_at)
            if labels:
                self._metrics.labels_received.inc(len(labels))
            self._metrics.customers_in_context.set(len(self._context))

        result.after_commit = after_commit
        changed = changed_states.keys()
        forwarded = self._topics.forwarded_labels
        result.conflicts_with = lambda later: _may_see(later, changed, forwarded)
        self._metrics.batch_seconds.observe(time.perf_counter() - started)
        return result

    async def _predict(
        self, model: ModelInUse, demands: list[Inbound[Any]]
    ) -> dict[int, Prediction | Exception]:
        """The demands' predictions with ``model``: the worker's, when it was asked for this
        poll's with that version (model_worker.py), each one it did not predict made here;
        otherwise all made here."""
        if self._predictions is not None and demands:
            answered = await self._predictions.answered(model, demands)
            if answered is not None:
                predicted: dict[int, Prediction | Exception] = {}
                missing: list[Inbound[Any]] = []
                for message, prediction in zip(demands, answered, strict=True):
                    if prediction is None:
                        missing.append(message)
                    else:
                        predicted[id(message)] = prediction
                if missing:
                    predicted.update(_predict(model, missing))
                return predicted
        return _predict(model, demands)

    def _labels_to_keep(self, ordered: Sequence[Inbound[Any]]) -> list[DemandLabelled]:
        return [
            m.event
            for m in ordered
            if isinstance(m.event, DemandLabelled) and not self._forwarded(m)
        ]

    def _forwarded(self, message: Inbound[Any]) -> bool:
        return message.topic == self._topics.forwarded_labels

    async def _forward(self, labels: list[DemandLabelled]) -> list[OutboundRecord]:
        """The labels whose customer another instance holds, keyed by that customer, in
        this batch's transaction: the owner applies them to the context. The customer comes
        from the texts the fleet has seen (the label store); a demand no instance has
        classified yet, or older than the window, has no context to correct."""
        topic = self._topics.forwarded_labels
        if topic is None or not labels:
            return []
        try:
            customers = await self._labels.customers_of(
                [(label.demand_source, label.demand_id) for label in labels]
            )
        except (DBAPIError, PoolTimeout) as error:
            raise RetryableError(f"label store: {error}") from error
        owned = [
            (label, customer)
            for label in labels
            if (customer := customers.get((label.demand_source, label.demand_id))) is not None
        ]
        records = encode_all(((label, topic) for label, _ in owned), source=self._source)
        return [
            replace(record, key=customer.encode())
            for record, (_, customer) in zip(records, owned, strict=True)
        ]

    async def _keep_for_learning(
        self, demands: list[Inbound[Any]], labels: list[DemandLabelled], now: datetime
    ) -> dict[tuple[str, str], str]:
        """The batch's one trip to the label store: the purposes people already gave the
        batch's demands (a label may be read before its demand, on another instance's
        partition: the context then takes the person's word), and what the batch teaches,
        the texts seen and the labels. Before the commit, and idempotent: a redelivered batch
        writes nothing new, and a crash after the commit cannot lose a label. The texts are
        written before the demands are judged: a demand the handler then rejects keeps its
        text for the window all the same (only training data, and a label on it may teach)."""
        purge = time.monotonic() - self._last_text_pruning > 3600
        look_up = (
            [(m.event.source, m.event.id) for m in demands]
            if self._topics.forwarded_labels is not None
            else []
        )
        try:
            labelled = await self._labels.keep_batch(
                [
                    SeenText(d.source, d.id, d.text, now, d.customer_ref)
                    for d in (m.event for m in demands)
                ],
                labels,
                look_up=look_up,
                forget_before=now - self._context.window if purge else None,
            )
        except DBAPIError as error:
            if refused_by_the_database(error):
                raise  # a record's values: the runner isolates and dead-letters that record
            # The database is away (or not migrated): not the records' fault, so the batch
            # is retried, and readiness says the consumer is stalled meanwhile.
            raise RetryableError(f"label store: {error}") from error
        except PoolTimeout as error:
            raise RetryableError(f"label store: {error}") from error
        if purge:
            self._last_text_pruning = time.monotonic()
        return labelled

    def _count(self, classified: list[DemandClassified], now: datetime) -> None:
        # Prometheus label look-ups cost more than the counting: aggregate the batch first,
        # and keep each labelled child (``labels`` takes a lock and builds a key per call;
        # the labels are bounded: demand type, purpose, method).
        children = self._children
        by_labels = Counter((c.demand_type, c.purpose, c.method) for c in classified)
        for labels, count in by_labels.items():
            child = children.get(labels)
            if child is None:
                demand_type, purpose, method = labels
                child = self._metrics.classified.labels(demand_type.value, purpose, method.value)
                children[labels] = child
            child.inc(count)
        review = sum(c.needs_review for c in classified)
        for needs_review, count in ((True, review), (False, len(classified) - review)):
            child = children.get(needs_review)
            if child is None:
                child = children[needs_review] = self._metrics.review.labels(
                    "true" if needs_review else "false"
                )
            if count:
                child.inc(count)
        confidence, delay = self._metrics.confidence, self._metrics.delay_seconds
        for c in classified:
            confidence.observe(c.confidence)
            delay.observe(max(0.0, (now - c.demand.received_at).total_seconds()))


@dataclass(frozen=True, slots=True)
class _Prepared:
    """What ``for_poll`` did once for a poll's batches."""

    model: ModelInUse
    predictions: dict[int, Prediction | Exception]  # by message identity
    labelled: dict[tuple[str, str], str]
    messages: frozenset[int]  # the identities of the poll's records


class _PreparedPoll:
    """The handler of one poll's batches, with what ``for_poll`` prepared for them."""

    def __init__(self, handler: ClassifyDemands, prepared: _Prepared) -> None:
        self._handler = handler
        self._prepared = prepared

    async def __call__(self, messages: Sequence[Inbound[Any]]) -> BatchResult:
        return await self._handler._handle(messages, self._prepared)


def _may_see(
    later: Sequence[Inbound[Any]], changed: Set[str], forwarded_labels: str | None
) -> bool:
    """Whether a later batch (another partition's, handled while this one commits) may read
    or change the context of a customer this batch changed: then it waits for this batch's
    commit, as it would have waited before (its context would lack this batch's changes,
    and its own would overwrite them). A label read by its demand is looked up in every
    customer this instance holds, so a batch with one always waits."""
    if not changed:
        return False
    for message in later:
        event = message.event
        if isinstance(event, DemandReceived | CaseEvent):
            customer: str | None = event.customer_ref
        elif isinstance(event, DemandLabelled) and message.topic == forwarded_labels:
            customer = message.key.decode() if message.key else None
        else:
            return True
        if customer in changed:
            return True
    return False


def _predict(model: ModelInUse, demands: list[Inbound[Any]]) -> dict[int, Prediction | Exception]:
    """The demands' predictions (service.predict: one failing text fails alone), by message
    identity."""
    predictions = predict(model, [m.event.text for m in demands])
    return {id(m): p for m, p in zip(demands, predictions, strict=True)}
