"""`bench external_twcs`: which tweets are items and whose, agreement, gold set, figures
(no model is trained here)."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import bench.external_twcs as twcs
from bench.external_twcs import (
    LABEL_PURPOSE,
    Item,
    Spread,
    agreement,
    as_labels,
    cohen_kappa,
    curve_sources,
    draw,
    figures,
    first_contacts,
    fit_with_labels,
    gold,
    read_labels,
    spread,
)
from services.classifier.model.examples import AUDIT, Example

COLUMNS = (
    "tweet_id",
    "author_id",
    "inbound",
    "text",
    "response_tweet_id",
    "in_response_to_tweet_id",
)


def tweet(*values: str) -> dict[str, str]:
    return dict(zip(COLUMNS, values, strict=True))


def test_first_contacts_are_customers_opening_tweets_numbered_in_file_order() -> None:
    rows = [
        tweet("1", "sprintcare", "False", "@115712 I understand.", "2", "3.0"),
        tweet("2", "115712", "True", "@sprintcare and how?", "", "1.0"),  # a reply: not an item
        tweet("8", "115712", "True", "@sprintcare is the worst", "9,6", ""),
        tweet("6", "sprintcare", "False", "@115712 Please DM us", "5", "8.0"),
        tweet("18", "115713", "True", "@115714 y'all lie", "17", ""),
        tweet("17", "sprintcare", "False", "@115713 DM us", "", "18.0"),
        tweet("20", "115715", "True", "hi @115714 and @SPRINTCARE fix it", "", ""),
        tweet("22", "115716", "True", "@115714 @NoReply hello", "", ""),
        tweet("24", "115717", "True", "@115714 only numbers", "", ""),
    ]

    assert first_contacts(rows) == [
        Item(1, "8", "sprintcare", "@sprintcare is the worst"),
        # a numeric mention only: the company is the account that answered
        Item(2, "18", "sprintcare", "@115714 y'all lie"),
        # no reply: the first non-numeric mention, spelt as the support account spells it
        Item(3, "20", "sprintcare", "hi @115714 and @SPRINTCARE fix it"),
        Item(4, "22", "NoReply", "@115714 @NoReply hello"),
        Item(5, "24", "unknown", "@115714 only numbers"),
    ]


def test_cohen_kappa_of_a_textbook_table() -> None:
    # 20 yes/yes, 5 yes/no, 10 no/yes, 15 no/no: observed 0.7, chance 0.5 -> 0.4
    pairs = [("y", "y")] * 20 + [("y", "n")] * 5 + [("n", "y")] * 10 + [("n", "n")] * 15

    assert cohen_kappa(pairs) == pytest.approx(0.4)
    assert math.isnan(cohen_kappa([("y", "y")] * 3))


def test_agreement_counts_demands_and_none_separately() -> None:
    a = {1: "value", 2: "failure", 3: "none", 4: "failure", 5: "value"}
    b = {1: "value", 2: "value", 3: "none", 4: "none", 5: "value", 6: "failure"}

    result = agreement(a, b)

    assert result.items == 5  # only items both labelled
    assert result.raw == pytest.approx(3 / 5)
    assert result.demands == 3  # items 1, 2, 5
    assert result.demands_raw == pytest.approx(2 / 3)
    assert (result.none_a, result.none_b, result.none_both) == (1, 2, 1)
    assert result.demand_and_none == 1


def test_gold_is_the_same_demand_type_from_both_or_a_alone() -> None:
    a = {1: "value", 2: "failure", 3: "none", 4: "failure"}
    b = {1: "value", 2: "value", 3: "none", 4: "failure"}

    assert gold(a, b) == {1: "value", 4: "failure"}
    assert gold(a, None) == {1: "value", 2: "failure", 4: "failure"}


def test_figures_against_always_majority() -> None:
    result = figures([1, 1, 1, 0], [1, 0, 0, 0])

    assert result.accuracy == pytest.approx(0.5)
    assert result.majority == pytest.approx(0.75)
    assert result.true_share == pytest.approx(0.75)
    assert result.predicted_share == pytest.approx(0.25)
    assert result.margin == pytest.approx(-0.25)


def test_labels_by_item_or_both_annotators_by_tweet(tmp_path: Path) -> None:
    items = [Item(1, "8", "c", "t"), Item(2, "18", "c", "t")]
    one = tmp_path / "a.csv"
    one.write_text("item,label,sure\n1,Value,yes\n2,none,no\n", encoding="utf-8")
    both = tmp_path / "both.csv"
    both.write_text(
        "tweet_id,label_a,sure_a,label_b,sure_b\n18,failure,yes,value,no\n8,value,yes,value,yes\n",
        encoding="utf-8",
    )
    bad = tmp_path / "bad.csv"
    bad.write_text("item,label,sure\n1,complaint,yes\n", encoding="utf-8")

    assert read_labels(one, items) == ({1: ("value", "yes"), 2: ("none", "no")}, None)
    assert read_labels(both, items) == (
        {2: ("failure", "yes"), 1: ("value", "yes")},
        {2: ("value", "no"), 1: ("value", "yes")},
    )
    with pytest.raises(ValueError, match="complaint"):
        read_labels(bad, items)


def test_draw_takes_k_distinct_items_by_seed_and_every_item_at_all() -> None:
    items = [9, 3, 7, 1, 5, 2, 8]

    drawn = draw(items, 3, seed=0)

    assert len(drawn) == len(set(drawn)) == 3
    assert set(drawn) <= set(items)
    assert draw(items, 3, seed=0) == drawn  # the seed fixes the draw
    assert draw(list(reversed(items)), 3, seed=0) == drawn  # not the order given
    assert {tuple(draw(items, 3, seed)) for seed in (0, 1, 2)} != {tuple(drawn)}
    assert draw(items, 0, seed=1) == []
    assert draw(items, None, seed=1) == draw(items, 7, seed=2) == sorted(items)


def test_labels_carry_a_purpose_no_taxonomy_of_ours_defines() -> None:
    labels = as_labels([2, 1], {1: "value", 2: "failure"}, {1: "hello", 2: "still broken"})

    assert labels == [
        Example("still broken", LABEL_PURPOSE, "failure", reason=AUDIT),
        Example("hello", LABEL_PURPOSE, "value", reason=AUDIT),
    ]
    # train_model keeps a label only with a purpose; outside the taxonomy it teaches
    # value/failure alone
    for sources in curve_sources().values():
        taxonomy = sources.load_taxonomy()
        assert taxonomy is not None
        assert LABEL_PURPOSE not in taxonomy.purpose_slugs


def test_spread_is_mean_and_range_over_seeds() -> None:
    result = spread([0.7, 0.76, 0.73])

    assert result.mean == pytest.approx(0.73)
    assert (result.low, result.high) == (0.7, 0.76)
    assert spread([0.5]) == Spread(0.5, 0.5, 0.5)


def test_fit_with_labels_trains_the_drawn_labels_after_checking_their_purpose(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[object, dict[str, Any]]] = []
    model = object()

    def fake_train(sources: object, **kwargs: Any) -> Any:
        calls.append((sources, kwargs))
        return SimpleNamespace(model=model)

    monkeypatch.setattr(twcs, "train_model", fake_train)
    sources = next(iter(curve_sources().values()))
    truth = {1: "value", 2: "failure", 3: "failure"}
    texts = {1: "hello", 2: "still broken", 3: "broken again"}

    fitted = fit_with_labels(sources, truth, texts, 2, seed=1, reason="test")

    assert fitted is model
    assert calls == [
        (
            sources,
            {
                "reason": "test",
                "labels": as_labels(draw(truth, 2, 1), truth, texts),
                "with_evaluation": False,
            },
        )
    ]
    # a purpose the recipe's taxonomy defines: stops before training
    taxonomy = sources.load_taxonomy()
    assert taxonomy is not None
    monkeypatch.setattr(twcs, "LABEL_PURPOSE", sorted(taxonomy.purpose_slugs)[0])
    with pytest.raises(SystemExit, match="is a purpose of"):
        fit_with_labels(sources, truth, texts, 2, seed=1, reason="test")
    assert len(calls) == 1
