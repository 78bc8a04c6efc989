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
import time
from pathlib import Path

import pytest

from kvraft.server.local import LocalCluster, b64, post
from tests.server.conftest import FAST_FLAGS, follower_with, start_cluster
from tests.server.test_dead_leader_forward import _metric


def _serializable_get(cluster: LocalCluster, name: str, key: str) -> dict:  # type: ignore[type-arg]
    code, body = post(cluster.url(name), "/v3/kv/range", {"key": b64(key), "serializable": True}, timeout_s=10)
    assert code == 200, body
    return body


def _converged(cluster: LocalCluster, key: str) -> list[dict]:  # type: ignore[type-arg]
    """Every member's own copy of ``key`` once all have applied a write made after it."""
    leader = cluster.wait_leader(60)
    code, body = post(cluster.url(leader), "/v3/kv/put", {"key": b64("fence"), "value": b64("f")}, timeout_s=30)
    assert code == 200, body
    fence = int(body["header"]["revision"])
    deadline = time.monotonic() + 30
    while True:
        copies = [_serializable_get(cluster, name, key) for name in cluster.members]
        if all(int(c["header"]["revision"]) >= fence for c in copies):
            return copies
        assert time.monotonic() < deadline, copies
        time.sleep(0.1)


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
            for copy in _converged(cluster, "after"):
                (kv,) = copy["kvs"]
                assert kv["value"] == b64("y") and kv["version"] == "1", copy  # applied once
        else:
            assert leader_id not in {int(m["ID"]) for m in body["members"]}
    finally:
        cluster.stop()
