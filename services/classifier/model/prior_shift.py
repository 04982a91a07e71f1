"""The value/failure prior of an organisation that nobody has labelled yet, from its
unlabelled demands (issue 11; EVALUATION.md, "Cold start where failure is rare").

Without labels the value/failure head judges as if failure were about half of all demands
(the class-balanced fit, or the shipped seed set's share). Where failure is rare (the issue's
real examples: 7-8%), its false failures then cost more than it gains, and accuracy falls
below always answering "value". The demands themselves say how rare failure is, through the
model's own calls, once those calls are corrected for the model's known error rates:

**Black-box shift estimation** (Lipton, Wang and Smola, "Detecting and correcting for label
shift with black box predictors", ICML 2018), for two classes. Under label shift (failure
more or less common, the words of each class as before), the share of demands the model
calls failure is ``r = tpr q + fpr (1 - q)``, with ``q`` the true failure share and ``tpr``,
``fpr`` the chances that the model calls a failure, and a value demand, failure. Those two
are measured by cross-validation on the training rows (``confusion_rates``), so
``q = (r - fpr) / (tpr - fpr)``. Closed form: no iteration, nothing to converge.

Not the EM of Saerens, Latinne and Decaestecker (2002), which re-weights the model's
probabilities until their mean agrees with the prior: it needs those probabilities to be
calibrated on the new organisation's words, and a model trained on other sectors is not
(measured: it cost 0.4 points at natural shares, 2.8 in one sector). BBSE needs only the
calls, and that the error rates travel.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from services.classifier.model.examples import Example
from services.classifier.model.text_model import ModelSettings, TextModel
from services.classifier.taxonomy import Taxonomy


class FailureScorer(Protocol):
    def failure_probabilities(self, texts: Sequence[str]) -> np.ndarray: ...


@dataclass(frozen=True, slots=True)
class ConfusionRates:
    """How often the model's value/failure calls are failure, per true class, on rows it
    was not trained on."""

    true_positive: float
    """P(called failure | failure)."""
    false_positive: float
    """P(called failure | value)."""
    failures: int
    values: int
    """The held-out rows behind each rate."""


def confusion_rates(
    examples: Sequence[Example],
    taxonomy: Taxonomy | None,
    *,
    general: Sequence[Example] = (),
    settings: ModelSettings | None = None,
    prior: float | None = None,
    folds: int = 3,
    seed: int = 0,
) -> ConfusionRates | None:
    """The recipe's value/failure error rates by ``folds``-fold cross-validation over its
    training rows (``examples`` and ``general``, as ``TextModel.train`` takes them). Folds
    are drawn over the rows' distinct texts (shuffled with ``seed``): a row is held out when
    its text is in the fold, so the copies of a repeated row (people's labels, weighted by
    repetition) are never trained on while one of them is judged; each held text is judged
    once, by its first row, and outside its fold every copy keeps its training weight. Each
    fold's model judges with ``prior`` (None: its own fit's), which must be the prior of the
    model whose calls ``estimate_failure_prior`` counts: the rates belong to that decision
    rule. ``folds`` fits, each on about ``(folds - 1) / folds`` of the texts. None when the
    held-out rows lack a class."""
    own = [e for e in examples if e.text.strip() and e.demand_type]
    wide = [e for e in general if e.text.strip() and e.demand_type]
    first: dict[str, Example] = {}
    for e in [*own, *wide]:
        first.setdefault(e.text, e)
    texts = list(first)
    if folds < 2 or len(texts) < folds:
        return None
    random.Random(seed).shuffle(texts)
    truth: list[bool] = []
    called: list[bool] = []
    for fold in range(folds):
        held = set(texts[fold::folds])
        model = TextModel.train(
            [e for e in own if e.text not in held],
            taxonomy,
            settings=settings,
            general=[e for e in wide if e.text not in held],
        )
        model.set_failure_prior(prior)
        rows = [first[text] for text in texts[fold::folds]]
        probabilities = model.failure_probabilities([e.text for e in rows])
        truth += [e.demand_type == "failure" for e in rows]
        called += (probabilities >= 0.5).tolist()
    is_failure = np.array(truth)
    calls = np.array(called)
    failures, values = int(is_failure.sum()), int((~is_failure).sum())
    if failures == 0 or values == 0:
        return None
    return ConfusionRates(
        float(calls[is_failure].mean()), float(calls[~is_failure].mean()), failures, values
    )


MIN_SEPARATION = 0.2
"""The least ``tpr - fpr`` the correction divides by: below it the calls barely tell failure
from value, and the estimate would mostly be noise divided by a small number (tpr 0.16,
fpr 0.15: a swing of one call in a hundred moves it by a whole 1.0)."""


def estimate_failure_prior(
    model: FailureScorer,
    texts: Sequence[str],
    rates: ConfusionRates,
    *,
    min_texts: int = 30,
) -> float | None:
    """The failure share of ``texts`` (an organisation's unlabelled demands) by black-box
    shift estimation: the share the model calls failure (P(failure) at least 1/2, as
    ``predict_batch`` calls it), corrected by ``rates`` (``confusion_rates``, measured with
    the same prior as ``model`` judges with), bounded to ``[1/(n+2), (n+1)/(n+2)]`` of the n
    texts (a share of 0 or 1 is not a prior). For ``model.set_failure_prior``.

    None with fewer than ``min_texts`` texts, or when the model's calls barely tell failure
    from value (``tpr - fpr`` below ``MIN_SEPARATION``: the correction would divide by
    almost nothing, or flip the sign)."""
    n = len(texts)
    if n < max(min_texts, 1) or rates.true_positive - rates.false_positive < MIN_SEPARATION:
        return None
    called = float((np.asarray(model.failure_probabilities(texts)) >= 0.5).mean())
    share = (called - rates.false_positive) / (rates.true_positive - rates.false_positive)
    return min(max(share, 1 / (n + 2)), (n + 1) / (n + 2))


# --- The prior's sources, and what a model version keeps to estimate it later ----------------

SHIPPED_EXAMPLES = "shipped examples"
"""The prior is the shipped energy seed set's labelled share: says nothing about the
organisation that kept the shipped model, so the demands' estimate replaces it."""
DEMANDS = "demands"
"""The prior was estimated from the organisation's recent unlabelled demands (this module)."""
REPLACEABLE = frozenset({None, SHIPPED_EXAMPLES, DEMANDS})
"""Prior sources the demands' estimate may replace: the balanced fit's own (None), the shipped
examples', and an earlier estimate of its own. Never the metrics service's audited estimate
("estimate") nor the organisation's own labels ("labels")."""


@dataclass(frozen=True, slots=True)
class DemandPrior:
    """When the value/failure prior is estimated from the organisation's demands."""

    min_texts: int = 200
    """The first estimate once this many demands were seen; 0: never estimate."""
    read: int = 5_000
    """The newest demands' texts read for one estimate, at most."""
    every_max: int = 20_000
    """Then again each time the demands seen have doubled, and at least every this many."""

    def due(self, seen_since: int, seen_at_last: int | None) -> bool:
        """Whether enough new demands were seen since the last estimate (``seen_at_last``:
        the demands kept when it was made; None: no estimate yet) to estimate again."""
        if self.min_texts <= 0:
            return False
        if seen_at_last is None:
            return seen_since >= self.min_texts
        return seen_since >= min(max(seen_at_last, self.min_texts), max(self.every_max, 1))


@dataclass(frozen=True, slots=True)
class StoredRates:
    """``ConfusionRates`` as a version keeps them, with the prior they were measured at: the
    model is set back to that prior before each estimate, so one estimate never feeds the
    next (the calls and the rates always belong to the same decision rule)."""

    rates: ConfusionRates
    prior: float | None
    """The fitted prior (None: the balanced fit's own) the rates were measured with."""
    source: str | None = None
    rows: int | None = None
    """Where that fitted prior came from, restored with it."""

    def as_dict(self) -> dict[str, object]:
        return {
            "true_positive": self.rates.true_positive,
            "false_positive": self.rates.false_positive,
            "failures": self.rates.failures,
            "values": self.rates.values,
            "prior": self.prior,
            "prior_source": self.source,
            "prior_rows": self.rows,
        }

    @classmethod
    def from_dict(cls, stored: object) -> StoredRates | None:
        """The rates a version's metadata kept (None: none, or not readable)."""
        if not isinstance(stored, dict):
            return None
        try:
            rates = ConfusionRates(
                float(stored["true_positive"]),
                float(stored["false_positive"]),
                int(stored["failures"]),
                int(stored["values"]),
            )
            prior = stored.get("prior")
            rows = stored.get("prior_rows")
            source = stored.get("prior_source")
            return cls(
                rates,
                None if prior is None else float(prior),
                source if isinstance(source, str) else None,
                rows if isinstance(rows, int) else None,
            )
        except (KeyError, TypeError, ValueError):
            return None


class PriorModel(FailureScorer, Protocol):
    failure_prior: float | None
    failure_prior_source: str | None

    def set_failure_prior(
        self, prior: float | None, *, source: str | None = None, rows: int | None = None
    ) -> None: ...


def apply_demand_prior(
    model: PriorModel, texts: Sequence[str], stored: StoredRates, *, min_texts: int
) -> float | None:
    """Set ``model`` back to the prior its rates were measured at, estimate the failure share
    of ``texts`` from its calls there (``estimate_failure_prior``), and judge with it (source
    ``DEMANDS``, rows: the texts). Returns the share; None (the model left at the rates'
    prior) with fewer than ``min_texts`` texts or calls that do not tell the classes apart."""
    model.set_failure_prior(stored.prior, source=stored.source, rows=stored.rows)
    share = estimate_failure_prior(model, texts, stored.rates, min_texts=max(min_texts, 1))
    if share is not None:
        model.set_failure_prior(share, source=DEMANDS, rows=len(texts))
    return share
