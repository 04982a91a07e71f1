"""The failure prior of an unlabelled organisation by black-box shift estimation."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from services.classifier.model.examples import Example
from services.classifier.model.prior_shift import (
    ConfusionRates,
    confusion_rates,
    estimate_failure_prior,
)
from services.classifier.model.text_model import ModelSettings, TextModel

NO_EMBEDDINGS = ModelSettings(embedding_weight=0.0, purpose_embedding_weight=0.0)


class KnownErrors:
    """Calls 9 in 10 failures failure ("f<i>", all but i % 10 == 0) and 1 in 10 value
    demands failure ("v<i>", i % 10 == 0): tpr 0.9, fpr 0.1. A third of them sit at the
    boundary: a call at P(failure) exactly 1/2, no call at 0.4999 (as ``predict_batch``)."""

    def failure_probabilities(self, texts: Sequence[str]) -> np.ndarray:
        def called(text: str) -> bool:
            kind, number = text[0], int(text[1:])
            return (number % 10 != 0) if kind == "f" else (number % 10 == 0)

        def probability(text: str) -> float:
            edge = int(text[1:]) % 3 == 0
            if called(text):
                return 0.5 if edge else 0.8
            return 0.4999 if edge else 0.2

        return np.array([probability(t) for t in texts])


RATES = ConfusionRates(true_positive=0.9, false_positive=0.1, failures=500, values=500)


def demands(failures: int, values: int) -> list[str]:
    return [f"f{i}" for i in range(failures)] + [f"v{i}" for i in range(values)]


def test_a_known_rare_prior_is_recovered_from_the_calls_and_the_error_rates() -> None:
    texts = demands(70, 930)  # 7% failure; 63 + 93 called failure: 15.6%

    estimate = estimate_failure_prior(KnownErrors(), texts, RATES)

    assert estimate == pytest.approx(0.07, abs=1e-9)


def test_a_common_prior_is_recovered_too() -> None:
    assert estimate_failure_prior(KnownErrors(), demands(600, 400), RATES) == pytest.approx(0.6)


def test_the_estimate_is_bounded_inside_zero_and_one() -> None:
    # Every text called value: r = 0, below fpr, so the raw correction is negative.
    texts = [f"v{i}" for i in range(1, 100) if i % 10 != 0]

    assert estimate_failure_prior(KnownErrors(), texts, RATES) == 1 / (len(texts) + 2)
    everything = [f"f{i}" for i in range(1, 100) if i % 10 != 0]
    assert estimate_failure_prior(KnownErrors(), everything, RATES) == (len(everything) + 1) / (
        len(everything) + 2
    )


def test_no_estimate_from_too_few_texts_or_calls_that_do_not_separate() -> None:
    assert estimate_failure_prior(KnownErrors(), demands(3, 20), RATES) is None
    assert estimate_failure_prior(KnownErrors(), demands(3, 20), RATES, min_texts=10) is not None
    blind = ConfusionRates(true_positive=0.3, false_positive=0.3, failures=10, values=10)
    assert estimate_failure_prior(KnownErrors(), demands(70, 930), blind) is None


def test_no_estimate_when_the_calls_barely_separate_the_classes() -> None:
    # tpr 0.16, fpr 0.15: one call in a hundred would move the estimate by 1.0.
    barely = ConfusionRates(true_positive=0.16, false_positive=0.15, failures=100, values=100)
    assert estimate_failure_prior(KnownErrors(), demands(70, 930), barely) is None
    below = ConfusionRates(true_positive=0.29, false_positive=0.1, failures=100, values=100)
    assert estimate_failure_prior(KnownErrors(), demands(70, 930), below) is None
    at_floor = ConfusionRates(true_positive=0.35, false_positive=0.1, failures=100, values=100)
    assert estimate_failure_prior(KnownErrors(), demands(70, 930), at_floor) is not None


def test_confusion_rates_are_measured_on_held_out_rows_with_the_given_prior(
    examples: list[Example],
) -> None:
    balanced = confusion_rates(examples, None, settings=NO_EMBEDDINGS)
    assert balanced is not None
    assert (balanced.failures, balanced.values) == (15, 15)  # every row held out once
    assert balanced.true_positive > balanced.false_positive

    # The rates belong to a decision rule: judged as if failure were rare, fewer calls are
    # failure, of either class.
    rare = confusion_rates(examples, None, settings=NO_EMBEDDINGS, prior=0.001)
    assert rare is not None
    assert rare.true_positive < balanced.true_positive
    assert rare.false_positive <= balanced.false_positive


def test_no_rates_without_both_classes(examples: list[Example]) -> None:
    values = [e for e in examples if e.demand_type == "value"]

    assert confusion_rates(values, None, settings=NO_EMBEDDINGS) is None


class Memorised:
    """A stub fold model: calls failure exactly the texts it was trained on."""

    def __init__(self, trained: set[str]) -> None:
        self.trained = trained

    def set_failure_prior(self, prior: float | None) -> None:
        pass

    def failure_probabilities(self, texts: Sequence[str]) -> np.ndarray:
        return np.array([1.0 if t in self.trained else 0.0 for t in texts])


def test_no_copy_of_a_held_out_text_is_in_its_folds_training_rows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folds: list[list[str]] = []

    def train(
        own: Sequence[Example],
        taxonomy: object,
        *,
        settings: object = None,
        general: Sequence[Example] = (),
    ) -> Memorised:
        trained = [e.text for e in [*own, *general]]
        folds.append(trained)
        return Memorised(set(trained))

    monkeypatch.setattr(TextModel, "train", train)
    labels = [Example(f"label {i}", "billing", "failure" if i % 2 else "value") for i in range(20)]
    general = [Example(f"corpus {i}", None, "failure" if i % 3 else "value") for i in range(60)]

    # People's labels, 5 copies each as train_model weights them.
    rates = confusion_rates(labels * 5, None, general=general)

    assert rates is not None
    assert rates.failures + rates.values == 80  # each distinct text judged once
    # The memorising stub calls failure only what its fold trained on: nothing held out.
    assert rates.true_positive == 0.0
    assert rates.false_positive == 0.0
    assert len(folds) == 3
    # Outside its fold a label keeps all 5 copies (its training weight).
    for trained in folds:
        counts = {t: trained.count(t) for t in trained if t.startswith("label")}
        assert set(counts.values()) == {5}
