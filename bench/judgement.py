"""Judgement that travels: value/failure and purposes for organisations the model has not
seen, from few labels, and how honest the failure-share interval is.

Run: `.venv/bin/python -m bench judgement` (pinned to one core, about 6-7 minutes idle, 12
at load 4.5; prints markdown tables for `services/classifier/model/EVALUATION.md`). On our own
data only:

- **leave-one-sector-out**: for each sector of the general corpus, the shipped recipe (seed
  set + shipped taxonomy + the corpus *without that sector*; without the seed set too when
  the sector is energy) judges that sector's rows, against always answering its majority;
  the failure share without an audit and corrected by a random audit of 100 and 200;
- **coverage** of the 95% interval over many random audit draws;
- **few-shot**: 10 labelled rows per purpose of the seed set and of the council examples;
- **the value/failure prior**: organisations where failure is rare (thinned), and the
  production case of few-shot labels plus a random audit of 100, each prior source compared;
- **cold start where failure is rare**: no labels of the organisation (each sector's
  leave-one-sector-out model; each data set's taxonomy alone), its rows thinned to a failure
  share of 0.07, 0.10 and 0.25 and at its natural share, against always-majority; and with
  a prior estimated from those unlabelled rows (EM, BBSE; a fixed 0.3 for comparison);
- **learning curve**: 0, 5, 10, 20, 40 labels per purpose (0: the taxonomy's examples only);
- **full training set**: 5-fold cross-validation of the seed set and the council set;
- **throughput**: one batch of 1,000 texts on one core.

Each model figure is given with and without the sentence embeddings. Audits of real
organisations are drawn from thousands of demands, but a corpus sector has a few hundred
rows, so audit figures are computed on populations of ``POPULATION`` demands resampled from
the sector's (person, machine) pairs: the same error structure at a realistic size (an audit
of 200 out of 240 rows would be nearly a census). Set DEMANDSCOPE_BENCH_JUDGEMENT_QUICK=1
for fewer draws and seeds (a smoke run), or DEMANDSCOPE_BENCH_JUDGEMENT_CHOICES=1 for one
"choices measured" row of the shipped settings only (leave-one-sector-out mean and worst,
few-shot on both sets, 5-fold; about 2 minutes), the row used to compare a change.
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from scipy.special import expit, logit  # type: ignore[import-untyped]
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from services.classifier.config import GENERAL_CORPUS, SEED_EXAMPLES, SHIPPED_DATA, TAXONOMY
from services.classifier.model.evaluate import cross_validate, measure_throughput
from services.classifier.model.examples import AUDIT, Example, read_examples_csv
from services.classifier.model.prior_shift import confusion_rates, estimate_failure_prior
from services.classifier.model.text_model import ModelSettings, TextModel, failure_prior_of
from services.classifier.taxonomy import Taxonomy, load_taxonomy
from services.classifier.training import general_rows
from shared.estimates import AuditPair, estimate_share

QUICK = os.environ.get("DEMANDSCOPE_BENCH_JUDGEMENT_QUICK") == "1"
CHOICES = os.environ.get("DEMANDSCOPE_BENCH_JUDGEMENT_CHOICES") == "1"
COUNCIL_TAXONOMY = SHIPPED_DATA / "taxonomies" / "council_housing_repairs.yaml"
COUNCIL_EXAMPLES = SHIPPED_DATA / "taxonomies" / "council_housing_repairs_examples.csv"
AUDITS = (100, 200)
RARE_SHARES = (0.25, 0.10)
RARE_OWN_ROWS = 60
AUDIT_ROWS = 100  # the production case's random audit, drawn from the test rows
AUDITED_SHARES: tuple[float | None, ...] = (None, *RARE_SHARES)  # None: the data set's own
DRAWS = 50 if QUICK else 250  # audit draws per sector and audit size
POPULATION = 5_000
SEEDS = (0,) if QUICK else (0, 1, 2)
CURVE = (0, 5, 10, 20, 40)
VARIANTS: dict[str, ModelSettings] = {
    "with embeddings": ModelSettings(),
    "without embeddings": ModelSettings(embedding_weight=0.0, purpose_embedding_weight=0.0),
}
DEFAULT = "with embeddings"
# Sectors of the corpus that are the same kind of organisation as a data set, left out of
# the corpus when that data set plays "an organisation we have not seen".
ENERGY_WORDS = ("energy", "utilit")
COUNCIL_WORDS = ("council", "housing")

err = Console(stderr=True)


@dataclass(frozen=True, slots=True)
class Dataset:
    name: str
    taxonomy: Taxonomy
    rows: list[Example]
    sector_words: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Data:
    corpus: list[Example]
    seed: Dataset
    council: Dataset | None

    @property
    def sectors(self) -> list[str]:
        return sorted({e.sector or "" for e in self.corpus})

    def corpus_for(self, dataset: Dataset, *, same_kind: bool) -> list[Example]:
        """The general corpus to train with when ``dataset`` is the organisation: never
        its own rows (the council set holds the corpus's housing repairs rows), and without
        the sectors of its kind unless ``same_kind``."""
        own = {e.text for e in dataset.rows}
        return [
            e
            for e in self.corpus
            if e.text not in own
            and (same_kind or not any(w in (e.sector or "") for w in dataset.sector_words))
        ]


def load_data() -> Data:
    corpus = general_rows(GENERAL_CORPUS)
    seed = Dataset(
        "seed set (energy)",
        load_taxonomy(TAXONOMY),
        [e for e in read_examples_csv(SEED_EXAMPLES).examples if e.purpose and e.demand_type],
        ENERGY_WORDS,
    )
    council = None
    if COUNCIL_TAXONOMY.is_file() and COUNCIL_EXAMPLES.is_file():
        taxonomy = load_taxonomy(COUNCIL_TAXONOMY)
        # The shipped council examples (10 per purpose) and the corpus's housing repairs
        # rows (the same purposes): about 30 labelled rows per purpose.
        housing = [
            e
            for e in read_examples_csv(GENERAL_CORPUS).examples
            if e.sector == "housing repairs" and e.purpose in taxonomy.purpose_slugs
        ]
        council = Dataset(
            "council housing repairs",
            taxonomy,
            [
                e
                for e in [*read_examples_csv(COUNCIL_EXAMPLES).examples, *housing]
                if e.purpose and e.demand_type
            ],
            COUNCIL_WORDS,
        )
    return Data(corpus=corpus, seed=seed, council=council)


# -- leave one sector out -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SectorResult:
    sector: str
    rows: int
    majority: float
    accuracy: float
    true_share: float
    predicted_share: float
    pairs: list[tuple[int, int]]  # (person, machine), 1 = failure


@dataclass(frozen=True, slots=True)
class SectorFit:
    """One leave-one-sector-out fit: the model, the sector's rows it judged, and what it was
    trained on."""

    sector: str
    model: TextModel
    test: list[Example]
    own: Sequence[Example]
    general: list[Example]


def _binary(labels: Iterable[str | None]) -> list[int]:
    return [int(label == "failure") for label in labels]


def leave_one_sector_out(
    data: Data,
    settings: ModelSettings,
    tick: Callable[[str], None],
    *,
    on_model: Callable[[SectorFit], None] | None = None,
) -> list[SectorResult]:
    """Each corpus sector judged by the shipped recipe trained without it; ``on_model``
    sees each fit too, so that other measurements of the same cold start need no fit of
    their own."""
    results = []
    for sector in data.sectors:
        tick(f"leave out {sector}")
        general = [e for e in data.corpus if e.sector != sector]
        energy = any(w in sector for w in ENERGY_WORDS)
        own = [] if energy else data.seed.rows
        model = TextModel.train(own, data.seed.taxonomy, settings=settings, general=general)
        test = [e for e in data.corpus if e.sector == sector]
        if on_model is not None:
            on_model(SectorFit(sector, model, test, own, general))
        truth = _binary(e.demand_type for e in test)
        machine = _binary(p.demand_type for p in model.predict_batch([e.text for e in test]))
        share = sum(truth) / len(truth)
        results.append(
            SectorResult(
                sector=sector,
                rows=len(test),
                majority=max(share, 1 - share),
                accuracy=sum(t == m for t, m in zip(truth, machine, strict=True)) / len(test),
                true_share=share,
                predicted_share=sum(machine) / len(machine),
                pairs=list(zip(truth, machine, strict=True)),
            )
        )
    return results


@dataclass
class AuditFigures:
    errors: list[float] = field(default_factory=list)
    half_widths: list[float] = field(default_factory=list)
    covered: list[bool] = field(default_factory=list)

    def add(self, truth: float, estimate: float, low: float, high: float) -> None:
        self.errors.append(abs(estimate - truth))
        self.half_widths.append((high - low) / 2)
        self.covered.append(low <= truth <= high)

    @property
    def coverage(self) -> float:
        return sum(self.covered) / len(self.covered) if self.covered else float("nan")


def simulate_audits(
    pairs: Sequence[tuple[int, int]],
    audit: int,
    draws: int,
    rng: np.random.Generator,
    population: int | None = POPULATION,
) -> AuditFigures:
    """Each draw: a population (resampled from ``pairs`` to ``population`` demands, or the
    pairs themselves when None), a random audit of ``audit`` of them without replacement, and
    the estimate of ``shared.estimates.estimate_share`` against the population's true share."""
    base = np.asarray(pairs, dtype=np.int64)
    figures = AuditFigures()
    for _ in range(draws):
        rows = base if population is None else base[rng.integers(0, len(base), population)]
        drawn = rng.choice(len(rows), size=min(audit, len(rows)), replace=False)
        result = estimate_share(
            len(rows),
            int(rows[:, 1].sum()),
            [AuditPair(machine=int(rows[i, 1]), person=int(rows[i, 0])) for i in drawn],
        )
        assert result.estimate is not None
        assert result.ci_low is not None
        assert result.ci_high is not None
        figures.add(float(rows[:, 0].mean()), result.estimate, result.ci_low, result.ci_high)
    return figures


# -- few labels -----------------------------------------------------------------------------


def by_purpose(rows: Sequence[Example], seed: int) -> dict[str, list[Example]]:
    grouped: dict[str, list[Example]] = defaultdict(list)
    for row in rows:
        grouped[row.purpose or ""].append(row)
    shuffler = random.Random(seed)
    for purpose in sorted(grouped):
        shuffler.shuffle(grouped[purpose])
    return grouped


@dataclass(frozen=True, slots=True)
class Scores:
    purpose: float
    demand_type: float
    share_error: float


def score(model: TextModel, test: Sequence[Example]) -> Scores:
    predictions = model.predict_batch([e.text for e in test])
    truth = _binary(e.demand_type for e in test)
    machine = _binary(p.demand_type for p in predictions)
    return Scores(
        purpose=sum(p.purpose == e.purpose for p, e in zip(predictions, test, strict=True))
        / len(test),
        demand_type=sum(t == m for t, m in zip(truth, machine, strict=True)) / len(test),
        share_error=abs(sum(machine) - sum(truth)) / len(test),
    )


def few_shot(
    dataset: Dataset,
    general: Sequence[Example],
    per_purpose: int,
    settings: ModelSettings,
    seed: int,
) -> Scores:
    """Train on ``per_purpose`` rows of each purpose, test on all the rest."""
    train: list[Example] = []
    test: list[Example] = []
    for rows in by_purpose(dataset.rows, seed).values():
        train += rows[:per_purpose]
        test += rows[per_purpose:]
    model = TextModel.train(train, dataset.taxonomy, settings=settings, general=general)
    return score(model, test)


def learning_curve(
    dataset: Dataset,
    general: Sequence[Example],
    settings: ModelSettings,
    seed: int,
    tick: Callable[[str], None],
) -> dict[int, Scores]:
    """One fixed test set (30% of each purpose); 0..40 training rows per purpose from the
    other 70% (all of it where a purpose has fewer)."""
    pools: list[list[Example]] = []
    test: list[Example] = []
    for rows in by_purpose(dataset.rows, seed).values():
        cut = max(1, round(len(rows) * 0.3))
        test += rows[:cut]
        pools.append(rows[cut:])
    curve = {}
    for k in CURVE:
        tick(f"{dataset.name}: {k} per purpose")
        train = [row for pool in pools for row in pool[:k]]
        model = TextModel.train(train, dataset.taxonomy, settings=settings, general=general)
        curve[k] = score(model, test)
    return curve


# -- organisations where failure is rare ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class RareResult:
    group: str  # "corpus sectors" or the data set's name
    aimed_share: float
    true_share: float  # of the test rows
    majority: float
    balanced: float  # accuracy with the class-balanced prior (1/2)
    own_prior: float  # accuracy with the organisation's labelled share as the prior (shipped)


def thinned(rows: Sequence[Example], share: float, rng: random.Random) -> list[Example]:
    """Every value row and as many failure rows, drawn at random, as make ``share`` failure:
    the same organisation's words with failure rarer than our corpus has it."""
    return [rows[i] for i in thinned_positions([e.demand_type for e in rows], share, rng)]


def thinned_positions(labels: Sequence[str | None], share: float, rng: random.Random) -> list[int]:
    """``thinned``'s rows as positions in ``labels`` (the same draws from ``rng``)."""
    values = [i for i, label in enumerate(labels) if label != "failure"]
    failures = [i for i, label in enumerate(labels) if label == "failure"]
    wanted = min(len(failures), round(share / (1 - share) * len(values)))
    return values + rng.sample(failures, wanted)


def _rare_result(
    group: str,
    share: float,
    own: Sequence[Example],
    test: Sequence[Example],
    taxonomy: Taxonomy,
    general: Sequence[Example],
) -> RareResult:
    model = TextModel.train(own, taxonomy, settings=VARIANTS[DEFAULT], general=general)
    if model.failure_prior is None:  # the "own share" column would silently be "balanced"
        raise RuntimeError(f"{len(own)} own rows: fewer than own_prior_min_rows")
    texts = [e.text for e in test]
    truth = _binary(e.demand_type for e in test)
    accuracy = []
    for prior in (model.failure_prior, None):  # shipped, then the fit's own (about 1/2)
        model.set_failure_prior(prior)
        machine = _binary(p.demand_type for p in model.predict_batch(texts))
        accuracy.append(sum(t == m for t, m in zip(truth, machine, strict=True)) / len(test))
    true_share = sum(truth) / len(truth)
    return RareResult(
        group, share, true_share, max(true_share, 1 - true_share), accuracy[1], accuracy[0]
    )


def rare_failure(data: Data, tick: Callable[[str], None]) -> list[RareResult]:
    """Organisations whose failure share is RARE_SHARES: each corpus sector (its first
    RARE_OWN_ROWS rows, shuffled, as its labels; the corpus without it) and each data set (10
    labelled rows per purpose), thinned to that share; tested on the rest."""
    results = []
    for share in RARE_SHARES:
        for seed in SEEDS[:2]:
            for sector in data.sectors:
                tick(f"rare failure {share}: {sector}")
                rng = random.Random(seed)
                pool = thinned([e for e in data.corpus if e.sector == sector], share, rng)
                rng.shuffle(pool)
                general = [e for e in data.corpus if e.sector != sector]
                own, rest = pool[:RARE_OWN_ROWS], pool[RARE_OWN_ROWS:]
                results.append(
                    _rare_result("corpus sectors", share, own, rest, data.seed.taxonomy, general)
                )
        for dataset in (d for d in (data.seed, data.council) if d is not None):
            for seed in SEEDS:
                tick(f"rare failure {share}: {dataset.name}")
                train: list[Example] = []
                test: list[Example] = []
                pool = thinned(dataset.rows, share, random.Random(seed))
                for rows in by_purpose(pool, seed).values():
                    train += rows[:10]
                    test += rows[10:]
                general = data.corpus_for(dataset, same_kind=False)
                results.append(
                    _rare_result(dataset.name, share, train, test, dataset.taxonomy, general)
                )
    return results


@dataclass(frozen=True, slots=True)
class AuditedResult:
    group: str  # the data set's name
    aimed_share: float | None  # None: the data set's own share
    audit_rows: int
    test_rows: int
    true_share: float  # of the test rows
    labels_share: float  # Laplace-smoothed share of every own row (few-shot and audit)
    audit_share: float  # Laplace-smoothed share of the audit rows
    majority: float
    balanced: float  # accuracy with the class-balanced prior (about 1/2)
    labels_prior: float  # ... with every own row's share as the prior (shipped)
    audit_prior: float  # ... with the uniformly drawn audit's share as the prior (not shipped)


def audited_few_shot(
    dataset: Dataset, share: float | None, seed: int, general: Sequence[Example]
) -> AuditedResult:
    """The production case: 10 labelled rows per purpose (drawn per purpose, so not the
    organisation's share) and a random audit of AUDIT_ROWS of the other rows (half of them
    where fewer than twice as many are left), which teaches too; tested on the rest. One fit,
    then the three priors (only the intercept moves)."""
    pool = (
        list(dataset.rows) if share is None else thinned(dataset.rows, share, random.Random(seed))
    )
    few: list[Example] = []
    rest: list[Example] = []
    for rows in by_purpose(pool, seed).values():
        few += rows[:10]
        rest += rows[10:]
    drawn = set(random.Random(seed).sample(range(len(rest)), min(AUDIT_ROWS, len(rest) // 2)))
    audit = [replace(rest[i], reason=AUDIT) for i in sorted(drawn)]
    test = [e for i, e in enumerate(rest) if i not in drawn]
    model = TextModel.train(
        [*few, *audit], dataset.taxonomy, settings=VARIANTS[DEFAULT], general=general
    )
    from_labels = failure_prior_of([*few, *audit], 1)
    # The audit's own share, as if it were a simple random sample (here it is one; the
    # metrics service's audit is not: docs/services/classifier.md), the same smoothing.
    from_audit = failure_prior_of(audit, 1)
    assert from_labels is not None
    assert from_audit is not None
    shipped = model.failure_prior_source, model.failure_prior
    expected = ("labels", from_labels.share)
    if shipped != expected:  # column (b) must be what training does
        raise RuntimeError(f"the fit chose prior {shipped}, the bench expected {expected}")
    texts = [e.text for e in test]
    truth = _binary(e.demand_type for e in test)
    accuracy = []
    for prior in (None, from_labels.share, from_audit.share):
        model.set_failure_prior(prior)
        machine = _binary(p.demand_type for p in model.predict_batch(texts))
        accuracy.append(sum(t == m for t, m in zip(truth, machine, strict=True)) / len(test))
    true_share = sum(truth) / len(truth)
    return AuditedResult(
        dataset.name,
        share,
        len(audit),
        len(test),
        true_share,
        from_labels.share,
        from_audit.share,
        max(true_share, 1 - true_share),
        *accuracy,
    )


def audited_failure(data: Data, tick: Callable[[str], None]) -> list[AuditedResult]:
    results = []
    for share in AUDITED_SHARES:
        for dataset in (d for d in (data.seed, data.council) if d is not None):
            general = data.corpus_for(dataset, same_kind=False)
            for seed in SEEDS:
                tick(f"few-shot + audit {share or 'own'}: {dataset.name}")
                results.append(audited_few_shot(dataset, share, seed, general))
    return results


# -- cold start where failure is rare ------------------------------------------------------

COLD_SHARES: tuple[float | None, ...] = (0.07, 0.10, 0.25, None)  # None: the natural share


@dataclass(frozen=True, slots=True)
class ColdRun:
    """One organisation at cold start (no label of its own), thinned to one failure share."""

    group: str  # "corpus sectors" or the data set's name
    organisation: str  # the sector, or the data set's name
    aimed_share: float | None  # None: its natural share
    seed: int | None  # the thinning's seed; None at the natural share (nothing drawn)
    rows: int
    true_share: float
    predicted_share: float
    accuracy: float

    @property
    def majority(self) -> float:
        return max(self.true_share, 1 - self.true_share)

    @property
    def margin(self) -> float:
        return self.accuracy - self.majority


def cold_runs(
    group: str,
    organisation: str,
    rows: Sequence[Example],
    failure: np.ndarray,
    adjust: Callable[[np.ndarray], np.ndarray] | None = None,
) -> list[ColdRun]:
    """``rows`` judged by their P(failure) ``failure`` (from a model that saw none of them)
    at each of COLD_SHARES: SEEDS thinnings each (``thinned``), the natural share once. The
    model is the same at every share, so one prediction serves them all. ``adjust``, when
    given, maps one thinned set's probabilities to new ones (a prior estimated on those
    very rows, as the service could on its recent demands)."""
    labels = [e.demand_type for e in rows]
    runs = []
    for share in COLD_SHARES:
        for seed in (None,) if share is None else SEEDS:
            positions = (
                list(range(len(rows)))
                if share is None or seed is None
                else thinned_positions(labels, share, random.Random(seed))
            )
            truth = np.array([labels[i] == "failure" for i in positions])
            probabilities = failure[positions] if adjust is None else adjust(failure[positions])
            # predict_batch's argmax: "failure" sorts before "value", so a tie is failure
            machine = probabilities >= 0.5
            runs.append(
                ColdRun(
                    group,
                    organisation,
                    share,
                    seed,
                    len(positions),
                    float(truth.mean()),
                    float(machine.mean()),
                    float((truth == machine).mean()),
                )
            )
    return runs


CANDIDATES = ("shipped", "(a) EM", "(b) BBSE", "(c) fixed 0.3")
"""The prior at cold start: as shipped (the fit's, or the seed set's share), and three
candidates from the organisation's unlabelled demands (EVALUATION.md)."""
FIXED_PRIOR = 0.3


def _shifted(probabilities: np.ndarray, before: float, after: float) -> np.ndarray:
    """P(failure) with the prior moved from ``before`` to ``after``: what
    ``TextModel.set_failure_prior`` does to the intercept (the log-odds move by the
    difference), on the probabilities."""
    clipped = np.clip(probabilities, 1e-12, 1 - 1e-12)
    shifted: np.ndarray = expit(logit(clipped) + logit(after) - logit(before))
    return shifted


def em_prior(
    probabilities: np.ndarray, assumed: float, iterations: int = 1000, tolerance: float = 1e-8
) -> float:
    """Saerens, Latinne and Decaestecker (2002): the prior at which the mean of the
    probabilities, re-weighted to it, is that prior (EM on the unlabelled rows).
    ``assumed``: the prior ``probabilities`` were computed with."""
    prior = assumed
    for _ in range(iterations):
        new = min(max(float(_shifted(probabilities, assumed, prior).mean()), 1e-6), 1 - 1e-6)
        if abs(new - prior) < tolerance:
            return new
        prior = new
    return prior


def cold_candidates(
    group: str,
    organisation: str,
    model: TextModel,
    rows: Sequence[Example],
    own: Sequence[Example],
    general: Sequence[Example],
    taxonomy: Taxonomy,
) -> dict[str, list[ColdRun]]:
    """``cold_runs`` of one cold-start model, per entry of CANDIDATES, each candidate's prior
    estimated on the thinned rows themselves (transductive: the service would take its
    recent demands). BBSE's error rates by 3-fold cross-validation of the same recipe on
    ``own`` and ``general`` (three more fits) at the model's prior."""
    failure = model.failure_probabilities([e.text for e in rows])
    assumed = (
        model.failure_prior
        if model.failure_prior is not None
        else model._demand_type.fitted_share.get("failure", 0.5)
    )
    rates = confusion_rates(
        own, taxonomy, general=general, settings=model.settings, prior=model.failure_prior
    )
    if rates is None:
        raise RuntimeError(f"{organisation}: no error rates (a class is missing)")

    def bbse(probabilities: np.ndarray) -> np.ndarray:
        class Called:  # the model's calls on these rows, already computed
            def failure_probabilities(self, _texts: Sequence[str]) -> np.ndarray:
                return probabilities

        assert rates is not None
        prior = estimate_failure_prior(Called(), [""] * len(probabilities), rates, min_texts=1)
        return probabilities if prior is None else _shifted(probabilities, assumed, prior)

    adjustments: dict[str, Callable[[np.ndarray], np.ndarray] | None] = {
        "shipped": None,
        "(a) EM": lambda p: _shifted(p, assumed, em_prior(p, assumed)),
        "(b) BBSE": bbse,
        "(c) fixed 0.3": lambda p: _shifted(p, assumed, FIXED_PRIOR),
    }
    return {
        name: cold_runs(group, organisation, rows, failure, adjustments[name])
        for name in CANDIDATES
    }


def cold_dataset_model(data: Data, dataset: Dataset) -> TextModel:
    """A data set's organisation at cold start: its taxonomy only (no labelled row), the
    corpus without its kind of sector."""
    return TextModel.train(
        [],
        dataset.taxonomy,
        settings=VARIANTS[DEFAULT],
        general=data.corpus_for(dataset, same_kind=False),
    )


def candidates_table(candidates: dict[str, list[ColdRun]]) -> list[str]:
    lines = [
        "### Cold start where failure is rare: a prior from the organisation's unlabelled demands",
        "",
    ]
    say = lines.append
    say(
        "The same models and thinned rows as the table above, judged with four priors, each "
        "estimated on the thinned test rows themselves (transductive, as the service could "
        "on its recent unlabelled demands): as shipped; (a) EM on the model's probabilities "
        "(Saerens, Latinne and Decaestecker 2002); (b) black-box shift estimation (Lipton, "
        "Wang and Smola 2018: the share called failure corrected by the error rates of "
        "3-fold cross-validation on the training rows, "
        "`services/classifier/model/prior_shift.py`); (c) a fixed "
        f"{FIXED_PRIOR} (a sensitivity row, not a candidate). Each cell: accuracy, runs at "
        "least always-majority, predicted failure share."
    )
    say("")
    say(
        "| organisations | failure share | runs | true share | always-majority | "
        + " | ".join(CANDIDATES)
        + " |"
    )
    say("|---|---|---|---|---|" + "---|" * len(CANDIDATES))
    groups: dict[tuple[str, float | None], dict[str, list[ColdRun]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for name, runs in candidates.items():
        for run in runs:
            groups[(run.group, run.aimed_share)][name].append(run)
    for (group, share), by_name in groups.items():
        its = by_name[CANDIDATES[0]]
        say(
            f"| {group} | {'natural' if share is None else f'{share:.2f}'} | {len(its)} | "
            f"{_f(_mean(r.true_share for r in its))} | {_f(_mean(r.majority for r in its))} | "
            + " | ".join(
                f"{_f(_mean(r.accuracy for r in by_name[n]))} · "
                f"{sum(r.margin >= 0 for r in by_name[n])}/{len(by_name[n])} · "
                f"{_f(_mean(r.predicted_share for r in by_name[n]))}"
                for n in CANDIDATES
            )
            + " |"
        )
    say("")
    say("At the natural share, per corpus sector (leave-one-sector-out accuracy):")
    say("")
    say("| sector | true share | " + " | ".join(CANDIDATES) + " |")
    say("|---|---|" + "---|" * len(CANDIDATES))
    natural = {
        name: {
            r.organisation: r for r in runs if r.group == "corpus sectors" and r.aimed_share is None
        }
        for name, runs in candidates.items()
    }
    sectors = list(natural[CANDIDATES[0]])
    for sector in sectors:
        say(
            f"| {sector} | {_f(natural[CANDIDATES[0]][sector].true_share)} | "
            + " | ".join(_f(natural[n][sector].accuracy) for n in CANDIDATES)
            + " |"
        )
    for label, pick in (("**mean**", _mean), ("**worst**", min)):
        say(
            f"| {label} | | "
            + " | ".join(_f(pick(natural[n][s].accuracy for s in sectors), 4) for n in CANDIDATES)
            + " |"
        )
    return [*lines, ""]


def cold_table(runs: Sequence[ColdRun]) -> list[str]:
    lines = ["### Cold start where failure is rare: no labels of the organisation", ""]
    say = lines.append
    say(
        "No labelled row of the organisation. Corpus sectors: each sector's "
        "leave-one-sector-out model (above: the seed set as labelled rows, so its share, "
        "about 0.54, is the prior; the energy sector's model has no own rows and the "
        "balanced fit's 1/2); data sets: their taxonomy only, the corpus without their "
        "kind of sector (the balanced fit's 1/2). Each tested on its rows thinned to a "
        f"failure share by dropping failure rows at random ({len(SEEDS)} seeds; the "
        "natural share once). Margin: accuracy minus always-majority, in points."
    )
    say("")
    say(
        "| organisations | failure share | runs | true share | always-majority "
        "| **accuracy** | runs at least always-majority | worst margin | predicted share |"
    )
    say("|---|---|---|---|---|---|---|---|---|")
    groups: dict[tuple[str, float | None], list[ColdRun]] = defaultdict(list)
    for run in runs:
        groups[(run.group, run.aimed_share)].append(run)
    for (group, share), its in groups.items():
        say(
            f"| {group} | {'natural' if share is None else f'{share:.2f}'} | {len(its)} | "
            f"{_f(_mean(r.true_share for r in its))} | {_f(_mean(r.majority for r in its))} | "
            f"**{_f(_mean(r.accuracy for r in its))}** | "
            f"{sum(r.margin >= 0 for r in its)} of {len(its)} | "
            f"{100 * min(r.margin for r in its):+.1f} | "
            f"{_f(_mean(r.predicted_share for r in its))} |"
        )
    below = [r for r in runs if r.margin < 0]
    say("")
    if not below:
        say("Every run at least always-majority.")
    else:
        say("Runs below always-majority (accuracy / always-majority, predicted / true share):")
        say("")
        for r in below:
            say(
                f"- {r.organisation}, {'natural' if r.aimed_share is None else r.aimed_share}"
                f"{'' if r.seed is None else f' (seed {r.seed})'}, {r.rows} rows: "
                f"{_f(r.accuracy)} / {_f(r.majority)} ({100 * r.margin:+.1f} points), "
                f"{_f(r.predicted_share)} / {_f(r.true_share)}"
            )
    return [*lines, ""]


# -- report ---------------------------------------------------------------------------------


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return statistics.fmean(values) if values else float("nan")


def _f(value: float, digits: int = 3) -> str:
    return "-" if value != value else f"{value:.{digits}f}"  # NaN check


def _pts(value: float) -> str:
    return "-" if value != value else f"{100 * value:.1f}"


def main() -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    # BLAS threads started before the pin would still use the other core.
    with threadpool_limits(limits=1):
        if CHOICES:
            print(choices_row(load_data(), ModelSettings()), flush=True)
        else:
            run()


def choices_row(data: Data, settings: ModelSettings) -> str:
    """One row of EVALUATION.md's "choices measured" table for ``settings``: value/failure
    left one sector out (mean, worst, sectors at least always-majority), then per data set
    few-shot purpose and value/failure (10 per purpose, mean of 3 seeds) and 5-fold purpose,
    value/failure and failure kind; the corpus without the data set's kind of sector."""
    loso = leave_one_sector_out(data, settings, lambda _step: None)
    accuracy = [r.accuracy for r in loso]
    cells = [
        _f(_mean(accuracy)),
        _f(min(accuracy)),
        f"{sum(r.accuracy >= r.majority for r in loso)}/{len(loso)}",
    ]
    for dataset in (d for d in (data.seed, data.council) if d is not None):
        general = data.corpus_for(dataset, same_kind=False)
        runs = [few_shot(dataset, general, 10, settings, seed) for seed in (0, 1, 2)]
        heads = cross_validate(
            dataset.rows, 5, taxonomy=dataset.taxonomy, settings=settings, general=general
        )
        kind = heads.get("failure_kind")
        cells += [
            _f(_mean(r.purpose for r in runs)),
            _f(_mean(r.demand_type for r in runs)),
            _f(heads["purpose"].accuracy),
            _f(heads["demand_type"].accuracy),
            _f(kind.accuracy) if kind else "-",
        ]
    header = (
        "| LOSO mean | LOSO worst | >= majority | seed: few-shot purpose | v/f | 5-fold purpose "
        "| v/f | failure kind | council: few-shot purpose | v/f | 5-fold purpose | v/f "
        "| failure kind |"
    )
    return header + "\n|" + "---|" * len(cells) + "\n| " + " | ".join(cells) + " |"


def rare_table(rare: Sequence[RareResult]) -> list[str]:
    lines = ["### Organisations where failure is rare: the value/failure prior", ""]
    say = lines.append
    say(
        "Each corpus sector (its first "
        f"{RARE_OWN_ROWS} rows, shuffled, as the organisation's labels; the corpus without "
        f"it; seeds {', '.join(map(str, SEEDS[:2]))}) and each data set (10 labelled rows "
        "per purpose; the corpus without "
        f"its kind of sector; {len(SEEDS)} seeds), thinned to a failure share by dropping "
        "failure rows at random; tested on the rest. Accuracy of value/failure with the "
        "fit's own prior (class-balanced: about 1/2) and with the organisation's own labelled "
        "share as the "
        "prior (shipped: `own_prior_min_rows`)."
    )
    say("")
    say(
        "| organisations | failure share | runs | true share of the test rows | always-majority "
        "| balanced prior | **own share as prior** "
        "| runs at least always-majority (balanced / own) |"
    )
    say("|---|---|---|---|---|---|---|---|")
    groups: dict[tuple[str, float], list[RareResult]] = defaultdict(list)
    for result in rare:
        groups[(result.group, result.aimed_share)].append(result)
    for (kind, share), runs in groups.items():
        say(
            f"| {kind} | {share:.2f} | {len(runs)} | {_f(_mean(r.true_share for r in runs))} | "
            f"{_f(_mean(r.majority for r in runs))} | {_f(_mean(r.balanced for r in runs))} | "
            f"**{_f(_mean(r.own_prior for r in runs))}** | "
            f"{sum(r.balanced >= r.majority for r in runs)} / "
            f"{sum(r.own_prior >= r.majority for r in runs)} of {len(runs)} |"
        )
    return [*lines, ""]


def audited_table(results: Sequence[AuditedResult]) -> list[str]:
    lines = [
        "### The production case: few-shot labels plus a random audit, by prior source",
        "",
    ]
    say = lines.append
    say(
        "Each data set: 10 labelled rows per purpose (drawn per purpose, as few-shot labels "
        f"and review-queue labels are: not a random sample) and a random audit of {AUDIT_ROWS} "
        "of the other rows (half of them where fewer than twice as many are left), both "
        "trained on; tested on the rest; the corpus without its kind of sector; "
        f"{len(SEEDS)} seeds; at the data set's own failure share and thinned. One fit per "
        "run, judged with three priors: (a) the fit's own (class-balanced, about 1/2), (b) the "
        "share of every own labelled row, few-shot and audit (shipped), (c) the audit's "
        "share alone (not shipped: here the audit is drawn uniformly, the metrics service "
        "draws it per purpose and week with unequal chances, and its raw share leans to the "
        "small purposes). Shares Laplace-smoothed."
    )
    say("")
    say(
        "| data | failure share | audit / test rows | true share of the test rows "
        "| share: all labels / audit | always-majority | (a) balanced | **(b) all labels** "
        "| (c) audit |"
    )
    say("|---|---|---|---|---|---|---|---|---|")
    groups: dict[tuple[str, float | None], list[AuditedResult]] = defaultdict(list)
    for result in results:
        groups[(result.group, result.aimed_share)].append(result)
    for (name, share), runs in groups.items():
        say(
            f"| {name} | {'own' if share is None else f'{share:.2f}'} | "
            f"{_mean(r.audit_rows for r in runs):.0f} / {_mean(r.test_rows for r in runs):.0f} | "
            f"{_f(_mean(r.true_share for r in runs))} | "
            f"{_f(_mean(r.labels_share for r in runs))} / "
            f"{_f(_mean(r.audit_share for r in runs))} | "
            f"{_f(_mean(r.majority for r in runs))} | {_f(_mean(r.balanced for r in runs))} | "
            f"**{_f(_mean(r.labels_prior for r in runs))}** | "
            f"{_f(_mean(r.audit_prior for r in runs))} |"
        )
    return [*lines, ""]


def run() -> None:
    started = time.perf_counter()
    load = os.getloadavg()
    data = load_data()
    datasets = [d for d in (data.seed, data.council) if d is not None]
    sectors = data.sectors
    fits = (
        len(VARIANTS) * len(sectors)
        + len(datasets) * len(VARIANTS) * len(SEEDS) * 2
        + len(datasets) * len(CURVE)
        + len(datasets) * 2 * 5
        + len(RARE_SHARES) * (len(SEEDS[:2]) * len(sectors) + len(datasets) * len(SEEDS))
        + len(AUDITED_SHARES) * len(datasets) * len(SEEDS)
        + (len(sectors) + len(datasets)) * 2  # cold start: error rates; the data sets' fits
        + 2
    )
    rng = np.random.default_rng(0)
    out: list[str] = []

    def say(line: str = "") -> None:
        out.append(line)

    with Progress(
        TextColumn("{task.description:<48}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task("judgement", total=fits)

        def tick(step: str) -> None:
            bar.update(task, advance=1, description=step)

        candidates: dict[str, list[ColdRun]] = defaultdict(list)

        def cold_sector(fit: SectorFit) -> None:
            tick(f"cold start, error rates: {fit.sector}")
            for name, runs in cold_candidates(
                "corpus sectors",
                fit.sector,
                fit.model,
                fit.test,
                fit.own,
                fit.general,
                data.seed.taxonomy,
            ).items():
                candidates[name] += runs

        loso = {
            name: leave_one_sector_out(
                data, s, tick, on_model=cold_sector if name == DEFAULT else None
            )
            for name, s in VARIANTS.items()
        }

        def few(dataset: Dataset, general: Sequence[Example], name: str) -> Scores:
            runs = []
            for seed in SEEDS:
                tick(f"{dataset.name}: 10 per purpose ({name})")
                runs.append(few_shot(dataset, general, 10, VARIANTS[name], seed))
            return Scores(
                _mean(r.purpose for r in runs),
                _mean(r.demand_type for r in runs),
                _mean(r.share_error for r in runs),
            )

        shots = {
            (d.name, corpus, name): few(d, data.corpus_for(d, same_kind=corpus == "all"), name)
            for d in datasets
            for corpus in ("all", "without")
            for name in VARIANTS
        }
        curves = {
            d.name: learning_curve(
                d, data.corpus_for(d, same_kind=False), VARIANTS[DEFAULT], 0, tick
            )
            for d in datasets
        }
        full = {}
        for d in datasets:

            def fold(_number: int, name: str = d.name) -> None:
                tick(f"{name}: 5-fold")

            for same_kind in (True, False):
                full[(d.name, same_kind)] = cross_validate(
                    d.rows,
                    5,
                    taxonomy=d.taxonomy,
                    settings=VARIANTS[DEFAULT],
                    general=data.corpus_for(d, same_kind=same_kind),
                    on_fold=fold,
                )
        for d in datasets:
            tick(f"cold start: {d.name}")
            general = data.corpus_for(d, same_kind=False)
            for name, runs in cold_candidates(
                d.name, d.name, cold_dataset_model(data, d), d.rows, [], general, d.taxonomy
            ).items():
                candidates[name] += runs
        rare = rare_failure(data, tick)
        audited = audited_failure(data, tick)
        tick("throughput")
        throughput = {}
        for name, settings in VARIANTS.items():
            model = TextModel.train(
                data.seed.rows, data.seed.taxonomy, settings=settings, general=data.corpus
            )
            texts = [e.text for e in data.corpus] + [e.text for e in data.seed.rows]
            random.Random(1).shuffle(texts)
            throughput[name] = statistics.median(
                measure_throughput(model, texts[i * 500 :] + texts[: i * 500]) for i in range(3)
            )
        tick("audits")

    # -- tables -------------------------------------------------------------------------------
    say(
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC with `python -m bench judgement`, "
        f"one core, load average before the run {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} "
        f"(2 cores shared with other engineers' work), in {time.perf_counter() - started:.0f} s."
    )
    say(
        f"Data: general corpus {len(data.corpus)} rows in {len(sectors)} sectors "
        f"({_pts(_mean(_binary(e.demand_type for e in data.corpus)))}% failure); seed set "
        f"{len(data.seed.rows)} rows, {len(data.seed.taxonomy.purposes)} purposes"
        + (
            f"; council set {len(data.council.rows)} rows, "
            f"{len(data.council.taxonomy.purposes)} purposes (the shipped council examples "
            "and the corpus's housing repairs rows, which use the council taxonomy's "
            "purposes; whenever the council set plays the organisation, its rows are taken "
            "out of the corpus)"
            if data.council
            else "; council examples not found"
        )
        + "."
    )
    say()
    say("### Leave one sector out: value/failure for a sector the model never saw")
    say()
    say(
        "Shipped recipe without that sector (no label of its own). Share error in points "
        f"of failure share; audit columns: mean absolute error / mean 95% half-width / "
        f"coverage over {DRAWS} draws, populations of {POPULATION:,} resampled from the "
        "sector's rows."
    )
    say()
    say(
        "| sector | rows | true share | always-majority | accuracy (no emb.) "
        "| **accuracy** | predicted share | error, no audit | audit 100 | audit 200 |"
    )
    say("|---|---|---|---|---|---|---|---|---|---|")
    coverage: dict[int, AuditFigures] = {n: AuditFigures() for n in AUDITS}
    plain = {r.sector: r for r in loso["without embeddings"]}
    beaten = 0
    for result in loso[DEFAULT]:
        cells = []
        for n in AUDITS:
            figures = simulate_audits(result.pairs, n, DRAWS, rng)
            for name in ("errors", "half_widths", "covered"):
                getattr(coverage[n], name).extend(getattr(figures, name))
            cells.append(
                f"{_pts(_mean(figures.errors))} / {_pts(_mean(figures.half_widths))} / "
                f"{100 * figures.coverage:.0f}%"
            )
        beaten += result.accuracy >= result.majority
        say(
            f"| {result.sector} | {result.rows} | {_f(result.true_share)} | "
            f"{_f(result.majority)} | {_f(plain[result.sector].accuracy)} | "
            f"**{_f(result.accuracy)}** | {_f(result.predicted_share)} | "
            f"{_pts(abs(result.predicted_share - result.true_share))} | {' | '.join(cells)} |"
        )
    mean_row = loso[DEFAULT]
    say(
        f"| **mean** | | {_f(_mean(r.true_share for r in mean_row))} | "
        f"{_f(_mean(r.majority for r in mean_row))} | "
        f"{_f(_mean(r.accuracy for r in plain.values()))} | "
        f"**{_f(_mean(r.accuracy for r in mean_row))}** | | "
        f"{_pts(_mean(abs(r.predicted_share - r.true_share) for r in mean_row))} | "
        + " | ".join(
            f"{_pts(_mean(coverage[n].errors))} / {_pts(_mean(coverage[n].half_widths))} / "
            f"{100 * coverage[n].coverage:.0f}%"
            for n in AUDITS
        )
        + " |"
    )
    say()
    say(f"At least always-majority in {beaten} of {len(mean_row)} sectors.")
    say()
    say("### Coverage of the 95% interval (`shared.estimates.estimate_share`)")
    say()
    say("| population | audit | draws | coverage | mean half-width (points) | mean error |")
    say("|---|---|---|---|---|---|")
    for n in AUDITS:
        say(
            f"| each sector, resampled to {POPULATION:,} | {n} | {len(coverage[n].covered)} | "
            f"{100 * coverage[n].coverage:.1f}% | {_pts(_mean(coverage[n].half_widths))} | "
            f"{_pts(_mean(coverage[n].errors))} |"
        )
    pooled = [pair for r in loso[DEFAULT] for pair in r.pairs]
    for n in AUDITS:
        figures = simulate_audits(pooled, n, DRAWS * 2, rng, population=None)
        say(
            f"| all sectors' real rows ({len(pooled):,}), audit without replacement | {n} | "
            f"{len(figures.covered)} | {100 * figures.coverage:.1f}% | "
            f"{_pts(_mean(figures.half_widths))} | {_pts(_mean(figures.errors))} |"
        )
    say()
    say(f"### Few-shot: 10 labelled rows per purpose, tested on the rest (mean of {len(SEEDS)})")
    say()
    say("| data | general corpus | embeddings | purpose | value/failure | share error |")
    say("|---|---|---|---|---|---|")
    for (dataset, corpus, name), shot in shots.items():
        which = "all sectors" if corpus == "all" else "without this kind of sector"
        say(
            f"| {dataset} | {which} | {name.split()[0]} | {_f(shot.purpose)} | "
            f"{_f(shot.demand_type)} | {_pts(shot.share_error)} |"
        )
    say()
    say(
        "### Learning curve: labels per purpose (fixed 30% test set; corpus without this "
        "kind of sector; with embeddings)"
    )
    say()
    say("| data | " + " | ".join(f"{k}" for k in CURVE) + " |")
    say("|---|" + "---|" * len(CURVE))
    for name, curve in curves.items():
        say(f"| {name}: purpose | " + " | ".join(_f(curve[k].purpose) for k in CURVE) + " |")
        say(
            f"| {name}: value/failure | "
            + " | ".join(_f(curve[k].demand_type) for k in CURVE)
            + " |"
        )
    say()
    say("### Full training set: 5-fold cross-validation, stratified by purpose")
    say()
    say("| data | general corpus | purpose | value/failure | failure kind (failure rows) |")
    say("|---|---|---|---|---|")
    for (dataset, same_kind), heads in full.items():
        which = "all sectors" if same_kind else "without this kind of sector"
        kind = heads.get("failure_kind")
        say(
            f"| {dataset} | {which} | {_f(heads['purpose'].accuracy)} | "
            f"{_f(heads['demand_type'].accuracy)} | {_f(kind.accuracy) if kind else '-'} |"
        )
    say()
    for line in rare_table(rare):
        say(line)
    for line in audited_table(audited):
        say(line)
    for line in cold_table(candidates[CANDIDATES[0]]):
        say(line)
    for line in candidates_table(candidates):
        say(line)
    say("### Throughput (one batch of 1,000 texts, one core, median of 3)")
    say()
    for name, value in throughput.items():
        say(f"- {name}: {value:,.0f} demands/s")
    print("\n".join(out), flush=True)
    target = os.environ.get("DEMANDSCOPE_BENCH_JUDGEMENT_OUT")
    if target:
        Path(target).write_text("\n".join(out) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
    sys.exit(0)
