"""``kvraft.bench defrag-online`` and ``snapshot-stall``: the flags, and one small real run of
each (2 MB of 100 KiB values: the shape, not the figures)."""

from __future__ import annotations

import json

import pytest

from kvraft.bench.large_store import main


@pytest.mark.parametrize(("name", "argv"), [
    ("defrag-online", ["--rounds", "0"]),
    ("defrag-online", ["--mb", "-1"]),
    ("defrag-online", ["--compare-etcd", "/nonexistent/etcd"]),
    ("snapshot-stall", ["--seconds", "0"]),
    ("snapshot-stall", ["--rounds", "1"]),  # defrag-online's flag
    ("snapshot-stall", ["--catchup-entries", "0"]),
    ("snapshot-stall", ["--catchup-rounds", "0"]),
    ("snapshot-stall", ["--catchup-entries", "10", "--compare-etcd", "/usr/bin/etcd"]),
])  # fmt: skip
def test_bad_flags_are_refused(name: str, argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(name, argv)
    assert exit_.value.code == 2


def test_one_small_defragmentation(capsys: pytest.CaptureFixture[str]) -> None:
    assert main("defrag-online", ["--mb", "2", "--rounds", "1"]) == 0
    (run,) = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["kvraft"]
    assert run["failed_puts"] == 0 and run["db_after"] < run["db_before"]
    assert run["defrag_s"] > 0 and run["put_median_outside_ms"] > 0


def test_one_small_snapshot_stall_run(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--mb", "2", "--snapshot-count", "100", "--seconds", "2", "--catchup-entries", "20", "--catchup-rounds", "2"]
    assert main("snapshot-stall", argv) == 0
    run = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["kvraft"]
    assert run["puts"] > 0 and run["failed_puts"] == 0 and run["slowest_s"] >= run["p50_ms"] / 1000
    assert sorted(run["rss_mb"]) == ["m0", "m1", "m2"] and all(mb > 10 for mb in run["rss_mb"].values())
    catch_up = run["catch_up"]  # (the follower got a snapshot: its log was compacted past it)
    assert catch_up["caught_up_s"] is not None and catch_up["failed_puts"] == 0
    assert set(catch_up["peak_rss_mb"]) == {"m0", "m1", "m2"} and catch_up["follower_slowest_status_s"] > 0
    # the follower's log: received, recorded and installed, in that order, after it served
    phases = catch_up["phases_s"]
    assert phases["serving"] > 0 and 0 <= phases["received"] <= phases["recorded"] <= phases["installed"], phases
    assert len(run["catch_up_rounds"]) == 2 and run["catch_up_rounds"][0] == catch_up


def test_a_path_to_etcd_runs_etcd(tmp_path: object) -> None:
    """``--compare-etcd PATH`` hands the path to ``LocalCluster``, which ran kvraft for any
    binary but the bare name "etcd" (the first etcd figures of these benchmarks were kvraft's)."""
    from pathlib import Path

    from kvraft.server.local import LocalCluster

    for binary, program in (("/opt/x/etcd", "/opt/x/etcd"), ("kvraft", "-m")):
        cluster = LocalCluster(1, Path(str(tmp_path)) / binary.replace("/", "_"), binary=binary)
        command = cluster.command(cluster.members["m0"], "m0=http://127.0.0.1:1", "new")
        assert program in command[:3], command
