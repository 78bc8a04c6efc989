"""A write forwarded to a leader that then stops answering (here: frozen with SIGSTOP, its
connection up, so the forward is written into it and cannot be taken back): once the rest of
the cluster has elected a new leader and this member has applied that leader's first entry,
the forward can never commit any more, so the member proposes it again. Before, the write
failed after the server's 7 s ("etcdserver: request timed out, possibly due to previous
leader failure"), as in etcd. And it is applied once: when the old leader wakes up with the
forward still in its socket, it drops it (the frame names a term it no longer leads in), so
the key's version is 1 on every member."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from kvraft.server.local import b64, post
from tests.server.conftest import FAST_FLAGS, converged, follower_with, start_cluster
from tests.server.test_dead_leader_forward import _metric


@pytest.mark.parametrize("what", ["put", "member remove"])
def test_a_write_forwarded_to_a_leader_that_froze(tmp_path: Path, what: str) -> None:
    # (the removal is asked before the two followers have talked: etcd's strict check would
    # refuse it as leaving no active quorum)
    strict = ["--strict-reconfig-check=false"] if what == "member remove" else []
    cluster = start_cluster(tmp_path, size=3, extra=FAST_FLAGS + strict)
    try:
        leader, _follower, url = follower_with(cluster, "warm", "x")
        leader_id = int(cluster.status(leader)["header"]["member_id"])  # type: ignore[index]
        pid = cluster.members[leader].pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        try:
            # at once: the follower still takes the frozen member for its leader
            if what == "put":
                code, body = post(url, "/v3/kv/put", {"key": b64("after"), "value": b64("y")}, timeout_s=30)
            else:
                code, body = post(url, "/v3/cluster/member/remove", {"ID": str(leader_id)}, timeout_s=30)
        finally:
            os.kill(pid, signal.SIGCONT)
        assert code == 200, body  # was 503 "etcdserver: request timed out, possibly due to previous leader failure"
        assert _metric(url, "kvraft_driver_proposals_reproposed_total") >= 1
        if what == "put":
            for copy in converged(cluster, "after"):
                (kv,) = copy["kvs"]
                assert kv["value"] == b64("y") and kv["version"] == "1", copy  # applied once
        else:
            assert leader_id not in {int(m["ID"]) for m in body["members"]}
    finally:
        cluster.stop()
