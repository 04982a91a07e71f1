"""bench/intake.py: the rounds of one side pooled into the row's figure."""

from __future__ import annotations

import json

import pytest

import bench.intake as intake
from bench.intake import Run, pooled, rounds_line


def test_pooled_rounds_are_every_item_over_the_time_they_took_together() -> None:
    fast = Run(4_000, 0.5, [0.01, 0.02], {"server": 100.0, "broker": 50.0})
    slow = Run(4_000, 2.0, [0.03], {"server": 160.0})
    both = pooled([fast, slow])
    assert both.count == 8_000
    assert both.rate == pytest.approx(8_000 / 2.5)  # 3,200/s, not the mean of 8,000 and 2,000
    assert both.latencies == [0.01, 0.02, 0.03]
    # CPU per item over all items; a process measured in only some rounds is left out
    assert both.cpu_us == {"server": pytest.approx(130.0)}


def test_pooled_weighs_each_rounds_cpu_by_its_items() -> None:
    few = Run(1_000, 1.0, [], {"server": 400.0})
    many = Run(3_000, 1.0, [], {"server": 100.0})
    assert pooled([few, many]).cpu_us["server"] == pytest.approx((400_000 + 300_000) / 4_000)


def test_each_rounds_ratio_is_printed_in_order() -> None:
    ours = [Run(600, 1.0, []), Run(500, 1.0, [])]
    base = [Run(1_000, 1.0, []), Run(1_000, 1.0, [])]
    assert rounds_line(ours, base) == "600 / 1,000 = 0.60, 500 / 1,000 = 0.50"


def test_a_batch_answer_counts_only_when_every_event_was_accepted() -> None:
    size = intake.BATCH_SIZE
    intake.all_accepted(json.dumps({"accepted": size, "duplicates": 0, "rejected": 0}).encode())
    # ids sent before are answered 200 too, with nothing published: not events to count
    duplicates = {"accepted": 0, "duplicates": size, "rejected": 0}
    with pytest.raises(RuntimeError, match=f"accepted 0 of {size} \\(duplicates {size}"):
        intake.all_accepted(json.dumps(duplicates).encode())
    with pytest.raises(RuntimeError, match="rejected 1"):
        intake.all_accepted(
            json.dumps({"accepted": size - 1, "duplicates": 0, "rejected": 1}).encode()
        )


def test_the_rows_note_gives_the_lowest_and_highest_rounds_ratio() -> None:
    ours = [Run(600, 1.0, []), Run(500, 1.0, []), Run(700, 1.0, [])]
    base = [Run(1_000, 1.0, [])] * 3
    assert intake.spread(ours, base) == "rounds 0.50-0.70"


def test_a_malformed_number_of_rounds_is_refused_by_name() -> None:
    assert intake._rounds("2") == 2
    assert intake._rounds("0") == 1
    with pytest.raises(SystemExit, match="DEMANDSCOPE_BENCH_INTAKE_ROUNDS"):
        intake._rounds("three")


async def test_settle_waits_until_the_servers_stop_using_cpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    readings = iter([1.0, 1.2, 1.3, 1.3, 1.3])  # busy, busy, then idle
    monkeypatch.setattr(intake, "cpu_seconds", lambda _pid: next(readings))
    await intake.settle([1], quiet_s=0.001, deadline_s=5.0)
    assert next(readings) == 1.3  # stopped at the first unchanged pair, one reading left


async def test_settle_gives_up_at_its_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    ticks = iter(range(10_000))
    monkeypatch.setattr(intake, "cpu_seconds", lambda _pid: float(next(ticks)))
    await intake.settle([1], quiet_s=0.001, deadline_s=0.02)  # never idle: returns anyway
