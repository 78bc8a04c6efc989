"""A member that falls behind the leader's compacted log gets a Raft snapshot; its leases,
auth state and watch hub must come back with it."""

from __future__ import annotations

import time
import urllib.request

import pytest

from tests.watch.cluster_helpers import b64, call, start_cluster, unb64


@pytest.fixture
def small_snapshots(tmp_path):
    c = start_cluster(tmp_path / "snap", extra=["--snapshot-count", "20", "--snapshot-catchup-entries", "5"])
    yield c
    c.stop()


def test_follower_restored_from_snapshot_knows_leases_and_users(small_snapshots) -> None:
    c = small_snapshots
    leader = c.wait_leader()
    follower = next(m.name for m in c.running() if m.name != leader)
    c.stop_member(follower)
    url = c.url(leader)
    assert call(url, "/v3/lease/grant", {"TTL": "100", "ID": "500"})[0] == 200
    assert call(url, "/v3/kv/put", {"key": b64("snap/leased"), "value": b64("x"), "lease": "500"})[0] == 200
    assert call(url, "/v3/auth/user/add", {"name": "u1", "password": "p"})[0] == 200
    for i in range(80):
        call(url, "/v3/kv/put", {"key": b64(f"snap/{i}"), "value": b64(str(i))})
    c.start_member(follower, c.initial_cluster(), "new")
    furl = c.url(follower)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            status, doc = call(furl, "/v3/kv/range", {"key": b64("snap/79"), "serializable": True})
            if status == 200 and doc.get("kvs"):
                break
        except OSError:
            pass
        time.sleep(0.3)
    assert unb64(doc["kvs"][0]["value"]) == b"79"
    with urllib.request.urlopen(furl + "/metrics", timeout=10) as response:
        metrics = response.read().decode()
    installed = [line for line in metrics.splitlines() if line.startswith("kvraft_driver_snapshots_applied_total")]
    assert installed and float(installed[0].split()[-1]) >= 1, installed  # it did come by snapshot
    status, doc = call(furl, "/v3/lease/timetolive", {"ID": "500", "keys": True})
    assert doc["grantedTTL"] == "100" and [unb64(k) for k in doc["keys"]] == [b"snap/leased"]
    status, doc = call(furl, "/v3/auth/user/list", {})
    assert "u1" in doc["users"]
