"""A leader whose loop stalls (here: stopped with SIGSTOP for 1 s, under an election timeout
of 5 s, so it stays leader) sends its next heartbeats more than two heartbeat intervals
after the previous ones: it counts one ``etcd_server_heartbeat_send_failures_total`` per
follower and logs etcd's warning, as etcd 3.4 does (the same run against etcd, when it is
installed, gives the same counts); the followers count nothing."""

from __future__ import annotations

import os
import re
import signal
import time
import urllib.request
from pathlib import Path

import pytest

from kvraft.server.local import LocalCluster
from tests.server.conftest import etcd_available

FLAGS = ["--heartbeat-interval", "100", "--election-timeout", "5000"]


def failures(cluster: LocalCluster, name: str) -> float:
    with urllib.request.urlopen(cluster.url(name) + "/metrics", timeout=10) as response:
        text = response.read().decode()
    found = re.search(r"^etcd_server_heartbeat_send_failures_total (\S+)$", text, re.M)
    assert found, "etcd_server_heartbeat_send_failures_total missing"
    return float(found.group(1))


@pytest.mark.parametrize("binary", [
    "kvraft",
    pytest.param("etcd", marks=pytest.mark.skipif(not etcd_available(), reason="etcd binary not installed")),
])
def test_a_stalled_leader_counts_one_late_heartbeat_per_follower(tmp_path: Path, binary: str) -> None:
    cluster = LocalCluster(3, tmp_path, extra_args=FLAGS, **({"binary": "etcd"} if binary == "etcd" else {}))
    try:
        cluster.start(timeout_s=120)
        leader = cluster.wait_leader(60)
        time.sleep(1)  # heartbeats flowing to both followers
        assert {name: failures(cluster, name) for name in cluster.members} == dict.fromkeys(cluster.members, 0.0)
        pid = cluster.members[leader].pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        time.sleep(1.0)
        os.kill(pid, signal.SIGCONT)
        deadline = time.monotonic() + 30
        while failures(cluster, leader) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert failures(cluster, leader) >= 2  # one per follower (more if the box stalls it again)
        assert cluster.leader() == leader, "the pause was shorter than an election timeout"
        for name in cluster.members:
            if name != leader:
                assert failures(cluster, name) == 0
        if binary == "kvraft":
            log = cluster.members[leader].log_path.read_text()
            assert "leader failed to send out heartbeat on time" in log
    finally:
        cluster.stop()
