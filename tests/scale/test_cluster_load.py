"""The short control-plane load CI runs (issue 15): 500 simulated agents for 30 s against a
real 3-member kvraft. A test of correctness under load, not of speed: the run completes,
every agent registers, no request fails, no lease is lost, every bind reaches its node's
watch. The long runs and their figures are in docs/benchmarks.md ("Control-plane scale")."""

from __future__ import annotations

from pathlib import Path

from kvraft.bench.cluster_load import run_steps
from kvraft.server.local import LocalCluster


def test_500_agents_for_30_s(tmp_path: Path) -> None:
    with LocalCluster(3, tmp_path, token="cluster-load") as cluster:
        cluster.start(120)
        lines: list[str] = []
        (result,) = run_steps("kvraft", cluster, [500], 30.0, 10.0, 1, False, log=lambda *a, **k: lines.append(" ".join(map(str, a))))
    summary = result.line() + "\n" + "\n".join(result.error_samples)
    assert result.registered == 500, summary
    assert result.errors == 0 and result.lost_leases == 0, summary
    assert result.watch_lag["missed"] == 0 and result.watch_lag["count"] > 100, summary
    assert result.verbs["keepalive"]["count"] > 500 and result.verbs["status_put"]["count"] > 500, summary
    assert set(result.members) == {"m0", "m1", "m2"}
