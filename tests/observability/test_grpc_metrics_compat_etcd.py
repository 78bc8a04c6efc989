"""``grpc_server_started_total`` and ``grpc_server_handled_total`` count the same calls, with
the same methods and codes, as a real etcd 3.4 does for the same gateway requests (the etcd
mixin's ``etcdHighNumberOfFailedGRPCRequests`` alert reads them); with ``--metrics
extensive``, ``grpc_server_handling_seconds`` observes the same calls (its
``etcdGRPCRequestsSlow`` alert), and without it neither exports that histogram. The requests take both of
kvraft's paths: the fast path (put, range, txn, lease grant) and aiohttp's routes (compaction,
lease revoke, status). Skipped without the ``etcd`` binary.
"""

from __future__ import annotations

import http.client
import json
import re
import urllib.request
from urllib.parse import urlsplit

import pytest

from tests.server.conftest import etcd_and_kvraft, needs_etcd

pytestmark = needs_etcd

REQUESTS = [
    *[("/v3/kv/put", {"key": "YQ==", "value": "MQ=="})] * 3,
    ("/v3/kv/range", {"key": "YQ=="}),
    ("/v3/kv/compaction", {"revision": 3}),
    ("/v3/kv/range", {"key": "YQ==", "revision": 2}),  # compacted: OutOfRange
    ("/v3/kv/range", {"key": "YQ==", "revision": 99}),  # future: OutOfRange
    ("/v3/kv/put", {"key": "", "value": "MQ=="}),  # InvalidArgument
    ("/v3/lease/revoke", {"ID": 12345}),  # NotFound
    ("/v3/lease/grant", {"TTL": 10, "ID": 5}),
    ("/v3/lease/grant", {"TTL": 10, "ID": 5}),  # FailedPrecondition
    ("/v3/kv/txn", {"success": [{"request_put": {"key": "Yg==", "value": "MQ=="}}]}),
    ("/v3beta/kv/range", {"key": "Yg=="}),
    ("/v3/maintenance/status", {}),
    ("/v3/nope", {}),  # answered by the gateway's mux: no gRPC call
]


def post(url: str, path: str, doc: object) -> None:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=15)
    try:
        conn.request("POST", path, body=json.dumps(doc), headers={"Content-Type": "application/json"})
        conn.getresponse().read()
    finally:
        conn.close()


def counts(url: str) -> dict[tuple[str, ...], float]:
    """The two families' samples for etcd's services (etcd also counts its own health checks)."""
    text = urllib.request.urlopen(url + "/metrics", timeout=15).read().decode()
    out = {}
    pattern = r"^(grpc_server_(?:handled_total|started_total|handling_seconds_count))\{(.*)\} (\S+)$"
    for m in re.finditer(pattern, text, re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
        if labels["grpc_service"] in ("etcdserverpb.KV", "etcdserverpb.Lease", "etcdserverpb.Maintenance"):
            key = (m.group(1), labels["grpc_type"], labels["grpc_service"], labels["grpc_method"], labels.get("grpc_code", ""))
            out[key] = float(m.group(3))
    # every call by client version and kind (the gateway's: "unknown")
    for m in re.finditer(r'^etcd_server_client_requests_total\{client_api_version="([^"]*)",type="([^"]*)"\} (\S+)$',
                         text, re.M):
        out[("etcd_server_client_requests_total", m.group(1), m.group(2))] = float(m.group(3))
    return out


def deltas_of(tmp_path_factory: pytest.TempPathFactory, extra: list[str]) -> dict[str, dict[tuple[str, ...], float]]:
    deltas = {}
    with etcd_and_kvraft(tmp_path_factory, extra) as urls:
        for who, url in zip(("etcd", "kvraft"), urls, strict=True):
            before = counts(url)
            for path, doc in REQUESTS:
                post(url, path, doc)
            after = counts(url)
            deltas[who] = {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
    return deltas


def test_the_same_calls_counted_as_etcd(tmp_path_factory: pytest.TempPathFactory) -> None:
    deltas = deltas_of(tmp_path_factory, [])
    assert deltas["kvraft"] == deltas["etcd"]
    assert deltas["kvraft"][("grpc_server_handled_total", "unary", "etcdserverpb.KV", "Range", "OutOfRange")] == 2
    assert deltas["kvraft"][("etcd_server_client_requests_total", "unknown", "unary")] == len(REQUESTS) - 1
    assert not any(key[0] == "grpc_server_handling_seconds_count" for key in deltas["kvraft"])


def test_metrics_extensive_times_the_same_calls_as_etcd(tmp_path_factory: pytest.TempPathFactory) -> None:
    deltas = deltas_of(tmp_path_factory, ["--metrics", "extensive"])
    assert deltas["kvraft"] == deltas["etcd"]
    timed = ("grpc_server_handling_seconds_count", "unary", "etcdserverpb.KV", "Put", "")
    assert deltas["kvraft"][timed] == 4  # the three puts and the refused one
