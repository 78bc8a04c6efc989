"""``kvraft.bench paired``: the per-put figures from two /proc readings."""

from __future__ import annotations

from kvraft.bench.paired import per_put


def test_per_put_splits_the_leader_from_the_followers_mean() -> None:
    before = {"m0": (1_000.0, 10), "m1": (500.0, 5), "m2": (700.0, 7)}
    after = {"m0": (3_000.0, 30), "m1": (1_500.0, 15), "m2": (2_700.0, 27)}
    figures = per_put(before, after, 10, "m1")
    assert figures == {"cpu_leader_us": 100.0, "cpu_follower_us": 200.0, "switches_leader": 1.0, "switches_follower": 2.0}


def test_a_member_that_died_during_the_burst_is_left_out() -> None:
    before = {"m0": (0.0, 0), "m1": (0.0, 0)}
    after = {"m0": (100.0, 4), "m1": (300.0, 8), "m2": (50.0, 1)}  # m2 (re)started in between
    assert per_put(before, after, 2, "m0")["cpu_follower_us"] == 150.0


def test_loads_name_puts_and_linearizable_ranges() -> None:
    from kvraft.bench.paired import parse_loads

    assert parse_loads("1:300, 64:5000,r64:20000") == [("put", 1, 300), ("put", 64, 5000), ("range", 64, 20000)]
