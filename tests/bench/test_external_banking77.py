"""`bench external_banking77 --train`: the official protocol's table on a tiny synthetic pair."""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

import bench.external_banking77 as banking77
from bench.judgement import VARIANTS
from services.classifier.model.examples import Example
from services.classifier.model.text_model import TextModel
from services.classifier.taxonomy import Taxonomy

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


def test_official_trains_only_on_the_training_split_and_reports_every_fit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train = write(
        tmp_path / "train.csv",
        [(t + suffix, c) for c, texts in INTENTS.items() for t in texts for suffix in ("", "!")],
    )
    # One test text is also a training text; two more once case and punctuation are dropped
    # (case only: the training split's "how is the rate set", under another intent; and "rate for
    # euros"); one is only in the test split. Counted, all kept.
    test = write(
        tmp_path / "test.csv",
        [
            ("where is my new card", "Card_arrival"),
            ("Rate for EUROS ?", "Exchange_rate"),
            ("top up failed again", "Top_up_failed"),
            ("How is the rate set", "Card_arrival"),
        ],
    )
    train_texts = {t + suffix for texts in INTENTS.values() for t in texts for suffix in ("", "!")}
    test_only = {"Rate for EUROS ?", "top up failed again", "How is the rate set"}
    events: list[str] = []
    fitted: list[list[str]] = []
    scored: list[tuple[int, banking77.Fit]] = []
    real_train, real_fit = TextModel.train, banking77.fit_and_score

    def spy_train(examples: Sequence[Example], *args: Any, **kwargs: Any) -> TextModel:
        events.append("train")
        fitted.append([e.text for e in examples])
        return real_train(examples, *args, **kwargs)

    # The tiny data is learnt perfectly; distinct scores (full fit, seed 0, seed 1) show
    # which figure lands where in the table.
    scores = iter([(0.9, 0.8), (0.5, 0.4), (0.7, 0.6)])

    def spy_fit(train: Sequence[Example], *args: Any) -> banking77.Fit:
        accuracy, macro_f1 = next(scores)
        fit = replace(real_fit(train, *args), accuracy=accuracy, macro_f1=macro_f1)
        scored.append((len(train), fit))
        return fit

    def code_state() -> str:
        events.append("code state")
        return "commit abc1234, services/classifier as committed"

    monkeypatch.setattr(TextModel, "train", spy_train)
    monkeypatch.setattr(banking77, "fit_and_score", spy_fit)
    monkeypatch.setattr(banking77, "code_state", code_state)
    monkeypatch.setattr(banking77, "_cores", lambda: "3 cores (not pinned to one)")

    table = banking77.official(
        train,
        test,
        curve=(2,),
        seeds=(0, 1),
        variants={"without embeddings": VARIANTS["without embeddings"]},
        general=GENERAL,
    )
    print(table)

    # Only training-split texts reach training; the full fit, then one fit per seed.
    assert all(set(texts) <= train_texts for texts in fitted)
    assert not test_only & {t for texts in fitted for t in texts}
    assert [len(texts) for texts in fitted] == [18, 6, 6]
    assert events[0] == "code state"  # read before the code is run, not after
    assert "commit abc1234, services/classifier as committed, 3 cores" in table
    for path in (train, test):
        assert f"SHA-256 `{hashlib.sha256(path.read_bytes()).hexdigest()[:16]}…`" in table
    assert "Training split 18 rows, 3 intents, 6-6 rows each" in table
    assert "test split 4 rows, 3 intents, 1-2 each" in table
    assert "1 exactly, 3 ignoring case, punctuation and spacing (these included; 1 of them" in table
    lines = table.splitlines()
    curve = next(line for line in lines if line.startswith("| 2: ")).split(" | ")
    assert curve[0] == "| 2: mean (range) of 2 fits, one per seed"
    assert curve[1] == "6"  # 2 rows x 3 intents
    assert curve[2] == "0.600 (0.500-0.700); 0.500"  # accuracy mean (range); macro-F1 mean
    full = next(line for line in lines if line.startswith("| all (6-6)")).split(" | ")
    assert full[1] == "18"  # the rows the full fit was given
    assert full[2] == "0.900; 0.800"  # not bold: not the shipped variant
    assert [rows for rows, _ in scored] == [18, 6, 6]


@dataclass(frozen=True)
class Predicted:
    purpose: str


@dataclass(frozen=True)
class Answers:
    by_text: dict[str, str]

    def predict_batch(self, texts: Sequence[str]) -> list[Predicted]:
        return [Predicted(self.by_text[t]) for t in texts]


def test_fit_and_score_trains_on_train_only_and_scores_accuracy_and_macro_f1(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    train = [Example(f"{c} {i}", c, "value") for c in ("a", "b") for i in range(2)]
    test = [Example(t, c, "value") for t, c in (("t1", "a"), ("t2", "a"), ("t3", "b"), ("t4", "b"))]
    # 3 of 4 right; "c" is predicted but is no test intent: per-intent F1 a 1, b 2/3.
    answers = Answers({"t1": "a", "t2": "a", "t3": "b", "t4": "c"})
    clock = {"wall": 1000.0, "cpu": 100.0}  # advanced by training only
    trained: list[list[str]] = []

    def train_stub(examples: Sequence[Example], *_: Any, **__: Any) -> Answers:
        trained.append([e.text for e in examples])
        clock["wall"] += 7.0
        clock["cpu"] += 3.5
        return answers

    monkeypatch.setattr(TextModel, "train", train_stub)
    monkeypatch.setattr("time.perf_counter", lambda: clock["wall"])
    monkeypatch.setattr("time.process_time", lambda: clock["cpu"])

    fit = banking77.fit_and_score(
        train, test, Taxonomy.from_labels(["a", "b"]), VARIANTS["without embeddings"], GENERAL
    )

    assert trained == [[e.text for e in train]]
    assert fit.accuracy == pytest.approx(0.75)
    assert fit.macro_f1 == pytest.approx((1 + 2 / 3) / 2)  # over the test's intents only
    assert (fit.seconds, fit.cpu, fit.rows) == (7.0, 3.5, 4)


def test_spread_is_the_mean_then_min_max() -> None:
    assert banking77._spread([0.1, 0.3, 0.2]) == "0.200 (0.100-0.300)"
    assert banking77._spread([0.5]) == "0.500 (0.500-0.500)"


def test_cores_says_one_core_only_when_pinned(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda _: {0, 1, 2}, raising=False)
    assert banking77._cores() == "3 cores (not pinned to one)"
    monkeypatch.setattr("os.sched_getaffinity", lambda _: {1}, raising=False)
    assert banking77._cores() == "one core"


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
    for refused in (["--train", "train.csv"], ["--train"], []):
        with pytest.raises(SystemExit):
            banking77.main(refused)
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
