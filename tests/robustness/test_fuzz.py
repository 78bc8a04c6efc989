"""Bad input, property-based: random bodies on every client route and random bytes on the
peer port of a real member process. Never a 5xx, never a crash, never a stuck member.

Routes that would change the cluster's shape or block by design are left out: member
add/remove/update/promote (a random add to a one-member cluster makes it lose quorum, which
is correct behaviour), transfer-leadership, auth enable (locks the test out), snapshot
(a stream of the whole store), and the blocking or streaming lock/campaign/observe/watch.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import struct
from collections.abc import Iterator
from urllib.parse import urlsplit

import msgpack as msgpack_lib
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from kvraft.server.local import LocalCluster, post

ROUTES = [
    "/kv/range", "/kv/put", "/kv/deleterange", "/kv/txn", "/kv/compaction",
    "/lease/grant", "/lease/revoke", "/lease/keepalive", "/lease/timetolive", "/lease/leases",
    "/cluster/member/list", "/maintenance/status", "/maintenance/defragment", "/maintenance/alarm",
    "/maintenance/hash", "/maintenance/hashkv", "/auth/disable", "/auth/status", "/auth/authenticate",
    "/auth/user/add", "/auth/user/get", "/auth/user/list", "/auth/user/delete", "/auth/user/changepw",
    "/auth/user/grant", "/auth/user/revoke", "/auth/role/add", "/auth/role/get", "/auth/role/list",
    "/auth/role/delete", "/auth/role/grant", "/auth/role/revoke", "/lock/unlock",
    "/election/proclaim", "/election/leader", "/election/resign",
]  # fmt: skip
FIELDS = [
    "key", "range_end", "value", "lease", "limit", "revision", "sort_order", "sort_target", "serializable",
    "keys_only", "count_only", "prev_kv", "ignore_value", "ignore_lease", "compare", "success", "failure",
    "request_put", "request_range", "request_delete_range", "request_txn", "target", "result", "version",
    "create_revision", "mod_revision", "physical", "TTL", "ID", "keys", "name", "password", "role", "user",
    "perm", "permType", "action", "alarm", "memberID", "leader", "linearizable", "options", "no_password",
]  # fmt: skip

ETCD_UNKNOWN_ERRORS = {"election: no leader", "election: not leader"}

b64 = st.binary(max_size=40).map(lambda b: base64.b64encode(b).decode())
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.integers(min_value=-(2**70), max_value=2**70).map(str), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30), b64, st.sampled_from(["PUT", "DELETE", "EQUAL", "VALUE", "CREATE", "MOD", "READWRITE", "-1", "0x10", ""]),
)  # fmt: skip
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(max_size=8)), inner, max_size=5),
    ),
    max_leaves=12,
)
bodies = st.one_of(
    st.dictionaries(st.sampled_from(FIELDS), values, max_size=6).map(lambda d: json.dumps(d).encode()),
    values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
    st.dictionaries(st.sampled_from(FIELDS), values, max_size=6).map(lambda d: json.dumps(d).encode()[:-3]),  # truncated
)


@pytest.fixture(scope="module")
def member() -> Iterator[LocalCluster]:
    with LocalCluster(1) as cluster:
        cluster.start()
        yield cluster


def _conn(url: str) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=15)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(route=st.sampled_from(ROUTES), prefix=st.sampled_from(["/v3", "/v3beta"]), body=bodies,
       msgpack=st.booleans(), chunked=st.booleans())  # fmt: skip
@example(route="/election/leader", prefix="/v3", body=b"", msgpack=True, chunked=False)  # CI 2026-12-02: a msgpack 500 read as JSON
@example(route="/lease/keepalive", prefix="/v3", body=b"\xc1", msgpack=True, chunked=False)  # full run 2026-12-02: a 500
def test_any_body_on_any_route_gets_an_answer_not_a_5xx(
    member: LocalCluster, route: str, prefix: str, body: bytes, msgpack: bool, chunked: bool,
) -> None:
    """``chunked``: the body in two chunks without a Content-Length (the framing aiohttp reads
    itself, past the fast path)."""
    conn = _conn(member.url("m0"))
    try:
        ctype = "application/x-msgpack" if msgpack else "application/json"
        half = len(body) // 2
        conn.request("POST", prefix + route, body=iter([body[:half], body[half:]]) if chunked else body,
                     headers={"Content-Type": ctype}, encode_chunked=chunked)
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    if resp.status != 200:
        # An error is answered in the encoding the client asked for (msgpack or JSON).
        if "msgpack" in (resp.getheader("Content-Type") or ""):
            doc = msgpack_lib.unpackb(data, raw=False)
        else:
            doc = json.loads(data)
        assert isinstance(doc, dict) and "code" in doc and "error" in doc, (route, body[:80], data[:200])
        if resp.status >= 500:
            # etcd answers these expected outcomes with gRPC code Unknown, which its gateway maps
            # to HTTP 500; kvraft answers the same (tests/server/test_compat_etcd.py compares
            # them with etcd's): any error of the v3lock/v3election services (their client
            # drops the status), and a keepalive whose first request object does not decode
            # (the gateway returns the bare decoder error). Anything else is a bug.
            assert resp.status == 500 and doc["code"] == 2, (route, body[:80], resp.status, data[:200])
            if not (route.startswith(("/election/", "/lock/")) or route == "/lease/keepalive" and not msgpack):
                assert doc["error"] in ETCD_UNKNOWN_ERRORS, (route, body[:80], resp.status, data[:200])


def test_oversized_request_is_refused_with_etcds_error(member: LocalCluster) -> None:
    big = json.dumps({"key": base64.b64encode(b"k").decode(), "value": base64.b64encode(b"x" * 2_000_000).decode()})
    status, doc = post(member.url("m0"), "/v3/kv/put", json.loads(big), timeout_s=30)
    assert status != 200 and status < 500
    assert "request is too large" in doc["error"] or "too large" in doc["error"], doc


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frame=st.one_of(
    st.binary(max_size=300),
    st.binary(max_size=64).map(lambda b: struct.pack(">I", len(b) + 50) + b),  # truncated: shorter than announced
    st.integers(min_value=2**20, max_value=2**32 - 1).map(lambda n: struct.pack(">I", n)),  # oversized length
))  # fmt: skip
def test_peer_port_survives_garbage(member: LocalCluster, frame: bytes) -> None:
    port = urlsplit(member.members["m0"].peer_url).port
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(frame)
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(10)
        try:
            while sock.recv(4096):
                pass
        except (ConnectionResetError, TimeoutError):
            pass


def test_member_still_serves_after_the_fuzzing(member: LocalCluster) -> None:
    assert member.members["m0"].alive()
    status, _ = post(member.url("m0"), "/v3/kv/put", {"key": base64.b64encode(b"after").decode(), "value": "eA=="})
    assert status == 200
    status, doc = post(member.url("m0"), "/v3/kv/range", {"key": base64.b64encode(b"after").decode()})
    assert status == 200 and doc["kvs"][0]["value"] == "eA=="
