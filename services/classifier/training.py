"""Train a model version from the seed examples, the taxonomy and people's labels, and save it.

Used three ways: on a fresh machine when no model exists yet, by `demandscope classifier
retrain`, and by the running service on its schedule or on POST /v1/retrain. Blocking and
CPU-bound: callers read the labels first (``LabelRepository.training_examples``) and run it
in a thread.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sklearn

from services.classifier.config import SEED_EXAMPLES, TAXONOMY
from services.classifier.model import store
from services.classifier.model.evaluate import evaluate
from services.classifier.model.examples import Example, read_examples_csv
from services.classifier.model.text_model import TextModel
from services.classifier.taxonomy import Taxonomy, load_taxonomy


@dataclass(frozen=True, slots=True)
class TrainingSources:
    seed_examples: Path = SEED_EXAMPLES
    taxonomy: Path | None = TAXONOMY
    label_weight: int = 5
    """Each person's label counts as this many seed rows: it is in-domain and deliberate."""


@dataclass(frozen=True, slots=True)
class TrainedVersion:
    version: str
    model: TextModel
    labels: int


def train_version(
    model_dir: Path,
    sources: TrainingSources,
    *,
    reason: str,
    labels: Sequence[Example] = (),
    with_evaluation: bool = True,
) -> TrainedVersion:
    """Train on seed + ``labels`` (people's, as training examples), save as a new version and
    make it current."""
    started = time.perf_counter()
    seed = [
        e for e in read_examples_csv(sources.seed_examples).examples if e.purpose and e.demand_type
    ]
    taxonomy: Taxonomy | None = load_taxonomy(sources.taxonomy) if sources.taxonomy else None
    labelled = [e for e in labels if e.purpose and e.demand_type]
    rows: list[Example] = seed + labelled * max(1, sources.label_weight)
    held_out: dict[str, Any] | None = None
    if with_evaluation:
        # Held-out figures of this recipe: the labels are always trained on, seed rows split.
        test = seed[::5]
        train = [e for i, e in enumerate(seed) if i % 5] + labelled * max(1, sources.label_weight)
        figures = evaluate(TextModel.train(train, taxonomy), test)
        held_out = {"holdout": 0.2, "rows": len(test), **figures.as_dict()}
    model = TextModel.train(rows, taxonomy)
    metadata: dict[str, Any] = {
        "reason": reason,
        "examples": len(seed) + len(labelled),
        "seed_examples": len(seed),
        "labels": len(labelled),
        "label_weight": sources.label_weight,
        "label_counts": model.label_counts,
        "taxonomy_hash": taxonomy.content_hash() if taxonomy else None,
        "taxonomy_given": taxonomy is not None,
        "sklearn_version": sklearn.__version__,
        "training_seconds": round(time.perf_counter() - started, 2),
        "evaluation": held_out,
    }
    version = store.save(model, model_dir, metadata, now=datetime.now(UTC))
    return TrainedVersion(version=version, model=model, labels=len(labelled))
