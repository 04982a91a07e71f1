"""Other domains' exports: purposes with capitals, underscores and punctuation still train."""

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from services.classifier.cli import app
from services.classifier.model.examples import read_examples_csv, slug_label

runner = CliRunner()

ROWS = [
    ("when will my new card arrive", "Card_Arrival", "Value"),
    ("my card still has not arrived after two weeks", "Card_Arrival", "FAILURE"),
    ("how long does a card take to come", "Card_Arrival", "value"),
    ("I ordered a card and nothing came yet", "Card_Arrival", "Failure"),
    ("is my card on its way", "card arrival?", "VALUE"),
    ("card still missing, chasing again", "card arrival?", "failure"),
    ("my top-up did not go through", "top-up failed", "failure"),
    ("top up failed twice today", "top-up failed", "FAILURE"),
    ("how do I top up my account", "Top-Up (How To)", "value"),
    ("can I top up by bank transfer", "Top-Up (How To)", "Value"),
    ("the top up was declined, why", "top-up failed", "failure"),
    ("what ways can I add money", "Top-Up (How To)", "value"),
]


@pytest.mark.parametrize(
    ("raw", "slug"),
    [
        ("Card_Arrival", "card_arrival"),
        ("card arrival?", "card arrival"),
        ("Top-Up (How To)", "top-up how to"),
        ("  Café & Bar  ", "cafe & bar"),
        ("?? lost card", "lost card"),
        ("", None),
    ],
)
def test_labels_become_slugs(raw: str, slug: str | None) -> None:
    assert slug_label(raw) == slug


def test_a_label_with_no_usable_character_keeps_a_stable_slug() -> None:
    first = slug_label("???")
    assert first is not None
    assert first == slug_label("???")
    assert first.startswith("label-")


def test_train_and_evaluate_on_foreign_labels(
    tmp_path: Path, labels_url: str, general_corpus_csv: Path
) -> None:
    path = tmp_path / "banking.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Text", "Purpose", "Demand_Type", "extra"])
        writer.writerows([(*row, "ignored") for row in ROWS])
    # A small general corpus (the shipped one is most of a training's CPU): the labels'
    # slugs are what is checked.
    trained = runner.invoke(
        app,
        [
            "train",
            "--examples",
            str(path),
            "--general-corpus",
            str(general_corpus_csv),
            "--database-url",
            labels_url,
            "--holdout",
            "0",
        ],
    )
    assert trained.exit_code == 0, trained.output
    evaluated = runner.invoke(
        app, ["evaluate", "--examples", str(path), "--database-url", labels_url, "--json"]
    )
    assert evaluated.exit_code == 0, evaluated.output

    figures = json.loads(evaluated.output)
    assert figures["purpose"]["count"] == len(ROWS)
    assert figures["demand_type"]["count"] == len(ROWS)
    assert figures["purpose"]["accuracy"] > 0.5
    assert figures["unseen_purposes"] == []
    purposes = {e.purpose for e in read_examples_csv(path).examples}
    assert purposes == {"card_arrival", "card arrival", "top-up failed", "top-up how to"}
