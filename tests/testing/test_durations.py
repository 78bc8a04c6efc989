"""``kvraft.durations.DurationHistogram``: buckets, cumulative counts, and ``timer``."""

from __future__ import annotations

import time

import pytest

from kvraft.durations import DurationHistogram


def test_observations_land_in_their_buckets_and_cumulate() -> None:
    hist = DurationHistogram((0.1, 1.0))
    for seconds in (0.05, 0.1, 0.5, 2.0):
        hist.observe(seconds)
    assert hist.cumulative() == [("0.1", 2), ("1.0", 3), ("+Inf", 4)]
    assert hist.count == 4 and hist.sum == pytest.approx(2.65)


def test_timer_observes_the_block_even_when_it_raises() -> None:
    hist = DurationHistogram((10.0,))
    with hist.timer():
        time.sleep(0.01)
    with pytest.raises(ValueError), hist.timer():
        raise ValueError("failed")
    assert hist.count == 2 and 0.01 <= hist.sum < 10.0
