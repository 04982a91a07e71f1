"""Train a model from the organisation's taxonomy, its labelled examples, people's labels and
the general corpus (``versions.publish`` then stores it for the fleet).

Used three ways: on a fresh database when no model exists yet (or the taxonomy changed), by
`demandscope classifier retrain`, and by the running service on its schedule or on POST
/v1/retrain. Blocking and CPU-bound: callers read the labels first
(``LabelRepository.training_examples``) and run it in a thread.

What teaches what:

- **purposes** come only from the organisation: its taxonomy (each purpose's description and
  examples) and its labelled rows whose purpose the taxonomy defines. A seed file written for
  another taxonomy (the shipped energy examples left in place when only the taxonomy was
  replaced) never adds its purposes: its rows teach value/failure only, like the corpus.
- **value/failure** and the failure kind: the organisation's rows (counted
  ``ModelSettings.own_weight`` times) and the general multi-sector corpus.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import sklearn

from services.classifier.config import GENERAL_CORPUS, SEED_EXAMPLES, TAXONOMY
from services.classifier.db.repository import LabelRepository
from services.classifier.failure_share import EstimatedPrior
from services.classifier.model.embeddings import CONFIG, DIMENSIONS
from services.classifier.model.examples import Example, read_examples_csv
from services.classifier.model.prior_shift import (
    DEMANDS,
    REPLACEABLE,
    SHIPPED_EXAMPLES,
    DemandPrior,
    StoredRates,
    apply_demand_prior,
    confusion_rates,
)
from services.classifier.model.text_model import (
    FORMAT,
    ModelSettings,
    TextModel,
    failure_prior_of,
)
from services.classifier.taxonomy import Taxonomy, load_taxonomy

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TrainingSources:
    seed_examples: Path | None = SEED_EXAMPLES
    taxonomy: Path | None = TAXONOMY
    general_corpus: Path | None = GENERAL_CORPUS
    label_weight: int = 5
    """Each person's label counts as this many seed rows: it is in-domain and deliberate."""
    settings: ModelSettings = field(default_factory=ModelSettings)

    def load_taxonomy(self) -> Taxonomy | None:
        return load_taxonomy(self.taxonomy) if self.taxonomy else None

    def taxonomy_fingerprint(self) -> str | None:
        """The hash of the taxonomy a model trained now would know (None: no taxonomy)."""
        taxonomy = self.load_taxonomy()
        return taxonomy.content_hash() if taxonomy else None


@dataclass(frozen=True, slots=True)
class TrainedModel:
    model: TextModel
    metadata: dict[str, Any]
    """Plain JSON, stored with the version: what it learnt from, and its held-out figures."""
    labels: int


@dataclass(frozen=True, slots=True)
class TrainingSet:
    """The rows of one training, split by what they may teach."""

    taxonomy: Taxonomy | None
    own: list[Example]
    """The organisation's labelled rows: they teach purpose (if defined) and value/failure."""
    general: list[Example]
    """Value/failure only: the corpus, and seed rows of purposes outside the taxonomy."""
    foreign_seed_rows: int = 0


def read_rows(path: Path | None) -> list[Example]:
    """Labelled rows of a CSV; a missing path or a header-only file gives none."""
    if path is None:
        return []
    return [e for e in read_examples_csv(path).examples if e.demand_type]


def general_rows(path: Path | None) -> list[Example]:
    """The corpus's rows without their (sector) purposes, which must never become ours."""
    return [
        Example(e.text, None, e.demand_type, e.failure_kind, e.channel, e.sector)
        for e in read_rows(path)
    ]


def is_shipped(path: Path | None) -> bool:
    """Whether ``path`` is the shipped energy seed set (whose failure share says nothing
    about an organisation that kept the shipped model)."""
    if path is None:
        return False
    try:
        return path.resolve() == SEED_EXAMPLES.resolve()
    except OSError:
        return False


def prior_rows_of(
    own: Sequence[Example], labelled: Sequence[Example], shipped: bool
) -> list[Example]:
    """The rows, each once, whose share may be the prior as the organisation's own labels:
    people's labels, and its own examples file (not the shipped seed set)."""
    return [*labelled] if shipped else [*own, *labelled]


def use_shipped_share(model: TextModel, own: Sequence[Example], shipped: bool) -> None:
    """With the shipped seed set and too few labels of its own, the seed set's share stays
    the prior (as before), marked ``SHIPPED_EXAMPLES`` so that the demands' estimate may
    replace it."""
    if not shipped or model.failure_prior is not None:
        return
    prior = failure_prior_of(own, model.settings.own_prior_min_rows)
    if prior is not None:
        model.set_failure_prior(prior.share, source=SHIPPED_EXAMPLES, rows=prior.rows)


