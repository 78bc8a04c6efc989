"""The same requests, in the same order, to a real etcd 3.4 and to kvraft; the answers are
compared field by field (HTTP status, and the JSON body without ids and terms).

Both run as fresh single-member clusters on 127.0.0.1 so revisions line up. Skipped when
the ``etcd`` binary is absent (``.ci/run`` installs Debian's etcd-server).
"""

from __future__ import annotations

import base64
import http.client
import json
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.server.conftest import etcd_and_kvraft, needs_etcd

IGNORED_HEADER_FIELDS = {"cluster_id", "member_id", "raft_term"}


def b(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def call(url: str, method: str, path: str, body: str | bytes | None) -> tuple[int, Any]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=15)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    try:
        return response.status, json.loads(raw)
    except ValueError:
        return response.status, raw.decode().strip()


def scrub(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: scrub(v)
            for k, v in value.items()
            if not (k in IGNORED_HEADER_FIELDS and isinstance(v, str))
        }
    if isinstance(value, (list, tuple)):
        return [scrub(v) for v in value]
    return value


def put(key: str, value: str, **extra: Any) -> str:
    return json.dumps({"key": b(key), "value": b(value), **extra})


CAS = json.dumps(
    {
        "compare": [{"key": b("foo"), "result": "EQUAL", "target": "VALUE", "value": b("baz")}],
        "success": [{"request_put": {"key": b("foo"), "value": b("qux")}}],
        "failure": [{"request_range": {"key": b("foo")}}],
    }
)

