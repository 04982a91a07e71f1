"""`make bench`'s result table: the rows, the verdicts and the summary lines (no timing)."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from bench import __main__ as bench_main
from bench import results
from bench.results import Row


@pytest.fixture(autouse=True)
def empty_table() -> Iterator[None]:
    results.clear()
    yield
    results.clear()


def row(**changes: object) -> Row:
    fields: dict[str, object] = {
        "part": "intake, single events",
        "figure": "584 req/s",
        "baseline": "bare FastAPI: 2,218 req/s",
        "ratio": "0.26",
        "target": "≥ 0.6",
        "met": False,
    }
    return Row(**(fields | changes))  # type: ignore[arg-type]


def test_the_summary_line_names_figure_ratio_baseline_target_and_verdict() -> None:
    assert row().summary() == (
        "intake, single events: 584 req/s (0.26 of bare FastAPI: 2,218 req/s) target ≥ 0.6: NOT met"
    )
    assert row(met=True).summary().endswith(": met")
    faster = row(ratio="9.4x faster", baseline="PM4Py: 6.5 s", met=False).summary()
    assert "(9.4x faster than PM4Py: 6.5 s)" in faster


def test_a_row_without_a_baseline_says_so_and_leaves_the_ratio_out() -> None:
    alone = row(baseline=None, ratio=None, met=None)
    assert alone.verdict == "no baseline"
    assert alone.summary() == "intake, single events: 584 req/s target ≥ 0.6: no baseline"
    assert row(baseline=None, ratio=None, met=True).verdict == "met"
    assert row(met=None).verdict == "not measured"


def test_the_table_has_the_issue_columns_and_one_line_per_row_with_pipes_escaped() -> None:
    table = results.markdown([row(), row(part="a | b", baseline=None, ratio=None)]).splitlines()
    assert (
        table[0] == "| part | demandscope | baseline in the same run | ratio | target | verdict |"
    )
    assert table[2] == (
        "| intake, single events | 584 req/s | bare FastAPI: 2,218 req/s | 0.26 | ≥ 0.6 | NOT met |"
    )
    assert table[3] == "| a \\| b | 584 req/s | - | - | ≥ 0.6 | NOT met |"
    assert len(table) == 4


def test_rows_are_kept_in_the_order_recorded() -> None:
    results.record(row(part="first"))
    results.record(row(part="second"))
    assert [r.part for r in results.recorded()] == ["first", "second"]


def test_ratio_of_a_zero_baseline_is_no_number() -> None:
    assert results.ratio(1.0, 0.0) == "-"
    assert results.ratio(1.0, 4.0) == "0.25"


def test_the_machine_line_names_cores_and_load() -> None:
    line = results.machine()
    assert "cores" in line
    assert "load average" in line


def test_an_unknown_bench_name_is_refused_before_anything_runs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["bench", "nonesuch"])
    assert bench_main.main() == 2
    assert "unknown bench nonesuch" in capsys.readouterr().out


def test_the_report_prints_the_table_then_one_summary_per_row_and_names_failures(
    capsys: pytest.CaptureFixture[str],
) -> None:
    results.record(row(note="4,000 requests"))
    bench_main.report(["stack"], 90.0)
    out = capsys.readouterr().out
    assert "| intake, single events | 584 req/s |" in out
    assert "- intake, single events: 4,000 requests" in out
    assert out.index("| part |") < out.index("intake, single events: 584 req/s (0.26 of")
    assert "bench/stack.py: FAILED" in out
