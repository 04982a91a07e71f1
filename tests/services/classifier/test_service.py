"""services/classifier/service.py without a broker: a batch's predictions with the per-text
fallback, and a demand judged against its customer's context (the app on the real broker is
test_on_broker.py)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from services.classifier.context import ContextStore
from services.classifier.judgement import Thresholds
from services.classifier.live_model import ModelInUse
from services.classifier.model.text_model import Prediction
from services.classifier.rules import RuleSet
from services.classifier.service import apply_case, classify, predict
from shared.events.classification import ClassificationMethod, DemandType, FailureKind
from tests.support.factories import case_event, demand_received


def _said(text: str) -> Prediction:
    return Prediction(text, 0.9, "value", 0.9, None, 0.0)


class _Model:
    """Predicts each text as its own purpose; fails on "bad"; ``short``: a batch answer one
    prediction short."""

    def __init__(self, *, short: bool = False) -> None:
        self.short = short

    def predict_batch(self, texts: Sequence[str]) -> list[Prediction]:
        if "bad" in texts:
            raise ValueError("bad text")
        return [_said(t) for t in texts][: -1 if self.short else None]

    def predict(self, text: str) -> Prediction:
        if text == "bad":
            raise ValueError("bad text")
        return _said(text)


def _in_use(model: object = None) -> ModelInUse:
    return ModelInUse("v-test", cast(Any, model), RuleSet())


def test_a_failing_text_fails_alone_and_the_others_are_predicted_in_order() -> None:
    got = predict(_in_use(_Model()), ["a", "bad", "c"])
    assert [p.purpose if isinstance(p, Prediction) else "error" for p in got] == [
        "a",
        "error",
        "c",
    ]
    assert isinstance(got[1], ValueError)


def test_a_batch_answer_of_the_wrong_length_is_predicted_text_by_text() -> None:
    got = predict(_in_use(_Model(short=True)), ["a", "b"])
    assert got == [_said("a"), _said("b")]


@pytest.mark.parametrize("texts", [[], ["a"], ["a", "b", "c"]])
def test_a_batch_that_works_is_the_batchs_answer(texts: list[str]) -> None:
    assert predict(_in_use(_Model()), texts) == [_said(t) for t in texts]


_BILLING = Prediction("billing", 0.95, "value", 0.9, None, 0.0)


def test_a_demand_is_judged_within_its_own_sources_context_and_recorded_in_it() -> None:
    store = ContextStore(window=timedelta(days=30))
    overlay = store.overlay()
    at = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
    classified_at = at + timedelta(hours=5)
    # The crm's case K-1, opened for the customer; the first demand is filed on it.
    apply_case(
        case_event(customer_ref="C-1", case_ref="K-1", source="crm", occurred_at=at),
        0,
        overlay,
        classified_at,
    )
    first = demand_received(customer_ref="C-1", source="crm", occurred_at=at, case_ref="K-1")
    chaser = demand_received(customer_ref="C-1", source="crm", occurred_at=at + timedelta(hours=3))
    elsewhere = demand_received(
        customer_ref="C-1", source="web", occurred_at=at + timedelta(hours=4)
    )

    def judged(demand: Any, thresholds: Thresholds | None = None) -> Any:
        return classify(
            demand,
            0,
            _BILLING,
            _in_use(),
            overlay,
            classified_at=classified_at,
            labelled={},
            thresholds=thresholds or Thresholds(),
        )

    opened = judged(first)
    assert (opened.demand_type, opened.method) == (DemandType.VALUE, ClassificationMethod.MODEL)
    assert opened.classified_at == classified_at
    assert opened.model_version == "v-test"

    # The case is open for billing in crm's context: asking again is chasing it.
    chased = judged(chaser)
    assert chased.demand_type is DemandType.FAILURE
    assert chased.failure_kind == FailureKind.PROGRESS_CHASING.value
    assert chased.method is ClassificationMethod.CONTEXT
    assert chased.caused_by is not None
    assert (chased.caused_by.ref, chased.caused_by.source) == ("K-1", "crm")

    # Another source's demand is judged within its own source: crm's open case is not its.
    other = judged(elsewhere)
    assert (other.demand_type, other.caused_by) == (DemandType.VALUE, None)

    # The thresholds given are the ones applied.
    strict = judged(demand_received(source="crm"), Thresholds(review_threshold=0.99))
    assert strict.needs_review
    assert not judged(demand_received(source="crm")).needs_review


def test_a_persons_purpose_given_before_the_demand_is_the_one_the_context_records() -> None:
    overlay = ContextStore(window=timedelta(days=30)).overlay()
    at = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
    apply_case(
        case_event(customer_ref="C-2", case_ref="K-2", source="crm", occurred_at=at), 0, overlay, at
    )
    first = demand_received(customer_ref="C-2", source="crm", occurred_at=at, case_ref="K-2")
    classify(
        first,
        0,
        _BILLING,
        _in_use(),
        overlay,
        classified_at=at,
        labelled={("crm", first.id): "moving-home"},
        thresholds=Thresholds(),
    )
    # The model says billing again: the open case is moving-home's (the person's word).
    again = classify(
        demand_received(customer_ref="C-2", source="crm", occurred_at=at + timedelta(hours=1)),
        0,
        _BILLING,
        _in_use(),
        overlay,
        classified_at=at,
        labelled={},
        thresholds=Thresholds(),
    )
    assert again.caused_by is None
