"""A member whose Raft log was lost (its WAL directory emptied) must refuse to start rather
than come up with an empty log (forgetting its term and vote) or bootstrap again."""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path

from kvraft.server.local import LocalCluster, post


def test_member_with_an_emptied_wal_refuses_to_start(tmp_path: Path) -> None:
    with LocalCluster(3, tmp_path) as cluster:
        cluster.start()
        leader = cluster.wait_leader()
        for i in range(5):
            status, _ = post(cluster.url(leader), "/v3/kv/put", {"key": base64.b64encode(f"k{i}".encode()).decode(), "value": "dg=="})
            assert status == 200
        victim = next(n for n in cluster.members if n != leader)
        cluster.stop_member(victim)
        member = cluster.members[victim]
        wal = member.data_dir / "raft.wal"
        assert any(wal.iterdir())
        shutil.rmtree(wal)
        wal.mkdir()
        for _ in range(2):  # and again: the refusal does not wear off
            done = subprocess.run(
                cluster.command(member, cluster.initial_cluster(), "new"), capture_output=True, text=True, timeout=120
            )
            assert done.returncode == 1, done.stderr[-2000:]
            assert "the log was lost or truncated; refusing to start" in done.stderr
