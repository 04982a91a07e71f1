from services.metrics.domain.buckets import END_TO_END_BUCKETS, histogram


def test_buckets_run_from_minutes_to_weeks() -> None:
    assert END_TO_END_BUCKETS[0] == 300
    assert END_TO_END_BUCKETS[-1] == 91 * 86_400
    assert list(END_TO_END_BUCKETS) == sorted(END_TO_END_BUCKETS)


def test_a_value_on_a_bound_falls_in_that_bucket_and_big_ones_overflow() -> None:
    counts = dict(histogram([300, 301, 86_400, 200 * 86_400]))

    assert counts[300] == 1
    assert counts[900] == 1
    assert counts[86_400] == 1
    assert counts[None] == 1
    assert sum(counts.values()) == 4
