"""Locks and elections answer as etcd 3.4's v3lock and v3election gateways do: the same
requests that do not block, in the same order, to a real etcd and to kvraft, compared by
HTTP status and JSON body (without ids and terms). The waiting itself is tested in
test_lock_election.py. Errors included: etcd's gateway answers them as gRPC Unknown (500,
code 2), and so does kvraft. Skipped without the ``etcd`` binary.
"""

from __future__ import annotations

import base64
import http.client
import json
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.server.conftest import etcd_and_kvraft, needs_etcd

pytestmark = needs_etcd

IGNORED = {"cluster_id", "member_id", "raft_term"}


def b(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def leader(key: str, rev: int, lease: int = 100) -> dict[str, Any]:
    return {"name": b("e"), "key": b(key), "rev": str(rev), "lease": str(lease)}


# (path, body); lease 100 is hex 64, 101 is 65
SCRIPT: list[tuple[str, dict[str, Any]]] = [
    ("/v3/lease/grant", {"TTL": "60", "ID": "100"}),
    ("/v3/lease/grant", {"TTL": "60", "ID": "101"}),
    ("/v3/election/campaign", {"name": b("e"), "lease": "100", "value": b("v1")}),
    # again under the same lease with another value: proclaimed, answered with the txn's header
    ("/v3/election/campaign", {"name": b("e"), "lease": "100", "value": b("v2")}),
    ("/v3/election/leader", {"name": b("e")}),
    ("/v3/election/proclaim", {"leader": leader("e/64", 3), "value": b("v3")}),
    ("/v3/election/proclaim", {"leader": leader("e/64", 2), "value": b("v3")}),
    ("/v3/election/proclaim", {"leader": leader("e/65", 2, 101), "value": b("v4")}),
    ("/v3/election/proclaim", {}),
    ("/v3/election/campaign", {"name": b("e"), "lease": "999", "value": b("v")}),
    ("/v3/election/leader", {"name": b("e")}),
    ("/v3/election/leader", {"name": b("nobody")}),
    ("/v3/election/resign", {"leader": leader("e/64", 99)}),
    ("/v3/election/resign", {"leader": leader("e/64", 2)}),
    ("/v3/election/resign", {"leader": leader("e/64", 2)}),
    ("/v3/lock/lock", {"name": b("l"), "lease": "101"}),
    ("/v3/lock/lock", {"name": b("l"), "lease": "101"}),
    ("/v3/lock/unlock", {"key": b("l/65")}),
    ("/v3/lock/unlock", {"key": b("l/65")}),
    ("/v3/lock/lock", {"name": b(""), "lease": "101"}),
    ("/v3/kv/range", {"key": "AA==", "range_end": "AA==", "keys_only": True}),
]


def call(url: str, path: str, doc: dict[str, Any]) -> tuple[int, Any]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=20)
    try:
        conn.request("POST", path, body=json.dumps(doc), headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    return response.status, json.loads(raw)


def scrub(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items() if k not in IGNORED}
    if isinstance(value, (list, tuple)):
        return [scrub(v) for v in value]
    return value


def test_the_same_answers_as_etcd(tmp_path_factory: pytest.TempPathFactory) -> None:
    with etcd_and_kvraft(tmp_path_factory) as (etcd, kvraft):
        for path, doc in SCRIPT:
            want, got = scrub(call(etcd, path, doc)), scrub(call(kvraft, path, doc))
            assert got == want, (path, doc)
