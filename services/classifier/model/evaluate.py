"""How good is a model: accuracy and macro-F1 per head, confusions, throughput, cross-validation."""

from __future__ import annotations

import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import GroupKFold, StratifiedKFold

from services.classifier.model.examples import Example
from services.classifier.model.text_model import ModelSettings, Prediction, TextModel
from services.classifier.taxonomy import Taxonomy
from shared.estimates import AuditPair, ShareEstimate, estimate_share

THROUGHPUT_BATCH = 1_000


@dataclass(frozen=True, slots=True)
class HeadScores:
    accuracy: float
    macro_f1: float
    count: int
    confused: tuple[tuple[str, str, int], ...] = ()
    """(true label, predicted label, times), most frequent first."""


@dataclass(frozen=True, slots=True)
class Evaluation:
    heads: dict[str, HeadScores] = field(default_factory=dict)
    throughput_per_s: float | None = None

    def as_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            name: {**asdict(s), "confused": [list(c) for c in s.confused]}
            for name, s in self.heads.items()
        }
        result["throughput_per_s"] = self.throughput_per_s
        return result


def score_head(
    truth: Sequence[str], predicted: Sequence[str], top_confusions: int = 5
) -> HeadScores:
    """Labels the model never saw simply never match, so they count as errors."""
    if not truth:
        return HeadScores(accuracy=0.0, macro_f1=0.0, count=0)
    confusions = Counter((t, p) for t, p in zip(truth, predicted, strict=True) if t != p)
    return HeadScores(
        accuracy=float(accuracy_score(truth, predicted)),
        # Averaged over the labels in the evaluation data, so an unseen label scores 0 there.
        macro_f1=float(
            f1_score(truth, predicted, labels=sorted(set(truth)), average="macro", zero_division=0)
        ),
        count=len(truth),
        confused=tuple((t, p, n) for (t, p), n in confusions.most_common(top_confusions)),
    )


def measure_throughput(
    model: TextModel, texts: Sequence[str], batch: int = THROUGHPUT_BATCH
) -> float:
    """Demands per second for one batch prediction of ``batch`` texts (texts repeated to fill)."""
    if not texts:
        return 0.0
    sample = [texts[i % len(texts)] for i in range(batch)]
    model.predict_batch(sample[:10])  # warm up lazily built state outside the timing
    started = time.perf_counter()
    model.predict_batch(sample)
    return batch / (time.perf_counter() - started)


def evaluate(
    model: TextModel, examples: Sequence[Example], *, throughput: bool = True
) -> Evaluation:
    texts = [e.text for e in examples]
    predictions = model.predict_batch(texts)
    return Evaluation(
        heads=score_predictions(examples, predictions),
        throughput_per_s=measure_throughput(model, texts) if throughput else None,
    )


def score_predictions(
    examples: Sequence[Example], predictions: Sequence[Prediction]
) -> dict[str, HeadScores]:
    pairs = list(zip(examples, predictions, strict=True))
    heads = {
        "demand_type": score_head(
            [e.demand_type for e, _ in pairs if e.demand_type],
            [p.demand_type for e, p in pairs if e.demand_type],
        ),
        "purpose": score_head(
            [e.purpose for e, _ in pairs if e.purpose],
            [p.purpose for e, p in pairs if e.purpose],
        ),
    }
    # failure_kind is judged on labelled failure rows, as if the demand type were known.
    kinds = [
        (e.failure_kind, p.failure_kind or "")
        for e, p in pairs
        if e.demand_type == "failure" and e.failure_kind
    ]
    if kinds:
        heads["failure_kind"] = score_head([t for t, _ in kinds], [p for _, p in kinds])
    return heads


@dataclass(frozen=True, slots=True)
class FailureShare:
    """The share of failure demand among labelled rows: the truth, the model's, and (with an
    audit) the prediction-powered estimate and its 95% interval."""

    true: float
    predicted: float
    rows: int
    estimate: ShareEstimate | None = None

    def as_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {"true": self.true, "predicted": self.predicted}
        if self.estimate is not None:
            result |= {
                "estimate": self.estimate.estimate,
                "ci_low": self.estimate.ci_low,
                "ci_high": self.estimate.ci_high,
                "audited": self.estimate.audited,
                "status": self.estimate.status,
            }
        return result


def audit_draw(rows: int, audit: int, seed: int) -> list[int]:
    """The positions of the ``audit`` rows (of ``rows`` labelled value or failure, in file
    order) drawn at random with ``seed`` as the audit sample: ``failure_share``'s, and the
    rows whose labels `evaluate --audit` also takes as the organisation's prior."""
    return random.Random(seed).sample(range(rows), min(audit, rows))


