"""Group commit (9f1fc0b) against real member processes: a follower killed right after it
applied a unit (``apply_after_commit=1*panic``: the unit, and any applied since the last
commit, are only in the open LMDB transaction) restarts, replays its Raft log and agrees
with the others: the same revision and hashkv, the txn that succeeds only once applied
once, the lease revocation and compaction done exactly once."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

from kvraft.robustness.cluster import RobustCluster
from kvraft.server.local import post


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def call(cluster: RobustCluster, name: str, path: str, doc: dict[str, Any]) -> dict[str, Any]:
    status, body = post(cluster.url(name), path, doc, timeout_s=20)
    assert status == 200, (path, body)
    return body  # type: ignore[no-any-return]


def test_a_follower_killed_before_its_delayed_commit_agrees_after_restart(tmp_path: Path) -> None:
    cluster = RobustCluster(3, str(tmp_path), env={"KVRAFT_FAILPOINTS": ""})
    try:
        cluster.start(120)
        leader = cluster.wait_leader(120)
        follower = next(name for name in cluster.members if name != leader)
        call(cluster, leader, "/v3/lease/grant", {"TTL": "600", "ID": "100"})
        call(cluster, leader, "/v3/kv/put", {"key": b64("leased"), "value": b64("x"), "lease": "100"})
        call(cluster, leader, "/v3/kv/put", {"key": b64("counter"), "value": b64("0")})
        for i in range(5):
            call(cluster, leader, "/v3/kv/put", {"key": b64(f"k{i}"), "value": b64(str(i)), "prev_kv": True})
        cluster.arm(follower, "apply_after_commit", "1*panic")
        bump = {
            "compare": [{"key": b64("counter"), "target": "VALUE", "result": "EQUAL", "value": b64("0")}],
            "success": [{"request_put": {"key": b64("counter"), "value": b64("1"), "prev_kv": True}}],
            "failure": [{"request_put": {"key": b64("counter"), "value": b64("twice")}}],
        }
        assert call(cluster, leader, "/v3/kv/txn", bump).get("succeeded") is True
        rev = int(call(cluster, leader, "/v3/kv/put", {"key": b64("a"), "value": b64("1")})["header"]["revision"])
        call(cluster, leader, "/v3/kv/compaction", {"revision": str(rev - 2)})
        call(cluster, leader, "/v3/lease/revoke", {"ID": "100"})
        process = cluster.members[follower].process
        assert process is not None
        deadline = time.monotonic() + 60
        while process.poll() is None:
            assert time.monotonic() < deadline, "the follower's failpoint never fired"
            time.sleep(0.1)
        call(cluster, leader, "/v3/kv/put", {"key": b64("after"), "value": b64("1")})
        cluster.restart(follower)
        assert "revision" in cluster.wait_converged(list(cluster.members), 120)
        got = call(cluster, follower, "/v3/kv/range", {"key": b64("counter"), "serializable": True})
        assert base64.b64decode(got["kvs"][0]["value"]) == b"1"
        got = call(cluster, follower, "/v3/kv/range", {"key": b64("leased"), "serializable": True})
        assert "kvs" not in got
    finally:
        cluster.stop()
