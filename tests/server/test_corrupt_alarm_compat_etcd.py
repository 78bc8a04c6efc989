"""A raised CORRUPT alarm answers as etcd 3.4's: every write (put, delete, txn with a write,
compaction, lease grant and revoke) fails with gRPC DataLoss "etcdserver: corrupt cluster"
(HTTP 500, code 15), reads and read-only txns are served, status lists the alarm in its
``errors`` (protobuf text, trailing space and all), and disarming it lets writes through
again. The same requests go to a real etcd and to kvraft; bodies are compared without ids
and terms, status by its ``errors`` only. Skipped without the ``etcd`` binary."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from kvraft.server.local import post
from tests.server.conftest import etcd_and_kvraft, needs_etcd

pytestmark = needs_etcd

IGNORED = {"cluster_id", "member_id", "raft_term"}
ME = "<this member>"


def b(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def alarm(action: str, kind: str = "CORRUPT") -> dict[str, Any]:
    return {"action": action, "memberID": ME, "alarm": kind}


SCRIPT: list[tuple[str, dict[str, Any]]] = [
    ("/v3/kv/put", {"key": b("a"), "value": b("1")}),
    ("/v3/lease/grant", {"TTL": "60", "ID": "100"}),
    ("/v3/maintenance/alarm", alarm("ACTIVATE")),
    ("/v3/maintenance/alarm", alarm("ACTIVATE")),  # again: answered again
    ("/v3/kv/put", {"key": b("a"), "value": b("2")}),
    ("/v3/kv/put", {"key": b("b"), "value": b("2")}),
    ("/v3/kv/range", {"key": b("a")}),
    ("/v3/kv/range", {"key": b("a"), "serializable": True}),
    ("/v3/kv/deleterange", {"key": b("a")}),
    ("/v3/kv/txn", {"success": [{"request_range": {"key": b("a")}}]}),
    ("/v3/kv/txn", {"success": [{"request_put": {"key": b("a"), "value": b("3")}}]}),
    ("/v3/kv/txn", {"compare": [{"key": b("a"), "target": "VERSION", "result": "EQUAL", "version": "9"}],
                    "failure": [{"request_delete_range": {"key": b("a")}}]}),
    ("/v3/kv/compaction", {"revision": "1"}),
    ("/v3/lease/grant", {"TTL": "60"}),
    ("/v3/lease/revoke", {"ID": "100"}),
    ("/v3/lease/leases", {}),
    ("/v3/maintenance/status", {}),
    ("/v3/maintenance/alarm", {"action": "GET"}),
    ("/v3/maintenance/alarm", {"action": "GET", "alarm": "NOSPACE"}),
    ("/v3/maintenance/alarm", alarm("DEACTIVATE")),
    ("/v3/maintenance/alarm", {"action": "GET"}),
    ("/v3/maintenance/status", {}),
    ("/v3/kv/put", {"key": b("a"), "value": b("4")}),
    ("/v3/kv/range", {"key": b("a")}),
    # two alarms of one member: status lists both; a write fails as corrupt, not out of space
    ("/v3/maintenance/alarm", alarm("ACTIVATE", "NOSPACE")),
    ("/v3/maintenance/alarm", alarm("ACTIVATE")),
    ("/v3/maintenance/status", {}),
    ("/v3/kv/put", {"key": b("a"), "value": b("5")}),
    ("/v3/maintenance/alarm", alarm("DEACTIVATE", "NOSPACE")),
    ("/v3/maintenance/alarm", alarm("DEACTIVATE")),
    ("/v3/kv/put", {"key": b("a"), "value": b("6")}),
    # no memberID is member 0, not the member asked: an alarm of member 0 is raised (and
    # caps writes), and a DEACTIVATE without one leaves this member's alarm alone (kvraft took
    # the member asked for both until session 51)
    ("/v3/maintenance/alarm", {"action": "ACTIVATE", "alarm": "NOSPACE"}),
    ("/v3/maintenance/alarm", {"action": "GET"}),
    ("/v3/kv/put", {"key": b("a"), "value": b("7")}),
    ("/v3/maintenance/alarm", alarm("ACTIVATE", "NOSPACE")),
    ("/v3/maintenance/alarm", {"action": "DEACTIVATE", "alarm": "NOSPACE"}),
    ("/v3/maintenance/alarm", {"action": "GET"}),
    ("/v3/kv/put", {"key": b("a"), "value": b("8")}),
    ("/v3/maintenance/alarm", {"action": "DEACTIVATE", "alarm": "NOSPACE"}),
    ("/v3/maintenance/alarm", alarm("DEACTIVATE", "NOSPACE")),
    ("/v3/maintenance/alarm", {"action": "GET"}),
    ("/v3/kv/put", {"key": b("a"), "value": b("9")}),
]


def fill(value: Any, me: str) -> Any:
    if isinstance(value, dict):
        return {k: fill(v, me) for k, v in value.items()}
    return me if value == ME else value


def scrub(value: Any, me: str) -> Any:
    if isinstance(value, dict):
        return {k: scrub(v, me) for k, v in value.items() if k not in IGNORED}
    if isinstance(value, list):
        return [scrub(v, me) for v in value]
    if isinstance(value, str):
        return value.replace(me, ME)
    return value


def answer(url: str, me: str, path: str, doc: dict[str, Any]) -> tuple[int, Any]:
    code, body = post(url, path, fill(doc, me))
    if path.endswith("/status"):  # (etcd lists a member's alarms in a Go map's order: compared sorted)
        return code, sorted(scrub(body.get("errors", []), me))
    return code, scrub(body, me)


def test_a_corrupt_alarm_answers_as_etcds(tmp_path_factory: pytest.TempPathFactory) -> None:
    with etcd_and_kvraft(tmp_path_factory) as (etcd, kvraft):
        ids = {url: post(url, "/v3/maintenance/status", {})[1]["header"]["member_id"] for url in (etcd, kvraft)}
        for path, doc in SCRIPT:
            want, got = answer(etcd, ids[etcd], path, doc), answer(kvraft, ids[kvraft], path, doc)
            assert got == want, (path, doc)
