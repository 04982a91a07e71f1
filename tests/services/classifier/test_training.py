"""Training's value/failure prior: every labelled row, each once (the audit's labels among
them, not alone); the model's metadata says so."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from services.classifier.model.examples import Example
from services.classifier.model.text_model import ModelSettings
from services.classifier.training import TrainingSources, train_model
from tests.services.classifier.conftest import small_examples


def _labels(reason: str, failures: int, rows: int) -> list[Example]:
    """``rows`` people's labels of the small set's purposes, ``failures`` of them failure."""
    values = [e for e in small_examples() if e.demand_type == "value"]
    failing = [e for e in small_examples() if e.demand_type == "failure"]
    picked = [failing[i % len(failing)] for i in range(failures)]
    picked += [values[i % len(values)] for i in range(rows - failures)]
    return [
        replace(e, text=f"{e.text} ({reason} {i})", reason=reason) for i, e in enumerate(picked)
    ]


def _sources(examples_csv: Path, general_corpus_csv: Path) -> TrainingSources:
    return TrainingSources(
        seed_examples=examples_csv,  # 30 rows, half of them failure
        taxonomy=None,
        general_corpus=general_corpus_csv,
        settings=ModelSettings(own_prior_min_rows=30),
    )


def test_every_labelled_row_counts_once_in_the_prior_audit_or_not(
    examples_csv: Path, general_corpus_csv: Path
) -> None:
    # Review labels lean to failure (low-confidence demands), the audit's to value.
    labels = [*_labels("review", failures=30, rows=30), *_labels("audit", failures=3, rows=59)]

    trained = train_model(
        _sources(examples_csv, general_corpus_csv),
        reason="test",
        labels=labels,
        with_evaluation=False,
    )

    # Seed rows (15 of 30 failure) and each label once, not once per label_weight.
    assert trained.metadata["failure_prior"] == (15 + 30 + 3 + 1) / (30 + 89 + 2)
    assert trained.metadata["failure_prior_source"] == "labels"
    assert trained.metadata["failure_prior_rows"] == 30 + 89
