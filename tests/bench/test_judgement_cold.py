"""`bench judgement`'s cold start where failure is rare: thinning by positions and the
runs judged from one set of probabilities (no model is trained here)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from bench import judgement
from bench.judgement import COLD_SHARES, SEEDS, ColdRun, cold_runs, cold_table, thinned
from services.classifier.model.examples import Example


def rows(failures: int, values: int) -> list[Example]:
    return [Example(text=f"f{i}", purpose="p", demand_type="failure") for i in range(failures)] + [
        Example(text=f"v{i}", purpose="p", demand_type="value") for i in range(values)
    ]


def test_thinned_positions_are_the_rows_thinned_keeps_with_the_same_draws() -> None:
    sample = rows(60, 140)
    random.Random(5).shuffle(sample)

    for share in (0.07, 0.25):
        by_rows = thinned(sample, share, random.Random(3))
        positions = judgement.thinned_positions(
            [e.demand_type for e in sample], share, random.Random(3)
        )

        assert [sample[i] for i in positions] == by_rows
        failures = sum(e.demand_type == "failure" for e in by_rows)
        assert failures == round(share / (1 - share) * 140)


def test_cold_runs_judge_each_thinned_set_from_the_same_probabilities() -> None:
    sample = rows(100, 100)
    # The model calls every failure right and the first 10 value rows failure.
    failure = np.array([0.9] * 100 + [0.6] * 10 + [0.2] * 90)

    runs = cold_runs("corpus sectors", "water", sample, failure)

    assert len(runs) == sum(1 if s is None else len(SEEDS) for s in COLD_SHARES)
    natural = [r for r in runs if r.aimed_share is None]
    assert len(natural) == 1
    assert natural[0].rows == 200
    assert natural[0].true_share == 0.5
    assert natural[0].accuracy == 190 / 200
    assert natural[0].predicted_share == 110 / 200
    rare = next(r for r in runs if r.aimed_share == 0.07)
    assert rare.rows == 100 + 8  # every value row, round(0.07 / 0.93 * 100) failures
    assert rare.accuracy == (108 - 10) / 108
    assert rare.majority == 100 / 108
    # 10 false failures cost more than always answering value: the case measured
    assert rare.margin < 0


def test_an_adjustment_sees_each_thinned_set_and_changes_the_calls() -> None:
    sample = rows(100, 100)
    failure = np.array([0.9] * 100 + [0.6] * 10 + [0.2] * 90)
    seen: list[int] = []

    def lower(probabilities: np.ndarray) -> np.ndarray:
        seen.append(len(probabilities))
        return probabilities * 0.8  # 0.6 -> 0.48: the 10 false failures become value

    runs = cold_runs("corpus sectors", "water", sample, failure, lower)

    assert seen == [r.rows for r in runs]
    assert all(r.accuracy == 1.0 for r in runs)


def test_the_table_counts_runs_at_least_majority_and_lists_the_others() -> None:
    runs = [
        ColdRun("corpus sectors", "water", 0.07, 0, 100, 0.07, 0.10, 0.95),
        ColdRun("corpus sectors", "banking", 0.07, 0, 100, 0.07, 0.15, 0.90),
        ColdRun("corpus sectors", "water", None, None, 200, 0.5, 0.5, 0.94),
    ]

    text = "\n".join(cold_table(runs))

    assert "| corpus sectors | 0.07 | 2 | 0.070 | 0.930 | **0.925** | 1 of 2 | -3.0 |" in text
    assert "| corpus sectors | natural | 1 |" in text
    assert "- banking, 0.07 (seed 0), 100 rows: 0.900 / 0.930 (-3.0 points)" in text
    assert "water, 0.07" not in text.split("Runs below")[1]


def test_em_finds_the_prior_of_calibrated_probabilities_after_a_shift() -> None:
    # Scores whose probabilities are calibrated at prior 1/2; the rows drawn at 10% failure.
    rng = np.random.default_rng(0)
    failures, values = rng.normal(1.0, 1.0, 1_000), rng.normal(-1.0, 1.0, 9_000)
    scores = np.concatenate([failures, values])
    probabilities = 1 / (1 + np.exp(-2 * scores))  # the log-likelihood ratio of N(±1, 1)

    assert judgement.em_prior(probabilities, 0.5) == pytest.approx(0.1, abs=0.01)
    assert float((probabilities >= 0.5).mean()) > 0.2  # the calls alone: about 0.23


def test_the_candidates_table_has_a_column_per_prior_and_the_natural_shares() -> None:
    def run(name_shift: float, share: float | None, sector: str) -> ColdRun:
        return ColdRun(
            "corpus sectors",
            sector,
            share,
            None if share is None else 0,
            100,
            0.07 if share else 0.5,
            0.07,
            0.95 + name_shift,
        )

    candidates = {
        name: [run(i / 100, s, sector) for s in (0.07, None) for sector in ("water", "banking")]
        for i, name in enumerate(judgement.CANDIDATES)
    }

    text = "\n".join(judgement.candidates_table(candidates))

    assert "| corpus sectors | 0.07 | 2 | 0.070 | 0.930 | 0.950 · 2/2 · 0.070 | 0.960 · 2/2" in text
    assert "| water | 0.500 | 0.950 | 0.960 | 0.970 | 0.980 |" in text
    assert "| **worst** | | 0.9500 | 0.9600 | 0.9700 | 0.9800 |" in text