def measure_rates(
    model: TextModel,
    own: Sequence[Example],
    taxonomy: Taxonomy | None,
    general: Sequence[Example],
    settings: ModelSettings,
) -> StoredRates | None:
    """The recipe's value/failure error rates at ``model``'s fitted prior (3 fits on 2/3 of
    the rows: ``prior_shift.confusion_rates``), kept with the version so the demands'
    estimate can be made, now or later, without training again. None when the prior comes
    from an audited estimate or the organisation's own labels (the demands never replace
    those)."""
    if model.failure_prior_source not in REPLACEABLE:
        return None
    rates = confusion_rates(
        own, taxonomy, general=general, settings=settings, prior=model.failure_prior
    )
    if rates is None:
        return None
    return StoredRates(
        rates, model.failure_prior, model.failure_prior_source, model.failure_prior_rows
    )


def split_sources(
    taxonomy: Taxonomy | None, seed: Sequence[Example], general: Sequence[Example]
) -> TrainingSet:
    if taxonomy is None:
        return TrainingSet(None, [e for e in seed if e.purpose], list(general))
    purposes = set(taxonomy.purpose_slugs)
    own = [e for e in seed if e.purpose in purposes]
    foreign = [
        Example(e.text, None, e.demand_type, e.failure_kind, e.channel)
        for e in seed
        if e.purpose not in purposes
    ]
    return TrainingSet(taxonomy, own, [*foreign, *general], foreign_seed_rows=len(foreign))


def train_model(
    sources: TrainingSources,
    *,
    reason: str,
    labels: Sequence[Example] = (),
    with_evaluation: bool = True,
    label_rows: int | None = None,
    estimated: EstimatedPrior | None = None,
    demands: Sequence[str] = (),
    demand_prior: DemandPrior | None = None,
    with_rates: bool = False,
) -> TrainedModel:
    """Train on the sources + ``labels`` (people's, as training examples). ``label_rows``
    (the label store's size when the labels were read) tells the schedule later whether new
    labels arrived since.

    The value/failure prior, the first that applies: the metrics service's audited estimate
    (``estimated``, read by the caller: ``failure_share.read_estimated_prior``); the share
    of the organisation's own labelled rows, people's labels and its own examples file, once
    there are ``own_prior_min_rows`` (``failure_prior_of``; the shipped seed set is not the
    organisation's); the failure share of its recent ``demands`` (their texts, newest first,
    at least ``demand_prior.min_texts``) by black-box shift estimation (``prior_shift``);
    the shipped seed set's share (source "shipped examples"); the balanced fit's own.

    ``with_rates``: measure the error rates the demands' estimate needs (3 more fits) when
    the prior is not from rule 1 or 2, and keep them in the metadata for later estimates
    (key ``failure_prior_rates``, None when rule 1 or 2 applies or a class is missing; the
    CLI's train and retrain ask, the service once it has seen the demands' minimum).
    Without them ``demands`` are not used and the key is left out: the service's schedule
    then retrains once with them when the minimum is reached."""
    started = time.perf_counter()
    taxonomy = sources.load_taxonomy()
    rows = split_sources(
        taxonomy, read_rows(sources.seed_examples), general_rows(sources.general_corpus)
    )
    if rows.foreign_seed_rows:
        log.warning(
            "%d rows of %s have purposes the taxonomy %s does not define: they teach "
            "value/failure only, never their purposes",
            rows.foreign_seed_rows,
            sources.seed_examples,
            sources.taxonomy,
        )
    if taxonomy is None and not rows.own and not labels:
        raise ValueError("nothing to learn purposes from: give a taxonomy or labelled examples")
    labelled = [e for e in labels if e.purpose and e.demand_type]
    weighted_labels = labelled * max(1, sources.label_weight)
    shipped = is_shipped(sources.seed_examples)
    held_out: dict[str, Any] | None = None
    if with_evaluation and len(rows.own) >= 5:
        # Held-out figures of this recipe: the labels are always trained on, seed rows split.
        # Imported here: the serving process imports this module and trains only on a fresh
        # database, a retrain or a new taxonomy.
        from services.classifier.model.evaluate import evaluate

        test = rows.own[::5]
        seed_train = [e for i, e in enumerate(rows.own) if i % 5]
        candidate = TextModel.train(
            seed_train + weighted_labels,
            taxonomy,
            settings=sources.settings,
            general=rows.general,
            prior_rows=prior_rows_of(seed_train, labelled, shipped),
        )
        use_shipped_share(candidate, seed_train, shipped)
        _use_estimate(candidate, estimated)
        held_out = {"holdout": 0.2, "rows": len(test), **evaluate(candidate, test).as_dict()}
    model = TextModel.train(
        rows.own + weighted_labels,
        taxonomy,
        settings=sources.settings,
        general=rows.general,
        # each row once, not a label per label_weight
        prior_rows=prior_rows_of(rows.own, labelled, shipped),
    )
    use_shipped_share(model, rows.own, shipped)
    _use_estimate(model, estimated)
    stored = (
        measure_rates(model, rows.own + weighted_labels, taxonomy, rows.general, sources.settings)
        if with_rates
        else None
    )
    wanted = demand_prior or DemandPrior()
    if stored is not None and wanted.min_texts > 0:
        apply_demand_prior(model, demands[: wanted.read], stored, min_texts=wanted.min_texts)
    metadata: dict[str, Any] = {
        "reason": reason,
        "examples": len(rows.own) + len(labelled),
        "seed_examples": len(rows.own),
        "labels": len(labelled),
        "label_weight": sources.label_weight,
        "general_rows": len(rows.general),
        "label_counts": model.label_counts,
        **failure_prior_metadata(model, estimated),
        **(
            {"failure_prior_rates": stored.as_dict() if stored is not None else None}
            if with_rates
            else {}
        ),
        "purposes": list(model.purposes),
        "taxonomy_hash": taxonomy.content_hash() if taxonomy else None,
        "taxonomy_given": taxonomy is not None,
        "taxonomy_file": str(sources.taxonomy) if sources.taxonomy else None,
        "model_format": FORMAT,
        "embeddings": f"wordllama {CONFIG} {DIMENSIONS}"
        if sources.settings.embedding_weight or sources.settings.purpose_embedding_weight
        else None,
        "sklearn_version": sklearn.__version__,
        "training_seconds": round(time.perf_counter() - started, 2),
        "evaluation": held_out,
        "label_rows": label_rows,
    }
    return TrainedModel(model=model, metadata=metadata, labels=len(labelled))


