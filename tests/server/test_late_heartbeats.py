"""``LateHeartbeats`` (etcd's timeout detector on a leader's heartbeats), by explicit times."""

from __future__ import annotations

import pytest

from kvraft.server.heartbeats import LateHeartbeats


def test_a_gap_over_two_intervals_is_late_by_the_excess() -> None:
    late = LateHeartbeats(0.1)
    assert late.sent(2, 10.0) == 0.0  # the first one: nothing to compare with
    assert late.sent(2, 10.2) == 0.0  # exactly two intervals: on time
    assert late.sent(3, 10.2) == 0.0  # each peer on its own
    assert late.sent(2, 10.7) == pytest.approx(0.3)
    assert late.sent(3, 10.3) == 0.0


def test_reset_forgets_every_peer() -> None:
    late = LateHeartbeats(0.1)
    late.sent(2, 0.0)
    late.reset()  # a new leader or role: the old gap does not count
    assert late.sent(2, 5.0) == 0.0
