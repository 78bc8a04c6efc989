"""``kvraft.bench paired``: the per-put figures from two /proc readings."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from kvraft.bench.paired import main, parse_loads, per_put


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
    assert parse_loads("1:300, 64:5000,r64:20000") == [("put", 1, 300), ("put", 64, 5000), ("range", 64, 20000)]


def test_etcd_is_a_variant_beside_a_tree(capsys: pytest.CaptureFixture[str]) -> None:
    """``NAME=etcd`` runs a 3-member etcd beside the kvraft tree, bursts interleaved; a
    relative tree is taken from the caller's directory (the members run from /)."""
    if shutil.which("etcd") is None:
        pytest.skip("etcd is not installed (.ci/run installs etcd-server)")
    here = os.getcwd()
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    os.chdir(os.path.dirname(root))
    try:
        assert main("paired", ["etcd=etcd", f"kv={os.path.basename(root)}", "--rounds", "2", "--loads", "1:20"]) == 0
    finally:
        os.chdir(here)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [(line["variant"], line["target"]) for line in lines] == [("etcd", "etcd"), ("kv", root)]
    for line in lines:
        assert len(line["rounds"]["c1_p50_ms"]) == 2 and line["median"]["c1_p50_ms"] > 0
        assert line["median"]["c1_cpu_leader_us"] > 0