def failure_share(
    truth: Sequence[str],
    predicted: Sequence[str],
    *,
    audit: int = 0,
    seed: int = 0,
) -> FailureShare | None:
    """True and predicted failure shares over rows labelled value or failure; with ``audit``,
    also the estimate from ``audit`` rows drawn at random (with ``seed``) as if people had
    checked them, the others counting as unlabelled (``shared.estimates.estimate_share``)."""
    pairs = [
        (int(t == "failure"), int(p == "failure"))
        for t, p in zip(truth, predicted, strict=True)
        if t in ("value", "failure")
    ]
    if not pairs:
        return None
    machine_failures = sum(m for _, m in pairs)
    estimate = None
    if audit > 0:
        drawn = audit_draw(len(pairs), audit, seed)
        estimate = estimate_share(
            len(pairs),
            machine_failures,
            [AuditPair(machine=pairs[i][1], person=pairs[i][0]) for i in drawn],
        )
    return FailureShare(
        true=sum(t for t, _ in pairs) / len(pairs),
        predicted=machine_failures / len(pairs),
        rows=len(pairs),
        estimate=estimate,
    )


def _mean_scores(folds: list[dict[str, HeadScores]]) -> dict[str, HeadScores]:
    merged: dict[str, list[HeadScores]] = defaultdict(list)
    for fold in folds:
        for name, scores in fold.items():
            merged[name].append(scores)
    return {
        name: HeadScores(
            accuracy=sum(s.accuracy for s in runs) / len(runs),
            macro_f1=sum(s.macro_f1 for s in runs) / len(runs),
            count=sum(s.count for s in runs),
        )
        for name, runs in merged.items()
    }


def _train_and_score(
    train: Sequence[Example],
    test: Sequence[Example],
    taxonomy: Taxonomy | None,
    settings: ModelSettings | None,
    general: Sequence[Example] = (),
) -> dict[str, HeadScores]:
    model = TextModel.train(train, taxonomy, settings=settings, general=general)
    return score_predictions(test, model.predict_batch([e.text for e in test]))


def cross_validate(
    examples: Sequence[Example],
    folds: int = 5,
    *,
    taxonomy: Taxonomy | None = None,
    settings: ModelSettings | None = None,
    seed: int = 0,
    on_fold: Callable[[int], None] | None = None,
    general: Sequence[Example] = (),
) -> dict[str, HeadScores]:
    """Stratified k-fold by purpose; mean accuracy and macro-F1 per head over the folds
    (``general`` rows teach value/failure in every fold)."""
    rows = list(examples)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    results = []
    for number, (train, test) in enumerate(splitter.split(rows, [e.purpose for e in rows])):
        results.append(
            _train_and_score(
                [rows[i] for i in train], [rows[i] for i in test], taxonomy, settings, general
            )
        )
        if on_fold:
            on_fold(number)
    return _mean_scores(results)


def leave_purposes_out(
    examples: Sequence[Example], folds: int = 5, *, settings: ModelSettings | None = None
) -> HeadScores:
    """demand_type on purposes the model never trained on: a proxy for an unseen domain.

    No taxonomy is passed, so the held-out purposes' own examples cannot leak in.
    """
    rows = list(examples)
    groups = [e.purpose for e in rows]
    splitter = GroupKFold(n_splits=min(folds, len(set(groups))))
    results = [
        {
            "demand_type": _train_and_score(
                [rows[i] for i in train], [rows[i] for i in test], None, settings
            )["demand_type"]
        }
        for train, test in splitter.split(rows, groups=groups)
    ]
    return _mean_scores(results)["demand_type"]


def few_shot(
    examples: Sequence[Example],
    per_purpose: int = 10,
    *,
    taxonomy: Taxonomy | None = None,
    settings: ModelSettings | None = None,
    seed: int = 0,
    general: Sequence[Example] = (),
) -> dict[str, HeadScores]:
    """Train on ``per_purpose`` examples of each purpose (and ``general`` rows for
    value/failure), test on all the rest."""
    by_purpose: dict[str, list[Example]] = defaultdict(list)
    for example in examples:
        by_purpose[example.purpose or ""].append(example)
    shuffler = random.Random(seed)
    train: list[Example] = []
    test: list[Example] = []
    for rows in by_purpose.values():
        rows = rows[:]
        shuffler.shuffle(rows)
        train += rows[:per_purpose]
        test += rows[per_purpose:]
    return _train_and_score(train, test, taxonomy, settings, general)
