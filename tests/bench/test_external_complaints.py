"""`bench external_complaints`: parsing and checking the file, the fixed split, the metrics,
and that without ``--final`` nothing of the test half is judged or learnt (models faked: no
model is trained here)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import bench.external_complaints as ec
from bench.external_complaints import (
    Tweet,
    balanced_accuracy,
    bucket,
    load,
    parse,
    roc_auc,
    scores,
    split,
)
from services.classifier.model.examples import Example

# ids by their hash mod 4 (sha256("1") ends in ...4b: 0x4b % 4 = 3): 0 = labels pool, 2 =
# dev-eval (development half); 1 and 3 = test half
BUCKETS = {
    **{1: 3, 2: 1, 3: 2, 4: 2, 5: 1, 6: 3, 7: 1, 8: 3, 9: 3, 10: 1, 11: 0, 12: 0},
    **{13: 0, 14: 1, 18: 2},
}


def synthetic() -> str:
    """Twelve tweets to companies, ids 1-12 (a complaint says "broken": the fake model's
    cue), then three random Twitter negatives, one in each part of the split."""
    lines = []
    for i in range(1, 13):
        complaint = i % 3 != 0
        text = f"@Acme order {i} broken, again" if complaint else f'"@Acme ""love"" it, {i}"'
        if complaint:
            text = f'"{text}"'  # a comma inside: quoted
        lines.append(f"{i},{text},{int(complaint)},{ec.DOMAINS[i % 3]}")
    lines += [
        "13,5 people followed me,0,random_tweet",
        "14,@friend he is smh,0,random_reply",
        "18,@friend so broken lol,0,random_reply",  # a random negative the fake calls failure
    ]
    return "\n".join(lines) + "\n"


def test_parse_reads_quoted_text_with_commas_quotes_and_newlines() -> None:
    text = (
        '10,"@Acme my order, again",1,food\n'
        '11,"@Acme ""great"" service\nsecond line",0,other\n'
        "12,@Acme plain,0,cars\n"
    )

    tweets, problems = parse(text)

    assert problems == []
    assert tweets == [
        Tweet(1, 1, "10", "@Acme my order, again", 1, "food"),
        Tweet(2, 2, "11", '@Acme "great" service\nsecond line', 0, "other"),
        Tweet(3, 4, "12", "@Acme plain", 0, "cars"),  # the record before took two lines
    ]


def test_parse_reports_each_malformed_record_with_its_line() -> None:
    text = (
        "1,ok,1,food\n"
        "2,too,many,1,food\n"
        "3,bad label,2,food\n"
        "4,bad domain,1,Food\n"
        "x5,bad id,0,food\n"
        "1,duplicate,0,retail\n"
        "6,short\n"
        "7,fine,0,transport\n"
    )

    tweets, problems = parse(text)

    assert [t.tweet_id for t in tweets] == ["1", "7"]
    assert [t.item for t in tweets] == [1, 2]
    assert [p.split(" (")[0] for p in problems] == [f"line {n}" for n in range(2, 8)]
    for problem, words in zip(
        problems,
        ["5 fields", "label '2'", "domain 'Food'", "not a number", "already on line 1", "2 fields"],
        strict=True,
    ):
        assert words in problem


def test_load_stops_on_a_malformed_file_and_checks_a_good_one(tmp_path: Path) -> None:
    good = tmp_path / "good.csv"
    good.write_text(synthetic(), encoding="utf-8")
    bad = tmp_path / "bad.csv"
    bad.write_text(synthetic() + "19,cut off\n", encoding="utf-8")

    data = load(good)
    checks = data.checks()

    assert checks["tweets"] == 15
    assert (checks["company_tweets"], checks["random_tweets"]) == (12, 3)
    assert checks["complaints"] == 8
    assert checks["matches_paper"] is False
    assert checks["domains"]["food"] == {"tweets": 4, "complaints": 0}
    assert checks["domains"]["apparel"] == {"tweets": 4, "complaints": 4}
    assert checks["domains"]["random_reply"] == {"tweets": 2, "complaints": 0}
    assert checks["split"] == {"dev": 6, "test": 9, "pool": 3, "dev_eval": 3}
    assert checks["company_split"] == {"dev": 4, "test": 8, "pool": 2, "dev_eval": 2}
    assert len(checks["sha256"]) == 64
    with pytest.raises(SystemExit, match="line 16"):
        load(bad)


def test_split_is_the_fixed_hash_rule_stable_and_disjoint() -> None:
    tweets, _ = parse(synthetic())

    assert {int(t.tweet_id): bucket(t.tweet_id) for t in tweets} == BUCKETS
    parts = split(tweets)

    ids = {name: [int(t.tweet_id) for t in getattr(parts, name)] for name in parts.__slots__}
    assert ids == {
        "dev": [3, 4, 11, 12, 13, 18],  # file order kept
        "test": [1, 2, 5, 6, 7, 8, 9, 10, 14],
        "pool": [11, 12, 13],
        "dev_eval": [3, 4, 18],
    }
    # the same ids in another order fall the same way
    again = split(list(reversed(tweets)))
    assert sorted(t.tweet_id for t in again.dev) == sorted(t.tweet_id for t in parts.dev)


def test_roc_auc_of_a_hand_computed_case_with_a_tie() -> None:
    # failures score 0.9, 0.4, 0.2; values 0.8, 0.4. Of the 6 (failure, value) pairs, 0.9 beats
    # both (2), 0.4 ties one (0.5) and loses one, 0.2 loses both: 2.5 / 6
    truth = [1, 0, 1, 0, 1]
    scored = [0.9, 0.8, 0.4, 0.4, 0.2]

    assert roc_auc(truth, scored) == pytest.approx(2.5 / 6)
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert roc_auc([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4]) == 0.0
    assert roc_auc([0, 1, 0, 1], [0.5] * 4) == 0.5  # a constant ranks nothing
    assert math.isnan(roc_auc([1, 1], [0.2, 0.9]))


def test_balanced_accuracy_and_scores_against_always_majority() -> None:
    result = scores([1, 1, 1, 0], [1, 0, 0, 0], [0.9, 0.4, 0.3, 0.2])

    assert balanced_accuracy([1, 1, 1, 0], [1, 0, 0, 0]) == pytest.approx((1 / 3 + 1) / 2)
    assert result.n == 4
    assert result.accuracy == pytest.approx(0.5)
    assert result.majority == pytest.approx(0.75)
    assert result.auc == 1.0  # every failure above the value item, though two are called value
    assert result.balanced_accuracy == pytest.approx(2 / 3)
    assert (result.true_share, result.predicted_share) == (0.75, 0.25)


@dataclass(frozen=True)
class _Said:
    demand_type: str


class FakeModel:
    """Calls "broken" failure; remembers every text it judged."""

    failure_prior = 0.5
    failure_prior_source = "fake"

    def __init__(self, judged: list[str]) -> None:
        self.judged = judged

    def predict_batch(self, texts: Sequence[str]) -> list[_Said]:
        self.judged.extend(texts)
        return [_Said("failure" if "broken" in t else "value") for t in texts]

    def failure_probabilities(self, texts: Sequence[str]) -> np.ndarray:
        return np.array([0.9 if "broken" in t else 0.1 for t in texts])


def test_measure_judges_the_development_half_only_and_prints_strict_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.csv"
    path.write_text(synthetic(), encoding="utf-8")
    judged: list[str] = []
    fake = ("fake", lambda: FakeModel(judged))
    monkeypatch.setattr(ec, "MODELS", {"a": fake, "b": fake})
    monkeypatch.setattr(ec, "DRAWS", 5)
    monkeypatch.setattr(os, "sched_setaffinity", lambda *_: None, raising=False)
    audited: list[int] = []
    real_audits = ec.audits

    def counted(truth: Sequence[int], machine: Sequence[int]) -> list[ec.Audit]:
        audited.append(len(truth))
        return real_audits(truth, machine)

    monkeypatch.setattr(ec, "audits", counted)

    ec.main([str(path), "--json"])

    result = json.loads(capsys.readouterr().out)  # strict: a nan would not parse as null
    dev_texts = {t.text for t in load(path).parts.dev}
    assert set(judged) == dev_texts
    assert result["scored_on"] == "dev"
    overall = result["models"]["a"]["overall"]  # the company tweets only
    assert (overall["n"], overall["accuracy"], overall["auc"]) == (4, 1.0, 1.0)
    # with the random negatives 13 (called value) and 18 (called failure): 5 of 6; the
    # failures (0.9) beat three of the four value items and tie one: AUC 3.5 / 4
    with_random = result["models"]["a"]["with_random"]
    assert (with_random["n"], with_random["accuracy"]) == (6, pytest.approx(5 / 6))
    assert with_random["auc"] == pytest.approx(0.875)
    domains = result["models"]["b"]["domains"]
    assert set(domains) == {"food", "apparel", "software", "random_tweet", "random_reply"}
    assert domains["random_reply"]["accuracy"] == 0.0
    # a domain with one class has no AUC: null in the JSON
    assert all(d["auc"] is None for d in domains.values())
    assert [a["audit"] for a in result["models"]["a"]["audits"]] == list(ec.AUDITS)
    assert audited == [4, 4]  # company tweets only, each model
    # the tables can be printed again from the JSON (nan read back as null: "n/a")
    assert "| fake | random_reply | 1 | 0.000 | 1.000 | **0.000** |" in ec.render_measure(result)

    judged.clear()
    ec.main([str(path), "--final"])
    assert set(judged) == {t.text for t in load(path).parts.test}
    assert "test half" in capsys.readouterr().out


def test_curve_learns_from_the_pool_and_scores_dev_eval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.csv"
    path.write_text(synthetic(), encoding="utf-8")
    data = load(path)
    judged: list[str] = []
    taught: list[list[Example]] = []

    @dataclass(frozen=True)
    class _Trained:
        model: Any

    def fake_train(_sources: object, *, labels: Sequence[Example], **_: object) -> _Trained:
        taught.append(list(labels))
        return _Trained(FakeModel(judged))

    monkeypatch.setattr(ec, "train_model", fake_train)

    result = ec.curve(data, final=False)

    assert set(judged) == {t.text for t in data.parts.dev_eval if t.company}  # not id 18
    pool = {t.text for t in data.parts.pool if t.company}  # not id 13
    assert {e.text for labels in taught for e in labels} == pool
    # k = 0 and all of the pool (2) per recipe; 25, 100 and 200 exceed the pool
    assert [(r["recipe"], r["k"], len(r["seeds"])) for r in result["rows"]] == [
        ("a", 0, 1),
        ("a", 2, 1),
        ("b", 0, 1),
        ("b", 2, 1),
    ]
    assert [len(labels) for labels in taught] == [0, 2, 0, 2]
    assert "| (b) cold start + own labels | 2 | 1 |" in ec.render_curve(result)

    judged.clear()
    taught.clear()
    final = ec.curve(data, final=True)
    assert set(judged) == {t.text for t in data.parts.test if t.company}
    dev = {t.text for t in data.parts.dev if t.company}
    assert {e.text for labels in taught for e in labels} == dev
    assert final["labels_from"] == "dev"
