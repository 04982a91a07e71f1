"""`bench external_complaints`: parsing and checking the file, the fixed split, the metrics,
and that without ``--final`` nothing of the test half is judged or learnt (models faked: no
model is trained here)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import bench.external_complaints as ec
import bench.external_twcs as twcs
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
from bench.judgement import POPULATION, simulate_audits
from services.classifier.model.examples import Example

# ids by their hash mod 4 (sha256("1") ends in ...4b: 0x4b % 4 = 3): 0 = labels pool, 2 =
# dev-eval (development half); 1 and 3 = test half
BUCKETS = {
    **{1: 3, 2: 1, 3: 2, 4: 2, 5: 1, 6: 3, 7: 1, 8: 3, 9: 3, 10: 1, 11: 0, 12: 0},
    **{13: 0, 14: 1, 18: 2},
}


def synthetic() -> str:
    """Twelve tweets to companies, ids 1-12 (a complaint says "broken": the fake model's
    cue; 12, not one, says "hardly broken": called failure, P(failure) 0.5), and three random
    Twitter negatives, one in each part of the split: 13 among the company tweets (as in the
    real file), 14 and 18 at the end."""
    lines = []
    for i in range(1, 13):
        complaint = i % 3 != 0
        text = f"@Acme order {i} broken, again" if complaint else f'"@Acme ""love"" it, {i}"'
        if complaint:
            text = f'"{text}"'  # a comma inside: quoted
        if i == 12:
            text = '"@Acme love it, hardly broken, 12"'
        lines.append(f"{i},{text},{int(complaint)},{ec.DOMAINS[i % 3]}")
        if i == 3:
            lines.append("13,5 people followed me,0,random_tweet")
    lines += [
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
        "dev": [3, 13, 4, 11, 12, 18],  # file order kept
        "test": [1, 2, 5, 6, 7, 8, 9, 10, 14],
        "pool": [13, 11, 12],
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
    assert math.isnan(roc_auc([0, 0, 0], [0.2, 0.9, 0.5]))


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
    """Calls "broken" failure, P(failure) 0.9, else value, 0.1; "hardly broken" failure at
    0.5 (its probability ranks it below the other failures, its label does not). Taught a
    failure label (``always_failure``): calls everything failure, 0.9. Remembers every text
    it judged."""

    failure_prior = 0.5
    failure_prior_source = "fake"

    def __init__(self, judged: list[str], always_failure: bool = False) -> None:
        self.judged = judged
        self.always_failure = always_failure

    def predict_batch(self, texts: Sequence[str]) -> list[_Said]:
        self.judged.extend(texts)
        return [
            _Said("failure" if self.always_failure or "broken" in t else "value") for t in texts
        ]

    def failure_probabilities(self, texts: Sequence[str]) -> np.ndarray:
        if self.always_failure:
            return np.full(len(texts), 0.9)
        return np.array(
            [0.5 if "hardly broken" in t else 0.9 if "broken" in t else 0.1 for t in texts]
        )


def test_measure_judges_the_development_half_only_and_prints_strict_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.csv"
    path.write_text(synthetic(), encoding="utf-8")
    judged: list[str] = []
    fake = ("fake", lambda: FakeModel(judged))
    monkeypatch.setattr(ec, "MODELS", {"a": fake, "b": fake})
    monkeypatch.setattr(ec, "DRAWS", 20)
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
    # the company tweets only (3 value, 4 and 11 failure, 12 value called failure), though
    # random 13 lies between them in the file: 3 of 4 right; P(failure) puts both failures
    # (0.9) above both value tweets (0.1, 0.5): AUC 1, where the labels would give 0.75
    overall = result["models"]["a"]["overall"]
    assert overall == {
        "n": 4,
        "accuracy": 0.75,
        "majority": 0.5,
        "auc": 1.0,
        "balanced_accuracy": 0.75,
        "true_share": 0.5,
        "predicted_share": 0.75,
    }
    domains = result["models"]["b"]["domains"]
    assert set(domains) == {"food", "apparel", "software"}  # the random negatives: no row
    assert (domains["food"]["n"], domains["food"]["accuracy"]) == (2, 0.5)  # 3 and 12
    # a domain with one class has no AUC: null in the JSON
    assert all(d["auc"] is None for d in domains.values())
    # the random negatives of the half: counted, and the share called failure (18), apart
    assert result["models"]["a"]["random"] == {
        "all": {"n": 2, "called_failure": 0.5},
        "random_tweet": {"n": 1, "called_failure": 0.0},
        "random_reply": {"n": 1, "called_failure": 1.0},
    }
    # the audits: (person, machine) pairs of the company tweets in file order, as
    # simulate_audits takes them; mean half-width and mean error over the draws
    pairs = [(0, 0), (1, 1), (1, 1), (0, 1)]
    expected = []
    for audit in twcs.AUDITS:
        drawn = simulate_audits(pairs, audit, 20, np.random.default_rng(0), population=POPULATION)
        expected.append(
            asdict(
                ec.Audit(
                    POPULATION,
                    audit,
                    20,
                    drawn.coverage,
                    float(np.mean(drawn.half_widths)),
                    float(np.mean(drawn.errors)),
                )
            )
        )
    assert result["models"]["a"]["audits"] == result["models"]["b"]["audits"] == expected
    assert audited == [4, 4]  # each model
    # the tables can be printed again from the JSON (nan read back as null: "n/a")
    table = ec.render_measure(result)
    assert "| fake | food | 2 | 0.000 | 0.500 | **0.500** | 1.000 | -50.0 | **n/a** |" in table
    assert "fake: all 2 (0.500), random_tweet 1 (0.000), random_reply 1 (1.000)" in table
    assert "with the random" not in table

    judged.clear()
    ec.main([str(path), "--final"])
    assert set(judged) == {t.text for t in load(path).parts.test}
    assert "test half" in capsys.readouterr().out


@dataclass(frozen=True)
class _Trained:
    model: Any


def fake_training(
    monkeypatch: pytest.MonkeyPatch, judged: list[str], taught: list[list[Example]]
) -> None:
    """``train_model`` (behind ``external_twcs.fit_with_labels``) faked: records the labels;
    the model calls everything failure once taught a failure label."""

    def fake_train(_sources: object, *, labels: Sequence[Example], **_: object) -> _Trained:
        taught.append(list(labels))
        return _Trained(FakeModel(judged, any(e.demand_type == "failure" for e in labels)))

    monkeypatch.setattr(twcs, "train_model", fake_train)


def test_curve_learns_from_the_pool_and_scores_dev_eval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.csv"
    path.write_text(synthetic(), encoding="utf-8")
    data = load(path)
    judged: list[str] = []
    taught: list[list[Example]] = []
    fake_training(monkeypatch, judged, taught)

    result = ec.curve(data, final=False)

    assert set(judged) == {t.text for t in data.parts.dev_eval if t.company}  # not id 18
    # the pool's company tweets (not 13): 11 a complaint, 12 not; typed with the purpose no
    # taxonomy defines
    text = {t.tweet_id: t.text for t in data.tweets}
    assert {(e.text, e.purpose, e.demand_type) for labels in taught for e in labels} == {
        (text["11"], twcs.LABEL_PURPOSE, "failure"),
        (text["12"], twcs.LABEL_PURPOSE, "value"),
    }
    assert result["labels_complaint_share"] == 0.5
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


def test_curve_draws_each_seed_below_the_pool_and_reports_their_spread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.csv"
    path.write_text(synthetic(), encoding="utf-8")
    judged: list[str] = []
    taught: list[list[Example]] = []
    fake_training(monkeypatch, judged, taught)
    monkeypatch.setattr(ec, "CURVE_SIZES", (0, 1, None))

    result = ec.curve(load(path), final=False)

    assert [(r["recipe"], r["k"], r["seeds"]) for r in result["rows"]] == [
        ("a", 0, [0]),
        ("a", 1, [0, 1, 2]),
        ("a", 2, [0]),
        ("b", 0, [0]),
        ("b", 1, [0, 1, 2]),
        ("b", 2, [0]),
    ]
    assert result["fits"] == len(taught) == 10
    # k = 1: seed 0 draws 12 (value: the fake as it is: dev-eval's 3 and 4 right), seeds 1
    # and 2 draw 11 (failure: everything called failure, 1 of 2 right)
    one = result["rows"][1]
    assert [[e.demand_type for e in labels] for labels in taught[1:4]] == [
        ["value"],
        ["failure"],
        ["failure"],
    ]
    assert one["accuracy"] == {
        "mean": pytest.approx(2 / 3),
        "low": 0.5,
        "high": 1.0,
        "values": [1.0, 0.5, 0.5],
    }
    assert one["predicted_share"]["values"] == [0.5, 1.0, 1.0]
    assert "| (a) default + own labels | 1 | 3 |" in ec.render_curve(result)
    assert "**0.667 (0.500 to 1.000)**" in ec.render_curve(result)


def test_curve_stops_before_any_fit_if_a_taxonomy_defines_the_labels_purpose(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.csv"
    path.write_text(synthetic(), encoding="utf-8")
    taught: list[list[Example]] = []
    fake_training(monkeypatch, [], taught)
    taxonomy = next(iter(twcs.curve_sources().values())).load_taxonomy()
    assert taxonomy is not None
    monkeypatch.setattr(twcs, "LABEL_PURPOSE", sorted(taxonomy.purpose_slugs)[0])

    with pytest.raises(SystemExit, match="is a purpose of"):
        ec.curve(load(path), final=False)
    assert taught == []