@dataclass(frozen=True, slots=True)
class RecentDemands:
    texts: list[str]
    """Newest first."""
    kept: int
    """The demand texts kept when they were read."""
    newest: datetime | None

    def metadata(self, model: TextModel) -> dict[str, Any]:
        """Where the next estimate counts new demands from, if ``model``'s prior is theirs."""
        used = model.failure_prior_source == DEMANDS
        return {
            "failure_prior_demands_seen": self.kept if used else None,
            "failure_prior_demands_until": (
                self.newest.isoformat() if used and self.newest is not None else None
            ),
        }


async def read_recent_demands(labels: LabelRepository, wanted: DemandPrior) -> RecentDemands:
    """The organisation's newest demands' texts for the prior's estimate (at most
    ``wanted.read``), and how many were kept when they were read (the schedule's next
    estimate counts from there). None read when the estimate is off, nor while fewer than
    its minimum were kept: no estimate can use them then (a fresh start's training reads
    only the count)."""
    if wanted.min_texts <= 0:
        return RecentDemands([], 0, None)
    kept = await labels.count_texts()
    if kept < wanted.min_texts:
        return RecentDemands([], kept, None)
    recent = await labels.recent_texts(wanted.read)
    return RecentDemands([t.text for t in recent], kept, recent[0].seen_at if recent else None)


def _use_estimate(model: TextModel, estimated: EstimatedPrior | None) -> None:
    """The audited estimate, when there is one, replaces the labels' prior (only the
    intercept moves, from wherever the fit left it)."""
    if estimated is not None and estimated.prior is not None:
        prior = estimated.prior
        model.set_failure_prior(prior.share, source=prior.source, rows=prior.rows)


def failure_prior_metadata(
    model: TextModel, estimated: EstimatedPrior | None = None
) -> dict[str, Any]:
    """What set ``model``'s value/failure prior, for its metadata; ``estimated``: the
    metrics service's estimate as read before training (None: not read)."""

    def moment(at: datetime | None) -> str | None:
        return at.isoformat() if at is not None else None

    return {
        "failure_prior": model.failure_prior,
        "failure_prior_source": model.failure_prior_source,
        "failure_prior_rows": model.failure_prior_rows,
        "failure_prior_window_end": moment(estimated.window_end if estimated else None),
        "failure_prior_oldest_window_end": moment(
            estimated.oldest_window_end if estimated else None
        ),
        "failure_prior_estimate": estimated.reason if estimated is not None else None,
    }
