import pytest

from services.metrics.domain.signals import (
    BEYOND_LIMIT,
    FOUR_OF_FIVE_BEYOND_ONE_SIGMA,
    MOVING_RANGE_BEYOND_LIMIT,
    RUN_OF_EIGHT,
    TWO_OF_THREE_BEYOND_TWO_SIGMA,
    SignalHit,
    detect_signals,
)
from services.metrics.domain.xmr import NATURAL_PROCESS_LIMIT_FACTOR, XmrLimits

# Hand-built limits with sigma = 1: centre 10, mR-bar = 3 / 2.66 = 1.1278, so the natural
# process limits are 10 +/- 3 and the upper range limit is 3.268 x 1.1278 = 3.686.
AVERAGE_MOVING_RANGE = 3 / NATURAL_PROCESS_LIMIT_FACTOR
LIMITS = XmrLimits(
    centre_line=10.0,
    average_moving_range=AVERAGE_MOVING_RANGE,
    lower_natural_process_limit=7.0,
    upper_natural_process_limit=13.0,
    upper_range_limit=3.268 * AVERAGE_MOVING_RANGE,
    baseline_size=20,
)


def test_the_hand_built_limits_have_unit_sigma() -> None:
    assert LIMITS.sigma == pytest.approx(1.0)


def test_a_stable_series_triggers_no_rule() -> None:
    # Alternates about the centre within 1 sigma, moving ranges <= 1.5.
    stable = [10.5, 9.5, 10.8, 9.3, 10.2, 9.9, 10.6, 9.4, 10.1, 9.7, 10.4, 9.6]

    assert detect_signals(stable, LIMITS) == []


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        pytest.param(
            [10, 10.5, 13.2, 10.5], [SignalHit(BEYOND_LIMIT, 2, 13.2)], id="above_upper_limit"
        ),
        pytest.param(
            [10, 9.5, 6.8, 9.5], [SignalHit(BEYOND_LIMIT, 2, 6.8)], id="below_lower_limit"
        ),
        pytest.param(
            # 12.5 and 12.4 are beyond +2 sigma (12), with 11 between: completes at index 4.
            [10, 9.5, 12.5, 11, 12.4, 10],
            [SignalHit(TWO_OF_THREE_BEYOND_TWO_SIGMA, 4, 12.4)],
            id="two_of_three_above",
        ),
        pytest.param(
            [10, 10.5, 7.8, 9, 7.6, 10],
            [SignalHit(TWO_OF_THREE_BEYOND_TWO_SIGMA, 4, 7.6)],
            id="two_of_three_below",
        ),
        pytest.param(
            # Four of five above +1 sigma (11), none beyond 2 sigma, 10.5 breaks the run.
            [10, 9.6, 11.5, 11.6, 10.5, 11.4, 11.7, 10],
            [SignalHit(FOUR_OF_FIVE_BEYOND_ONE_SIGMA, 6, 11.7)],
            id="four_of_five_above",
        ),
        pytest.param(
            # Eight in a row just above the centre line, all within 1 sigma.
            [9.5, 10.3, 10.5, 10.2, 10.6, 10.4, 10.3, 10.5, 10.2, 9.6],
            [SignalHit(RUN_OF_EIGHT, 8, 10.2)],
            id="run_of_eight_above",
        ),
        pytest.param(
            # A jump of 3.875 > 3.685 that stays inside the natural process limits.
            [10.2, 9.6, 8.0, 11.875, 10.1, 9.8],
            [SignalHit(MOVING_RANGE_BEYOND_LIMIT, 3, 3.875)],
            id="moving_range_beyond_limit",
        ),
    ],
)
def test_each_rule_fires_alone_at_the_completing_point(
    values: list[float], expected: list[SignalHit]
) -> None:
    assert detect_signals(values, LIMITS) == expected


def test_two_beyond_two_sigma_on_opposite_sides_is_no_signal() -> None:
    assert detect_signals([10, 12.5, 9.8, 7.6, 10], LIMITS) == []


def test_a_point_on_the_centre_line_breaks_a_run() -> None:
    assert detect_signals([10.3, 10.5, 10.2, 10.6, 10.0, 10.4, 10.3, 10.5, 10.2], LIMITS) == []


def test_a_run_that_continues_flags_each_further_point() -> None:
    run = [9.7, 9.5, 9.8, 9.4, 9.6, 9.7, 9.5, 9.8, 9.6]

    assert [hit.index for hit in detect_signals(run, LIMITS)] == [7, 8]
    assert {hit.rule for hit in detect_signals(run, LIMITS)} == {RUN_OF_EIGHT}


def test_a_point_on_a_limit_is_not_beyond_it() -> None:
    assert detect_signals([10, 13.0, 10], LIMITS) == []


def test_hits_are_ordered_by_point_then_rule() -> None:
    # 14 is beyond the limit and its moving range from 10 is 4 > 3.685.
    hits = detect_signals([10, 14], LIMITS)

    assert hits == [
        SignalHit(BEYOND_LIMIT, 1, 14),
        SignalHit(MOVING_RANGE_BEYOND_LIMIT, 1, 4),
    ]


def test_a_point_on_the_two_sigma_line_is_not_beyond_it() -> None:
    # 12.0 is exactly centre + 2 sigma, so only 12.5 is beyond: one of three, no signal.
    assert detect_signals([10, 12.0, 12.5], LIMITS) == []