# (method, path, body); the order matters (revisions).
SCRIPT: list[tuple[str, str, str | bytes | None]] = [
    ("POST", "/v3/kv/put", put("foo", "bar")),
    ("POST", "/v3/kv/put", put("foo", "baz", prev_kv=True)),
    ("POST", "/v3/kv/put", put("foo1", "1")),
    ("POST", "/v3/kv/put", put("foo2", "2")),
    ("POST", "/v3/kv/range", json.dumps({"key": b("foo")})),
    ("POST", "/v3/kv/range", json.dumps({"key": b("foo"), "range_end": b("fop")})),
    ("POST", "/v3/kv/range", json.dumps({"key": b("foo"), "range_end": b("fop"), "limit": 1, "sort_order": "DESCEND", "sort_target": "KEY", "keys_only": True})),
    ("POST", "/v3/kv/range", json.dumps({"key": b("foo"), "range_end": b("fop"), "count_only": True})),
    ("POST", "/v3/kv/range", json.dumps({"key": "AA==", "range_end": "AA=="})),
    ("POST", "/v3/kv/range", json.dumps({"key": b("foo"), "revision": 2})),
    ("POST", "/v3/kv/range", json.dumps({"key": b("foo"), "serializable": True, "limit": "1"})),
    ("POST", "/v3/kv/range", json.dumps({"key": b("none")})),
    ("POST", "/v3/kv/txn", CAS),
    ("POST", "/v3/kv/txn", CAS),
    ("POST", "/v3/kv/txn", json.dumps({"compare": [{"key": b("new"), "target": "CREATE", "create_revision": "0"}], "success": [{"request_put": {"key": b("new"), "value": b("1")}}, {"request_range": {"key": b("new")}}]})),
    ("POST", "/v3/kv/txn", json.dumps({"compare": [{"key": b("foo"), "target": "MOD", "result": "GREATER", "mod_revision": "1"}, {"key": b("foo"), "target": "VERSION", "result": "LESS", "version": "10"}], "success": [{"request_delete_range": {"key": b("foo1"), "prev_kv": True}}, {"request_txn": {"success": [{"request_range": {"key": b("foo2")}}]}}]})),
    ("POST", "/v3/kv/txn", json.dumps({"success": [{"request_put": {"key": b("foo"), "value": b("1")}}, {"request_put": {"key": b("foo"), "value": b("2")}}]})),
    ("POST", "/v3/kv/txn", json.dumps({})),
    ("POST", "/v3/kv/txn", json.dumps({"success": [{}]})),
    ("POST", "/v3/kv/txn", json.dumps({"success": [{"request_put": {"key": b(f"many{i}"), "value": b("x")}} for i in range(129)]})),
    ("POST", "/v3/kv/deleterange", json.dumps({"key": b("foo2"), "prev_kv": True})),
    ("POST", "/v3/kv/deleterange", json.dumps({"key": b("none")})),
    ("POST", "/v3/kv/compaction", json.dumps({"revision": "4", "physical": True})),
    ("POST", "/v3/kv/range", json.dumps({"key": b("foo"), "revision": "3"})),
    ("POST", "/v3/kv/range", json.dumps({"key": b("foo"), "revision": "999"})),
    ("POST", "/v3/kv/compaction", json.dumps({"revision": "3"})),
    ("POST", "/v3/kv/compaction", json.dumps({"revision": "100"})),
    ("POST", "/v3/kv/put", put("", "x")),
    ("POST", "/v3/kv/put", json.dumps({"key": b("foo"), "ignore_value": True, "value": b("x")})),
    ("POST", "/v3/kv/put", json.dumps({"key": b("absent"), "ignore_value": True})),
    ("POST", "/v3/kv/put", json.dumps({"key": b("foo"), "value": b("x"), "lease": "12345"})),
    ("POST", "/v3/kv/put", "not json"),
    ("POST", "/v3/kv/put", json.dumps({"key": 123})),
    ("POST", "/v3/kv/put", json.dumps({"key": b("foo"), "lease": "abc"})),
    ("POST", "/v3/kv/put", json.dumps({"key": b("foo"), "prev_kv": "yes"})),
    ("POST", "/v3/kv/put", "[1,2]"),
    ("POST", "/v3/kv/put", ""),
    ("POST", "/v3/kv/put", json.dumps({"key": b("foo"), "value": b("y"), "unknown_field": 5})),
    ("POST", "/v3/kv/range", json.dumps({"key": b("foo"), "sort_order": "BOGUS"})),
    ("POST", "/v3/kv/range", json.dumps({"key": b("foo"), "limit": 1.5})),
    ("POST", "/v3/kv/range", json.dumps({"key": "!!!"})),
    ("POST", "/v3/kv/range", "{bad"),
    ("POST", "/v3/kv/range", json.dumps({})),
    ("POST", "/v3beta/kv/range", json.dumps({"key": b("foo")})),
    ("GET", "/v3/kv/range", None),
    ("GET", "/v3/watch", None),  # GET is only the WebSocket upgrade's: kvraft answered 400 code 3
    ("GET", "/v3beta/lease/keepalive", None),
    ("POST", "/v3/kv/nothere", "{}"),
    ("POST", "/v3/kv/put", json.dumps({"key": b("big"), "value": base64.b64encode(b"x" * 1_600_000).decode()})),
    ("POST", "/v3/maintenance/alarm", json.dumps({"action": "GET"})),
    ("POST", "/v3/maintenance/defragment", "{}"),
    ("POST", "/v3/maintenance/transfer-leadership", json.dumps({"targetID": "1"})),
    ("POST", "/v3/cluster/member/remove", json.dumps({"ID": "12345"})),
    ("POST", "/v3/cluster/member/promote", json.dumps({"ID": "12345"})),
    ("POST", "/v3/cluster/member/update", json.dumps({"ID": "12345", "peerURLs": ["http://127.0.0.1:1"]})),
    ("POST", "/v3/cluster/member/add", json.dumps({"peerURLs": ["notaurl"]})),
    ("GET", "/health", None),
    # found by the randomized comparison (tests/server/compat_fuzz.py)
    ("POST", "/v3/lease/grant", json.dumps({"TTL": "600", "ID": "-7"})),
    ("POST", "/v3/lease/grant", json.dumps({"TTL": "9000000001", "ID": "-7"})),
    ("POST", "/v3/lease/revoke", json.dumps({"ID": "-7"})),
    ("POST", "/v3/kv/txn", json.dumps({"compare": [{"key": "", "target": "VERSION"}], "success": [{"request_range": {"key": b("foo")}}, {}]})),
    ("POST", "/v3/kv/range", json.dumps({"key": b("foo"), "rangeEnd": "AA==", "countOnly": True}) + " {}x"),
    ("POST", "/v3/kv/range", json.dumps({"key": [102, 111, 111], "limit": "null"})),
    ("POST", "/v3/kv/range", json.dumps({"key": b("foo"), "limit": "+5"})),
    ("POST", "/v3/kv/range", '{"key": "Zm9v\\n", "limit": 2.0}'),
    ("POST", "/v3/kv/range", '{"key": "Zm9v", "limit"'),
    ("POST", "/v3//kv/range", json.dumps({"key": b("foo")})),
    ("GET", "/v3beta/./kv/range", None),
    ("POST", "/v3", "{}"),
    # a request target in absolute form (what a client sends to a forward proxy): kvraft redirected to /http:/...
    ("POST", "http://127.0.0.1/v3/kv/range", json.dumps({"key": b("foo")})),
    ("POST", "http://127.0.0.1/v3beta/kv/put", put("abs", "1")),
    ("POST", "http://127.0.0.1/v3/lease/leases", "{}"),
    ("POST", "http://127.0.0.1//v3/kv/range", "{}"),
    ("POST", "/v4/kv/range", "{}"),
    ("OPTIONS", "/v3/nothere", None),
    ("OPTIONS", "/health", None),
    ("HEAD", "/health", None),
    ("HEAD", "/version", None),
    ("HEAD", "/metrics", None),
    # v3election/v3lock answer their errors as gRPC Unknown (code 2, HTTP 500) in etcd 3.4
    ("POST", "/v3/election/leader", json.dumps({"name": b("nobody")})),
    ("POST", "/v3/election/resign", json.dumps({"leader": None})),
    ("POST", "/v3/election/proclaim", json.dumps({"leader": {"name": b("e"), "rev": "3"}, "value": b("v")})),
    ("POST", "/v3/election/proclaim", json.dumps({"leader": {"name": b("e"), "key": b("e/1"), "lease": "999"}})),
    ("POST", "/v3/election/resign", json.dumps({"leader": {"name": b("e"), "key": b("e/1"), "rev": "3"}})),
    ("POST", "/v3/lock/unlock", "{}"),
    ("POST", "/v3/lock/lock", json.dumps({"name": b("l"), "lease": "999"})),
    ("POST", "/v3/election/campaign", json.dumps({"name": b("e"), "lease": "999"})),
    # alarms are kept per (member, type), NONE included, zero fields omitted
    ("POST", "/v3/maintenance/alarm", json.dumps({"action": "ACTIVATE", "memberID": "5", "alarm": "NONE"})),
    ("POST", "/v3/maintenance/alarm", json.dumps({"action": "ACTIVATE", "memberID": "5", "alarm": "NOSPACE"})),
    ("POST", "/v3/maintenance/alarm", json.dumps({"action": "ACTIVATE", "memberID": "6", "alarm": "NOSPACE"})),
    ("POST", "/v3/lease/grant", json.dumps({"TTL": "60", "ID": "31"})),
    ("GET", "/health", None),  # false while any alarm is raised
    ("POST", "/v3/maintenance/alarm", json.dumps({"action": "DEACTIVATE", "memberID": "5", "alarm": "NOSPACE"})),
    ("POST", "/v3/maintenance/alarm", json.dumps({"action": "DEACTIVATE", "memberID": "5", "alarm": "NOSPACE"})),
    ("POST", "/v3/maintenance/alarm", json.dumps({"action": "GET", "alarm": "NOSPACE"})),
    ("POST", "/v3/kv/put", put("capped", "x")),
    ("POST", "/v3/maintenance/alarm", json.dumps({"action": "DEACTIVATE", "memberID": "6", "alarm": "NOSPACE"})),
    ("GET", "/health", None),  # only the NONE one left
    ("POST", "/v3/maintenance/alarm", json.dumps({"action": "DEACTIVATE", "memberID": "5", "alarm": "NONE"})),
    ("POST", "/v3/maintenance/alarm", json.dumps({"action": "GET"})),
    ("GET", "/health", None),
    # a permission type by an unknown number is kept and answered as the number (role/get was a 500)
    ("POST", "/v3/auth/role/add", json.dumps({"name": "r7"})),
    ("POST", "/v3/auth/role/grant", json.dumps({"name": "r7", "perm": {"key": b("k"), "permType": 7}})),
    ("POST", "/v3/auth/role/grant", json.dumps({"name": "r7", "perm": {"key": b("j"), "range_end": "AA==", "permType": "WRITE"}})),
    ("POST", "/v3/auth/role/get", json.dumps({"role": "r7"})),
    ("POST", "/v3/auth/role/revoke", json.dumps({"role": "r7", "key": b("k")})),
    ("POST", "/v3/auth/role/get", json.dumps({"role": "r7"})),
    ("POST", "/v3/auth/role/delete", json.dumps({"role": "r7"})),
    # a lone surrogate escape is U+FFFD, as Go decodes it (kvraft: a 500, UnicodeEncodeError)
    ("POST", "/v3/auth/user/add", '{"name": "c\\ud800d", "password": "p"}'),
    ("POST", "/v3/auth/user/get", '{"name": "c\\ufffdd"}'),
    ("POST", "/v3/auth/user/delete", '{"name": "c\\udfffd"}'),
    # every proposal is held to --max-request-bytes, auth changes too (kvraft stored this role)
    ("POST", "/v3/auth/role/add", json.dumps({"name": "r" * 1_600_000})),
    ("POST", "/v3/auth/role/grant", json.dumps({"name": "r7", "perm": {"key": b("k" * 1_200_000)}})),
]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    with etcd_and_kvraft(tmp_path_factory) as urls:
        yield urls


