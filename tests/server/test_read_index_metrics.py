"""A follower's linearizable reads while its leader is stopped: the ReadIndex round sent to the
stopped leader is never answered. It is abandoned after ``READ_ROUND_TIMEOUT_S`` (counted in
``etcd_server_slow_read_indexes_total``, with etcd's warning), or when a new leader is elected
(``etcd_server_read_indexes_failed_total``). Either way the read is retried and succeeds
under the new leader, and the counters show it. Before this, nothing showed that reads had
waited on a lost leader."""

from __future__ import annotations

import os
import re
import signal
import time
import urllib.request
from pathlib import Path

from kvraft.server.local import LocalCluster, b64, post

FLAGS = ["--heartbeat-interval", "100", "--election-timeout", "1000"]


def figure(cluster: LocalCluster, name: str, metric: str) -> float:
    with urllib.request.urlopen(cluster.url(name) + "/metrics", timeout=10) as response:
        text = response.read().decode()
    found = re.search(rf"^{metric} (\S+)$", text, re.M)
    assert found, f"{metric} missing"
    return float(found.group(1))


def test_reads_waiting_on_a_stopped_leader_are_counted(tmp_path: Path) -> None:
    cluster = LocalCluster(3, tmp_path, extra_args=FLAGS)
    try:
        cluster.start(timeout_s=120)
        leader = cluster.wait_leader(60)
        follower = next(name for name in cluster.members if name != leader)
        code, _ = post(cluster.url(follower), "/v3/kv/put", {"key": b64("k"), "value": b64("v")})
        assert code == 200
        names = ("etcd_server_slow_read_indexes_total", "etcd_server_read_indexes_failed_total")
        before = [figure(cluster, follower, n) for n in names]
        pid = cluster.members[leader].pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        try:
            code, body = post(cluster.url(follower), "/v3/kv/range", {"key": b64("k")}, timeout_s=30)
        finally:
            os.kill(pid, signal.SIGCONT)
        assert code == 200 and body["kvs"][0]["value"] == b64("v"), body
        after = [figure(cluster, follower, n) for n in names]
        assert sum(after) - sum(before) >= 1, (before, after)
        deadline = time.monotonic() + 30
        while cluster.leader() is None and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        cluster.stop()
