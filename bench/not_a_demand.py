"""The failure share among demands when people may answer "not a demand", on real text
(TWCS first contacts, issue 11): coverage and half-width of the 95% interval.

The classifier calls every contact a demand; on social posts many are not (praise, jokes,
chatter, marketing: ``none`` in ``bench/data/twcs_labels.csv``), and the shipped model calls
some of those failure. The number a manager wants is the failure share **among demands**.
This script measures, with random audits of ``AUDITS`` drawn ``DRAWS`` times each (seed
``SEED``), how often the 95% interval covers that number and how wide it is, for

- **new**: ``shared.estimates.estimate_share`` with the person's answer as it is: value,
  failure, or "not a demand" (``AuditPair(demand=False)``): the ratio estimator;
- **old**: the same function where people must call chatter value (no third answer): it
  estimates the failure share among *contacts*, which is then read as the share among
  demands (what the product reported before).

And, for **new**, the coverage of the interval of the share of contacts that are not
demands.

**Population.** The items both annotators (A and B) gave the same label, ``none`` included
(the three-class gold set of the development labels), judged by the shipped model's
value/failure head (model (a) of ``bench.external_twcs``: every item gets value or failure);
and, as a second view, A's labels on every item A labelled. Audits are drawn without
replacement from the set itself (the target: its own share among demands) and from
populations of ``POPULATION`` resampled from it (``bench judgement``'s convention).

**What a machine answer would buy** (``half_width_bounds``). The classifier cannot say "not a
demand"; should it learn to? The interval's width is the spread of the audit's residuals
z = f - R·d left after the machine's labels explain what they can. The script prints the
approximate half-width at an audit of 200 (1.96 · sd(residual of z on the machine's labels,
least squares) / √200 / the share of demands) for the machine as it is, for a machine that also
says demand or not *perfectly* (an upper bound for learning the class), and for machines whose
value/failure answer is right on a given share of demands (chatter called failure 30% of the
time, as model (a) does), averaged over ``BOUND_DRAWS`` seeded draws.

Run: ``.venv/bin/python -m bench.not_a_demand SLICE.csv bench/data/twcs_labels.csv`` (the
development slice of EVALUATION.md's TWCS section). One core; a minute or two.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from bench.code_state import code_state
from bench.external_twcs import default_model, first_contacts, read_labels, read_rows
from bench.judgement import POPULATION
from shared.estimates import AuditPair, estimate_share

AUDITS = (100, 200)
DRAWS = 1000
SEED = 0
USAGE = "usage: python -m bench.not_a_demand SLICE.csv LABELS.csv [LABELS_B.csv]"

# A row of a population: (machine failure, person failure, person demand).
Row = tuple[int, int, int]

BOUND_AUDIT = 200
BOUND_DRAWS = 50
BOUND_ACCURACIES = (0.80, 0.85, 0.90, 0.95)
CHATTER_CALLED_FAILURE = 0.3


@dataclass
class Coverage:
    """Of one estimator over the draws: hits of the truth, half-widths, errors."""

    hits: int = 0
    half_widths: list[float] = field(default_factory=list)
    errors: list[float] = field(default_factory=list)

    def add(self, truth: float, estimate: float, low: float, high: float) -> None:
        self.hits += low <= truth <= high
        self.half_widths.append((high - low) / 2)
        self.errors.append(abs(estimate - truth))

    def cells(self) -> str:
        n = len(self.errors)
        return (
            f"{self.hits / n:.3f} | {np.mean(self.half_widths) * 100:.1f} | "
            f"{np.mean(self.errors) * 100:.1f}"
        )


@dataclass
class Outcome:
    new: Coverage = field(default_factory=Coverage)
    old: Coverage = field(default_factory=Coverage)
    chatter: Coverage = field(default_factory=Coverage)  # the not-a-demand share (new)


def simulate(
    rows: Sequence[Row], audit: int, draws: int, rng: np.random.Generator, population: int | None
) -> Outcome:
    base = np.asarray(rows, dtype=np.int64)
    outcome = Outcome()
    for _ in range(draws):
        pop = base if population is None else base[rng.integers(0, len(base), population)]
        drawn = rng.choice(len(pop), size=min(audit, len(pop)), replace=False)
        demands = int(pop[:, 2].sum())
        truth = float(pop[:, 1].sum()) / demands
        machine_failures = int(pop[:, 0].sum())
        new = estimate_share(
            len(pop),
            machine_failures,
            [AuditPair(int(pop[i, 0]), int(pop[i, 1]), demand=bool(pop[i, 2])) for i in drawn],
        )
        # Without the answer a person calls chatter value: a demand, not failure.
        old = estimate_share(
            len(pop), machine_failures, [AuditPair(int(pop[i, 0]), int(pop[i, 1])) for i in drawn]
        )
        for coverage, result in ((outcome.new, new), (outcome.old, old)):
            assert result.estimate is not None
            assert result.ci_low is not None
            assert result.ci_high is not None
            coverage.add(truth, result.estimate, result.ci_low, result.ci_high)
        assert new.not_a_demand_share is not None
        assert new.not_a_demand_ci_low is not None
        assert new.not_a_demand_ci_high is not None
        outcome.chatter.add(
            1 - demands / len(pop),
            new.not_a_demand_share,
            new.not_a_demand_ci_low,
            new.not_a_demand_ci_high,
        )
    return outcome


def approximate_half_width(
    person_failure: np.ndarray, person_demand: np.ndarray, regressors: Sequence[np.ndarray]
) -> float:
    """Half-width (a share) at an audit of ``BOUND_AUDIT`` of the failure share among demands
    when the audit's z = f - R·d is corrected by a least-squares fit on ``regressors`` (the
    machine's labels over the same items), R being the true share."""
    ratio = person_failure.sum() / person_demand.sum()
    z = person_failure - ratio * person_demand
    design = np.column_stack([np.ones(len(z)), *regressors])
    beta, *_ = np.linalg.lstsq(design, z, rcond=None)
    residual = z - design @ beta
    spread = float(residual.std(ddof=design.shape[1]))
    return float(1.96 * spread / np.sqrt(BOUND_AUDIT) / float(person_demand.mean()))