@needs_etcd
def test_kv_and_error_answers_match_etcd_field_by_field(pair) -> None:
    etcd_url, kvraft_url = pair
    mismatches = []
    for method, path, body in SCRIPT:
        want = call(etcd_url, method, path, body)
        got = call(kvraft_url, method, path, body)
        if scrub(want) != scrub(got):
            shown = body if body is None or len(body) < 200 else body[:200] + "..."
            mismatches.append(f"{method} {path} {shown}\n  etcd:   {want}\n  kvraft: {got}")
    assert not mismatches, "\n".join(mismatches)


@needs_etcd
def test_cluster_and_maintenance_answers_have_etcds_shape(pair) -> None:
    etcd_url, kvraft_url = pair
    for path, body in (("/v3/cluster/member/list", "{}"), ("/v3/maintenance/status", "{}"), ("/v3/maintenance/hash", "{}")):
        (want_code, want), (got_code, got) = call(etcd_url, "POST", path, body), call(kvraft_url, "POST", path, body)
        assert want_code == got_code == 200
        assert set(got) == set(want), path
        assert set(got["header"]) == set(want["header"]), path
    _, want = call(etcd_url, "POST", "/v3/cluster/member/list", "{}")
    _, got = call(kvraft_url, "POST", "/v3/cluster/member/list", "{}")
    assert [set(m) for m in got["members"]] == [set(m) for m in want["members"]]
    _, got = call(kvraft_url, "GET", "/version", None)
    assert got["etcdserver"].startswith("3.4") and got["etcdcluster"].startswith("3.4")


