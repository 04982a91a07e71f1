"""The classifier's logic, called by the Kafka entrypoint (handler.py): predict a batch's
texts, judge each demand against its customer's context and record it there, and apply
case events and people's labels to the context. No Kafka here: the handler routes the
records, encodes what these return and commits; the clock (``now``, ``classified_at``) is
passed in, and every change goes to an overlay that reaches memory only after the commit.
"""

from __future__ import annotations

from datetime import datetime

from services.classifier.context import (
    ContextOverlay,
    apply_case_event,
    apply_label,
    record_demand,
)
from services.classifier.judgement import Judgement, Thresholds, judge
from services.classifier.live_model import ModelInUse
from services.classifier.model.text_model import Prediction
from shared.events import CaseEvent, DemandClassified, DemandLabelled, DemandReceived


def predict(model: ModelInUse, texts: list[str]) -> list[Prediction | Exception]:
    """The model's prediction of each text, in order. If the batch fails, each text is
    predicted alone so that only the failing ones fail (each its exception), within this
    one call: a caller falling back record by record would judge each demand against a
    context without its batch-mates'."""
    try:
        batch: list[Prediction | Exception] = list(model.model.predict_batch(texts))
        if len(batch) != len(texts):
            raise ValueError(f"{len(batch)} predictions for {len(texts)} texts")
        return batch
    except Exception:
        alone: list[Prediction | Exception] = []
        for text in texts:
            try:
                alone.append(model.model.predict(text))
            except Exception as error:
                alone.append(error)
        return alone


def classify(
    demand: DemandReceived,
    partition: int,
    prediction: Prediction,
    model: ModelInUse,
    overlay: ContextOverlay,
    *,
    classified_at: datetime,
    labelled: dict[tuple[str, str], str],
    thresholds: Thresholds,
) -> DemandClassified:
    """The demand judged against its customer's context (``partition`` is its record's),
    as the event to publish; the demand is recorded in that context (in ``overlay``), with
    the purpose a person already gave it (``labelled``, by source and id) if any."""
    state = overlay.state(demand.customer_ref, partition)
    judgement: Judgement = judge(
        demand.text,
        prediction,
        state.as_context(demand.source),  # a demand is judged within its own source
        rules=model.rules,
        now=demand.occurred_at,
        thresholds=thresholds,
    )
    classified: DemandClassified = _VALIDATE_CLASSIFIED(
        {
            "demand": demand,
            "demand_type": judgement.demand_type,
            "failure_kind": judgement.failure_kind,
            "purpose": judgement.purpose,
            "confidence": judgement.confidence,
            "method": judgement.method,
            "model_version": model.version,
            "needs_review": judgement.needs_review,
            "caused_by": (
                judgement.caused_by.model_copy(update={"source": demand.source})
                if judgement.caused_by is not None
                else None
            ),
            "classified_at": classified_at,
        }
    )
    record_demand(
        state,
        demand_id=demand.id,
        # A person's label read before the demand (on any instance) wins in the context.
        purpose=labelled.get((demand.source, demand.id), judgement.purpose),
        occurred_at=demand.occurred_at,
        case_ref=demand.case_ref,
        source=demand.source,
    )
    overlay.update(demand.customer_ref, partition, state, classified_at)
    return classified


def apply_case(event: CaseEvent, partition: int, overlay: ContextOverlay, now: datetime) -> None:
    """The case event applied to its customer's context (``partition`` is its record's)."""
    state = overlay.state(event.customer_ref, partition)
    apply_case_event(state, event)
    overlay.update(event.customer_ref, partition, state, now)


def relabel_context(label: DemandLabelled, overlay: ContextOverlay, now: datetime) -> bool:
    """Apply the label to a context this instance holds; False if it holds none."""
    if label.not_a_demand:
        # Its purpose is only the one the contact was filed under, not a person's word
        # on it: the context keeps what it had (nothing to apply or forward).
        return True
    customer = overlay.customer_of_demand(label.demand_id, label.demand_source)
    partition = overlay.partition_of(customer) if customer else None
    if customer is None or partition is None:
        return False  # the customer lives on another instance, or has left the window
    _relabel(label, customer, partition, overlay, now)
    return True


def relabel_forwarded(
    label: DemandLabelled,
    customer: str | None,
    partition: int,
    overlay: ContextOverlay,
    now: datetime,
) -> None:
    """A label forwarded by the instance that read it, keyed by its customer (``partition``
    is the forwarded record's, so the customer's): only the context learns from it."""
    if customer is None or label.not_a_demand:  # no purpose to apply (relabel_context)
        return
    _relabel(label, customer, partition, overlay, now)


def _relabel(
    label: DemandLabelled, customer: str, partition: int, overlay: ContextOverlay, now: datetime
) -> None:
    state = overlay.state(customer, partition)
    if apply_label(
        state, demand_id=label.demand_id, purpose=label.purpose, source=label.demand_source
    ):
        overlay.update(customer, partition, state, now)


# What DemandClassified(...) validates, called directly: the same validation and the same
# event (fields set, bytes), without BaseModel.__init__'s wrapper around it (3.6-4.1 ->
# 2.3 µs a demand, measured). Bound at import, so a later DemandClassified.model_rebuild
# would not reach it (nothing rebuilds it; test_handler checks, and holds it to the
# constructor).
_VALIDATE_CLASSIFIED = DemandClassified.__pydantic_validator__.validate_python