def half_width_bounds(rows: Sequence[Row], rng: np.random.Generator) -> list[tuple[str, float]]:
    """(machine, approximate half-width) for the machine as it is, one that also says
    "not a demand" without error, and simulated machines of given value/failure accuracy."""
    base = np.asarray(rows, dtype=np.int64)
    machine, failure, demand = base[:, 0], base[:, 1], base[:, 2]
    out = [
        (
            "as it is (calls every contact a demand)",
            approximate_half_width(failure, demand, [machine]),
        ),
        (
            "as it is, and says 'not a demand' without error",
            approximate_half_width(failure, demand, [machine * demand, demand]),
        ),
    ]
    chatter = demand == 0
    for accuracy in BOUND_ACCURACIES:
        widths = []
        for _ in range(BOUND_DRAWS):
            simulated = np.where(rng.random(len(base)) < accuracy, failure, 1 - failure)
            simulated[chatter] = rng.random(int(chatter.sum())) < CHATTER_CALLED_FAILURE
            widths.append(approximate_half_width(failure, demand, [simulated]))
        out.append((f"value/failure right on {accuracy:.0%} of demands", float(np.mean(widths))))
    return out


def run(slice_path: Path, label_paths: Sequence[Path]) -> str:
    started = time.perf_counter()
    cpu_started = time.process_time()
    load = os.getloadavg()
    items = first_contacts(read_rows(slice_path))
    a, b = read_labels(label_paths[0], items)
    if len(label_paths) > 1:
        b, _ = read_labels(label_paths[1], items)
    a_label = {i: label for i, (label, _) in a.items()}
    views: dict[str, dict[int, str]] = {}
    if b is not None:
        views["A and B agree (none included)"] = {
            i: label for i, label in a_label.items() if b.get(i, (None,))[0] == label
        }
    views["A's labels, every item"] = a_label
    by_item = {i.item: i for i in items}
    wanted = sorted({i for view in views.values() for i in view})
    model = default_model()
    predicted = model.predict_batch([by_item[i].text for i in wanted])
    machine = {i: int(p.demand_type == "failure") for i, p in zip(wanted, predicted, strict=True)}

    out = [
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC with `python -m bench.not_a_demand` "
        f"({code_state()}), one core, load average before the run {load[0]:.1f}; model (a) of "
        f"bench.external_twcs (the shipped default); {DRAWS} draws per row, seed {SEED}.",
        "",
        "| view | items | demands | not a demand | true failure share among demands | "
        "among contacts | machine calls failure: of demands / of not-a-demand |",
        "|---|---|---|---|---|---|---|",
    ]
    populations: dict[str, list[Row]] = {}
    for name, view in views.items():
        rows: list[Row] = [
            (machine[i], int(label == "failure"), int(label != "none"))
            for i, label in sorted(view.items())
        ]
        populations[name] = rows
        counts = Counter(view.values())
        demands = counts["value"] + counts["failure"]
        chatter_failure = sum(m for m, _, d in rows if not d)
        demand_failure = sum(m for m, _, d in rows if d)
        out.append(
            f"| {name} | {len(rows)} | {demands} | {counts['none']} | "
            f"{counts['failure'] / demands:.3f} | {counts['failure'] / len(rows):.3f} | "
            f"{demand_failure / demands:.3f} / "
            f"{chatter_failure / max(counts['none'], 1):.3f} |"
        )
    out += [
        "",
        "| view | population | audit | estimator | coverage | mean half-width (points) | "
        "mean error (points) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, rows in populations.items():
        for population in (None, POPULATION):
            for audit in AUDITS:
                if population is None and audit >= len(rows):
                    continue
                result = simulate(rows, audit, DRAWS, np.random.default_rng(SEED), population)
                where = f"the set ({len(rows)})" if population is None else f"{population:,}"
                for label, coverage in (
                    ("new: share among demands (ratio)", result.new),
                    ("old: chatter called value", result.old),
                    ("new: share of contacts not a demand", result.chatter),
                ):
                    out.append(f"| {name} | {where} | {audit} | {label} | {coverage.cells()} |")
    out += [
        "",
        f"What a machine answer would buy: approximate half-width (points) at an audit of "
        f"{BOUND_AUDIT} (see the module's docstring; simulated machines: mean of "
        f"{BOUND_DRAWS} draws, seed {SEED}).",
        "",
        "| view | machine | half-width |",
        "|---|---|---|",
    ]
    for name, rows in populations.items():
        for machine_name, width in half_width_bounds(rows, np.random.default_rng(SEED)):
            out.append(f"| {name} | {machine_name} | {width * 100:.2f} |")
    out.append("")
    out.append(
        f"Took {time.perf_counter() - started:.0f} s wall, "
        f"{time.process_time() - cpu_started:.0f} s CPU."
    )
    return "\n".join(out)


def main() -> None:
    args = sys.argv[1:]
    if len(args) not in (2, 3):
        raise SystemExit(USAGE)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    with threadpool_limits(limits=1):
        print(run(Path(args[0]), [Path(p) for p in args[1:]]), flush=True)


if __name__ == "__main__":
    main()
