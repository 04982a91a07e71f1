"""`bench external_banking77 --train`: the official protocol's table on a tiny synthetic pair."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

import bench.external_banking77 as banking77
from bench.judgement import VARIANTS
from services.classifier.model.examples import Example
from services.classifier.model.text_model import TextModel

INTENTS = {
    "Card_arrival": ["where is my new card", "my card has not arrived yet", "card still not here"],
    "Exchange_rate": ["what exchange rate do you use", "how is the rate set", "rate for euros"],
    "Top_up_failed": ["my top up failed", "top-up did not work", "could not top up my account"],
}


def write(path: Path, rows: list[tuple[str, str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "category"])
        writer.writerows(rows)
    return path


GENERAL = [
    Example("thanks, all sorted", None, "value"),
    Example("still broken after three calls", None, "failure", failure_kind="repeat"),
]


def test_official_prints_full_training_and_curve_rows_and_counts_shared_texts(
    tmp_path: Path,
) -> None:
    train = write(
        tmp_path / "train.csv",
        [(t + suffix, c) for c, texts in INTENTS.items() for t in texts for suffix in ("", "!")],
    )
    # One test text is also a training text: counted, kept.
    test = write(
        tmp_path / "test.csv",
        [
            ("where is my new card", "Card_arrival"),
            ("rate for dollars", "Exchange_rate"),
            ("top up failed again", "Top_up_failed"),
        ],
    )

    table = banking77.official(
        train,
        test,
        curve=(2,),
        seeds=(0, 1),
        variants={"without embeddings": VARIANTS["without embeddings"]},
        general=GENERAL,
    )

    assert "Training split 18 rows, 3 intents, 6-6 rows each" in table
    assert "test split 3 rows" in table
    assert "Texts in both splits: 1 test rows exactly" in table
    lines = table.splitlines()
    curve = next(line for line in lines if line.startswith("| 2, mean of 2 seeds"))
    assert curve.split(" | ")[1] == "6"  # 2 rows x 3 intents
    full = next(line for line in lines if line.startswith("| all (6-6)"))
    assert full.split(" | ")[1] == "18"
    accuracy = float(full.split(" | ")[2].strip("*").split()[0].strip("*"))
    assert 0.0 <= accuracy <= 1.0


def test_draw_per_intent_takes_k_of_each_and_depends_on_the_seed() -> None:
    rows = [Example(f"{c} {i}", c.lower(), "value") for c in INTENTS for i in range(10)]

    drawn = {seed: banking77.draw_per_intent(rows, 4, seed) for seed in (0, 1)}

    assert all(len(d) == 12 for d in drawn.values())
    assert {e.purpose for e in drawn[0]} == {c.lower() for c in INTENTS}
    assert drawn[0] != drawn[1]


def test_main_without_train_keeps_the_test_split_alone_and_refuses_bad_arguments(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[tuple[str, tuple[Path, ...]]] = []

    def run(path: Path) -> str:
        seen.append(("run", (path,)))
        return ""

    def official(train: Path, test: Path) -> str:
        seen.append(("official", (train, test)))
        return ""

    monkeypatch.setattr(banking77, "run", run)
    monkeypatch.setattr(banking77, "official", official)
    monkeypatch.setattr("os.sched_setaffinity", lambda *_: None, raising=False)

    banking77.main(["test.csv"])
    banking77.main(["--train", "train.csv", "test.csv"])
    with pytest.raises(SystemExit):
        banking77.main(["--train", "train.csv"])
    with pytest.raises(SystemExit):
        banking77.main(["test.csv", "--train", "train.csv"])

    assert seen == [
        ("run", (Path("test.csv"),)),
        ("official", (Path("train.csv"), Path("test.csv"))),
    ]


def _good_pair(tmp_path: Path) -> tuple[Path, Path]:
    train = write(tmp_path / "train.csv", [(t, c) for c, texts in INTENTS.items() for t in texts])
    test = write(tmp_path / "test.csv", [("rate for dollars", "Exchange_rate")])
    return train, test


BAD_INPUTS: dict[str, tuple[str | None, str]] = {
    # name: (file content, or None for no file; what the message must say)
    "missing": (None, "cannot read: No such file or directory"),
    "other columns": ("query,label\nwhere is my card,Card_arrival\n", "found query,label"),
    "capitalised header": ("Text,Category\nwhere is my card,Card_arrival\n", "found Text,Category"),
    "tab-separated": ("text\tcategory\nwhere is my card\tCard_arrival\n", "found text\tcategory"),
    "empty": ("", "found no header (empty file)"),
    "no labelled row": (
        "text,category\nwhere is my card,\n,Card_arrival\n",
        "no labelled rows left",
    ),
}


@pytest.mark.parametrize("which", ["train", "test"])
@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_official_refuses_a_bad_file_before_any_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, which: str, case: str
) -> None:
    train, test = _good_pair(tmp_path)
    bad = train if which == "train" else test
    content, says = BAD_INPUTS[case]
    if content is None:
        bad.unlink()
    else:
        bad.write_text(content, encoding="utf-8")

    def no_training(*_: object, **__: object) -> None:
        raise AssertionError("trained before the inputs were checked")

    monkeypatch.setattr(TextModel, "train", no_training)
    with pytest.raises(SystemExit) as refused:
        banking77.official(train, test, curve=(1,), seeds=(0,), general=GENERAL)

    message = str(refused.value.code)
    print(message)
    assert message.startswith(f"{bad}: ")
    assert says in message
    if case in ("other columns", "capitalised header", "tab-separated", "empty"):
        assert "needs the columns text,category" in message


def test_run_without_train_refuses_a_bad_test_file_before_any_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = tmp_path / "test.csv"
    bad.write_text("query,label\nwhere is my card,Card_arrival\n", encoding="utf-8")
    monkeypatch.setattr(banking77, "general_rows", lambda *_: GENERAL)

    def no_training(*_: object, **__: object) -> None:
        raise AssertionError("trained before the input was checked")

    monkeypatch.setattr(TextModel, "train", no_training)
    with pytest.raises(SystemExit, match=r"needs the columns text,category; found query,label"):
        banking77.run(bad)
    with pytest.raises(SystemExit, match=r"cannot read: No such file or directory"):
        banking77.run(tmp_path / "absent.csv")
