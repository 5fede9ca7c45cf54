"""The in-process metrics and their Prometheus text (QUALITY.md REL-7)."""

from __future__ import annotations

from tpas.services.metrics import Histogram


def test_histogram_counts_each_value_in_the_first_bucket_whose_bound_it_does_not_exceed() -> None:
    """Cumulative buckets follow Prometheus's ``le``: a value equal to a bound counts in
    that bucket, a value above every bound only in ``+Inf``."""
    histogram = Histogram("t_seconds", "Test.", (0.1, 1.0, 10.0))
    for value in (0.05, 0.1, 0.5, 1.0, 10.0, 11.0, -1.0):
        histogram.observe(value)
    lines = histogram.render()
    assert 't_seconds_bucket{le="0.1"} 3' in lines
    assert 't_seconds_bucket{le="1"} 5' in lines
    assert 't_seconds_bucket{le="10"} 6' in lines
    assert 't_seconds_bucket{le="+Inf"} 7' in lines
    assert "t_seconds_count 7" in lines
    assert "t_seconds_sum 21.65" in lines
