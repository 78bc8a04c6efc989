"""A write through a follower just after the leader died: the follower's forward to the dead
leader is never written (its connection is down), so the driver takes it back and proposes it
to the next leader. Before, it was dropped and the write failed after the server's 7 s
timeout ("etcdserver: request timed out"), as in etcd: `kvctl member remove` of a leader
just killed timed out."""

from __future__ import annotations

import signal
import time
import urllib.request

import pytest

from kvraft.client import SyncClient
from tests.server.conftest import FAST_FLAGS, start_cluster


def _metric(url: str, name: str, label: str = "") -> float:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name) and label in line:
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def _wait_peer_down(url: str, peer_hex: str) -> None:
    """Until the follower has seen the connection to the dead leader close (a forward written
    into the dying socket before that is lost, as anything a dead process was sent)."""
    deadline = time.monotonic() + 30
    while _metric(url, "etcd_network_active_peers", f'Remote="{peer_hex}"') != 0.0:
        assert time.monotonic() < deadline, "the follower never saw the leader's connection close"
        time.sleep(0.05)


@pytest.mark.parametrize("what", ["put", "member remove"])
def test_a_write_through_a_follower_right_after_the_leader_died(tmp_path, what: str) -> None:  # type: ignore[no-untyped-def]
    cluster = start_cluster(tmp_path, size=3, extra=FAST_FLAGS)
    try:
        leader = cluster.wait_leader()
        follower = next(name for name in cluster.members if name != leader)
        url = cluster.url(follower)
        with SyncClient([url], request_timeout_s=30.0) as client:
            client.put("warm", "x")
            leader_id = int(cluster.status(leader)["header"]["member_id"])  # type: ignore[index]
            cluster.stop_member(leader, signal.SIGKILL)
            _wait_peer_down(url, f"{leader_id:x}")
            if what == "put":
                client.put("after", "y")  # failed: "etcdserver: request timed out"
                assert client.get("after").kvs[0].value == b"y"
            else:
                members = client.member_remove(leader_id)
                assert leader_id not in {m.id for m in members.members}
        assert _metric(url, "kvraft_driver_proposals_reforwarded_total") >= 1
    finally:
        cluster.stop()
