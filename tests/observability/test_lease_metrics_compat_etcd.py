"""etcd's lessor counters move as a real etcd 3.4's do for the same lease requests:
``etcd_debugging_lease_{granted,revoked,renewed}_total``, the TTL histogram
``etcd_debugging_lease_ttl_total`` (the minimum TTL applied first) and
``etcd_debugging_server_lease_expired_total`` (an expired lease, once its revocation is
applied). One member each; skipped without the ``etcd`` binary."""

from __future__ import annotations

import re
import time
import urllib.request
from typing import Any

import pytest

from kvraft.server.local import post
from tests.server.conftest import etcd_and_kvraft, needs_etcd

pytestmark = needs_etcd

COUNTERS = ["etcd_debugging_lease_granted_total", "etcd_debugging_lease_revoked_total",
            "etcd_debugging_lease_renewed_total", "etcd_debugging_server_lease_expired_total",
            "etcd_debugging_lease_ttl_total_count", "etcd_debugging_lease_ttl_total_sum"]


def figures(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    out = {}
    for name in COUNTERS:
        found = re.search(rf"^{name} (\S+)$", text, re.M)
        out[name] = float(found.group(1)) if found else 0.0
    for le, value in re.findall(r'^etcd_debugging_lease_ttl_total_bucket\{le="([^"]+)"\} (\S+)$', text, re.M):
        out[f"le={float(le):g}"] = float(value)
    return out


def run(url: str) -> list[dict[str, float]]:
    steps: list[tuple[str, dict[str, Any]]] = [
        ("/v3/lease/grant", {"TTL": "100", "ID": "500"}),
        ("/v3/lease/grant", {"TTL": "100", "ID": "500"}),  # exists: nothing counted
        ("/v3/lease/grant", {"TTL": "1", "ID": "501"}),  # raised to the minimum TTL, expires
        ("/v3/lease/keepalive", {"ID": "500"}),
        ("/v3/lease/keepalive", {"ID": "999"}),  # unknown: not renewed
        ("/v3/lease/revoke", {"ID": "500"}),
        ("/v3/lease/revoke", {"ID": "500"}),  # gone: nothing counted
    ]
    changes = []
    for path, doc in steps:
        before = figures(url)
        post(url, path, doc)
        after = figures(url)
        changes.append({k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)})
    before = figures(url)
    deadline = time.monotonic() + 30
    while figures(url)["etcd_debugging_server_lease_expired_total"] == before["etcd_debugging_server_lease_expired_total"]:
        assert time.monotonic() < deadline, "lease 501 never expired"
        time.sleep(0.2)
    time.sleep(0.5)
    after = figures(url)
    changes.append({k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)})
    return changes


def test_the_lease_counters_move_as_etcds(tmp_path_factory: pytest.TempPathFactory) -> None:
    with etcd_and_kvraft(tmp_path_factory) as (etcd_url, kvraft_url):
        expected = run(etcd_url)
        got = run(kvraft_url)
    assert got == expected
    assert expected[0]["etcd_debugging_lease_granted_total"] == 1
    assert expected[-1] == {"etcd_debugging_lease_revoked_total": 1, "etcd_debugging_server_lease_expired_total": 1}
