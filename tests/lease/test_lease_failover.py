"""Lease expiry across leader failover: the remaining TTL survives (etcd resets it to the
full TTL unless checkpointing is on), and the new leader expires what is due."""

from __future__ import annotations

import signal
import time

import pytest

from tests.watch.cluster_helpers import b64, call_any, start_cluster


@pytest.fixture
def doomed(tmp_path):
    c = start_cluster(tmp_path / "failover")
    yield c
    c.stop()


def test_remaining_ttl_and_expiry_survive_leader_kill(doomed) -> None:
    leader = doomed.wait_leader()
    granted_at = time.monotonic()
    status, doc = call_any(doomed, "/v3/lease/grant", {"TTL": "40", "ID": "41"})
    assert status == 200
    status, doc = call_any(doomed, "/v3/lease/grant", {"TTL": "3", "ID": "42"})
    call_any(doomed, "/v3/kv/put", {"key": b64("short"), "value": b64("x"), "lease": "42"})
    # keep 42 alive until the kill, so it expires only under the new leader
    while time.monotonic() - granted_at < 8:
        call_any(doomed, "/v3/lease/keepalive", {"ID": "42"})
        time.sleep(0.5)
    elapsed = time.monotonic() - granted_at
    doomed.stop_member(leader, signal.SIGKILL)
    assert doomed.wait_leader(120) != leader
    status, doc = call_any(doomed, "/v3/lease/timetolive", {"ID": "41"})
    assert doc["grantedTTL"] == "40"
    # at least `elapsed` seconds of the 40 are gone (1 s slack for rounding up)
    assert int(doc["TTL"]) <= 40 - int(elapsed) + 1, (doc, elapsed)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        status, doc = call_any(doomed, "/v3/kv/range", {"key": b64("short")})
        if "kvs" not in doc:
            break
        time.sleep(0.3)
    assert "kvs" not in doc, "the new leader never expired lease 42"
    status, doc = call_any(doomed, "/v3/lease/timetolive", {"ID": "42"})
    assert doc["TTL"] == "-1"
