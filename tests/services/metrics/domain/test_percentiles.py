import numpy as np
import pytest

from services.metrics.domain.percentiles import DurationSummary, percentile, summarise_durations

HOUR = 3600.0
# Durations 1h, 2h, 3h, 4h, 10h (given out of order). Rank h = (n - 1) x q / 100 = 4q / 100:
#   p50: h = 2.0 -> 3h exactly.
#   p85: h = 3.4 -> 4h + 0.4 x (10h - 4h) = 6.4h = 23 040 s.
#   p95: h = 3.8 -> 4h + 0.8 x (10h - 4h) = 8.8h = 31 680 s.
#   mean: 20h / 5 = 4h.
DURATIONS = [10 * HOUR, 2 * HOUR, 4 * HOUR, 1 * HOUR, 3 * HOUR]


def test_summary_matches_the_hand_calculation() -> None:
    summary = summarise_durations(DURATIONS)

    assert summary.count == 5
    assert summary.p50 == pytest.approx(10_800.0)
    assert summary.p85 == pytest.approx(23_040.0)
    assert summary.p95 == pytest.approx(31_680.0)
    assert summary.mean == pytest.approx(14_400.0)
    assert summary.max == 36_000.0


def test_empty_input_has_no_figures() -> None:
    assert summarise_durations([]) == DurationSummary(
        count=0, p50=None, p85=None, p95=None, mean=None, max=None
    )


@pytest.mark.parametrize(("q", "expected"), [(0, 1.0), (25, 2.0), (100, 10.0), (90, 7.6)])
def test_percentile_ends_and_interpolation(q: float, expected: float) -> None:
    # p90: h = 3.6 -> 4 + 0.6 x 6 = 7.6.
    assert percentile([1.0, 2.0, 3.0, 4.0, 10.0], q) == pytest.approx(expected)


def test_even_count_median_interpolates_halfway() -> None:
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == pytest.approx(2.5)


def test_single_value_is_every_percentile() -> None:
    assert percentile([7.0], 95) == 7.0


@pytest.mark.parametrize("q", [5, 33.3, 50, 85, 95, 99])
def test_agrees_with_numpy_default_linear_method(q: float) -> None:
    values = [3.0, 17.5, 0.25, 9.0, 9.0, 41.0, 2.5, 12.0, 6.75]

    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)


@pytest.mark.parametrize("q", [-1, 100.5])
def test_q_outside_0_to_100_is_an_error(q: float) -> None:
    with pytest.raises(ValueError, match="between 0 and 100"):
        percentile([1.0, 2.0], q)