STREAMS = [
    ("/v3/maintenance/snapshot", "{}"),
    ("/v3/lease/keepalive", json.dumps({"ID": "1"})),
    ("/v3/watch", json.dumps({"create_request": {"key": b("foo")}})),
]


@needs_etcd
@pytest.mark.parametrize(("path", "body"), STREAMS)
def test_streamed_answers_carry_etcds_headers(pair, path: str, body: str) -> None:
    """The CORS headers and Grpc-Metadata-Content-Type on every streamed answer (a browser
    reading a snapshot through the gateway needs them; kvraft's snapshot had none)."""
    names = []
    for url in pair:
        parts = urlsplit(url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=15)
        try:
            conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            assert response.status == 200
            names.append({k.lower() for k, _ in response.getheaders()} - {"date", "server", "content-length"})
        finally:
            conn.close()
    assert names[1] == names[0]


@needs_etcd
@pytest.mark.parametrize("path", ["/v3/kv/range", "/v3/watch", "/v3/nothere", "/health"])
def test_a_cors_preflight_is_answered_with_etcds_cors_headers(pair, path: str) -> None:
    """A browser's OPTIONS before a cross-origin JSON POST: etcd's CORS wrapper answers it
    with the Access-Control-Allow-* headers; kvraft answered 200 without them, so a browser
    refused the POST that should follow."""
    got = []
    for url in pair:
        parts = urlsplit(url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=15)
        try:
            conn.request("OPTIONS", path, headers={"Origin": "http://dashboard.example",
                                                   "Access-Control-Request-Method": "POST"})
            response = conn.getresponse()
            response.read()
            got.append((response.status, {k.lower(): v for k, v in response.getheaders()
                                          if k.lower().startswith("access-control-")}))
        finally:
            conn.close()
    assert got[1] == got[0]
