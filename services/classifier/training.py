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
from services.classifier.failure_share import EstimatedPrior
from services.classifier.model.embeddings import CONFIG, DIMENSIONS
from services.classifier.model.examples import Example, read_examples_csv
from services.classifier.model.text_model import FORMAT, ModelSettings, TextModel
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
) -> TrainedModel:
    """Train on the sources + ``labels`` (people's, as training examples). ``label_rows``
    (the label store's size when the labels were read) tells the schedule later whether new
    labels arrived since.

    The value/failure prior, the first that applies: the metrics service's audited estimate
    (``estimated``, read by the caller: ``failure_share.read_estimated_prior``), the share
    of the organisation's labelled rows (``failure_prior_of``), the balanced fit's own."""
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
            prior_rows=[*seed_train, *labelled],
        )
        _use_estimate(candidate, estimated)
        held_out = {"holdout": 0.2, "rows": len(test), **evaluate(candidate, test).as_dict()}
    model = TextModel.train(
        rows.own + weighted_labels,
        taxonomy,
        settings=sources.settings,
        general=rows.general,
        prior_rows=[*rows.own, *labelled],  # each row once, not a label per label_weight
    )
    _use_estimate(model, estimated)
    metadata: dict[str, Any] = {
        "reason": reason,
        "examples": len(rows.own) + len(labelled),
        "seed_examples": len(rows.own),
        "labels": len(labelled),
        "label_weight": sources.label_weight,
        "general_rows": len(rows.general),
        "label_counts": model.label_counts,
        **failure_prior_metadata(model, estimated),
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
