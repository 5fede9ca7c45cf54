"""The downlink retry schedule is pure arithmetic: exponential, capped, half-jittered."""

from __future__ import annotations

import pytest

from tpas.services.retry import Backoff


@pytest.mark.parametrize(
    ("attempt", "jitter", "expected"),
    [(1, 0.0, 1.0), (1, 0.999, 1.999), (2, 0.0, 2.0), (3, 0.5, 6.0), (10, 0.0, 150.0),
     (30, 0.0, 150.0)],
    ids=["first-low", "first-high", "second", "third-mid", "capped", "far-capped"],
)  # fmt: skip
def test_delay_doubles_is_capped_and_jittered(attempt: int, jitter: float, expected: float) -> None:
    """delay = min(cap, base * 2**(attempt-1)) scaled into [1/2, 1) by the jitter."""
    assert Backoff(base=2.0, cap=300.0).delay(attempt, jitter) == pytest.approx(expected)


def test_delay_never_below_half_nor_at_the_full_nominal() -> None:
    """Over the whole jitter range the delay stays within [nominal/2, nominal)."""
    backoff = Backoff(base=1.0, cap=60.0)
    for attempt in range(1, 12):
        nominal = min(60.0, 2.0 ** (attempt - 1))
        for step in range(100):
            delay = backoff.delay(attempt, step / 100)
            assert nominal / 2 <= delay < nominal
