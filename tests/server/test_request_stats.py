"""etcd's "request stats" line for slow client requests (``--warning-unary-request-duration``,
``kvraft.server.api.request_stats``).

The numbers and contents expected below are etcd's own: each case's request body and answer
are what etcd 3.4.23 answered to them through its gateway, and each expected tuple is the
``request count``, ``request size``, ``response count``, ``response size`` and ``request
content`` of the ``request stats`` debug line etcd 3.4.23 wrote for that call
(``--logger zap --log-level debug``). Then two real members: one at ``1ns`` (every request is
slow) logging a WARN line per unary request on the fast path and on aiohttp's, none for
streams, and none with a value in it; one at etcd's default 300ms logging none for the same
requests."""

from __future__ import annotations

import base64
import http.client
import json
import logging
import re
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import msgpack
import pytest

from kvraft.apply.ops import Compare, PutOp, RangeOp, TxnOp
from kvraft.durations import parse_go_duration_s
from kvraft.server.api.codec import MSGPACK
from kvraft.server.api.grpc_stats import method_for
from kvraft.server.api.request_stats import RequestStats, go_duration, request_content, stats_fields
from kvraft.server.local import LocalCluster, post


def _b(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


_HEADER = '"header":{"cluster_id":"7687440915468988904","member_id":"8128737460060627614","revision":"%d","raft_term":"2"}'

# (path, request, etcd's answer (None: an error), etcd's line's fields)
ETCD_CASES: list[tuple[str, dict[str, Any], str | None, tuple[int, int, int, int, str]]] = [
    ("/v3/kv/put", {"key": _b("foo"), "value": _b("secretvalue")}, "{%s}" % (_HEADER % 2),
     (1, 18, 0, 26, 'key:"foo" value_size:11 ')),
    ("/v3/kv/put", {"key": _b("k\n\x01\xff\"\\"), "value": _b("v" * 300), "prev_kv": True}, "{%s}" % (_HEADER % 3),
     (1, 314, 0, 26, 'key:"k\\n\\001\\303\\277\\"\\\\" value_size:300 prev_kv:true ')),
    ("/v3/kv/range", {"key": _b("foo")},
     '{%s,"kvs":[{"key":"Zm9v","create_revision":"2","mod_revision":"2","version":"1",'
     '"value":"c2VjcmV0dmFsdWU="}],"count":"1"}' % (_HEADER % 3),
     (0, 5, 1, 54, 'key:"foo" ')),
    ("/v3/kv/range", {"key": _b("a"), "range_end": _b("z"), "limit": 5, "sort_order": "DESCEND", "sort_target": "MOD",
                      "serializable": True, "keys_only": True, "min_mod_revision": 1, "max_create_revision": 1000,
                      "revision": 0},
     '{%s,"kvs":[{"key":"awoBw78iXA==","create_revision":"3","mod_revision":"3","version":"1"},'
     '{"key":"Zm9v","create_revision":"2","mod_revision":"2","version":"1"}],"count":"2"}' % (_HEADER % 3),
     (0, 21, 2, 58, 'key:"a" range_end:"z" limit:5 sort_order:DESCEND sort_target:MOD serializable:true '
                    "keys_only:true min_mod_revision:1 max_create_revision:1000 ")),
    ("/v3/kv/txn", {
        "compare": [{"target": "VALUE", "key": _b("foo"), "value": _b("secretvalue")},
                    {"target": "MOD", "key": _b("foo"), "mod_revision": "0", "result": "GREATER"},
                    {"target": "CREATE", "key": _b("bar"), "create_revision": 0}],
        "success": [{"request_put": {"key": _b("foo"), "value": _b("secret2"), "lease": 0}},
                    {"request_range": {"key": _b("foo")}},
                    {"request_delete_range": {"key": _b("zz"), "prev_kv": True}},
                    {"request_txn": {"success": [{"request_put": {"key": _b("n"), "value": _b("secret3")}}]}}],
        "failure": [{"request_range": {"key": _b("foo"), "range_end": _b("fop")}}]},
     '{%s,"succeeded":true,"responses":[{"response_put":{"header":{"revision":"4"}}},'
     '{"response_range":{"header":{"revision":"4"},"kvs":[{"key":"Zm9v","create_revision":"2","mod_revision":"4",'
     '"version":"2","value":"c2VjcmV0Mg=="}],"count":"1"}},{"response_delete_range":{"header":{"revision":"4"}}},'
     '{"response_txn":{"header":{},"succeeded":true,"responses":[{"response_put":{"header":{"revision":"4"}}}]}}]}'
     % (_HEADER % 4),
     (4, 49, 0, 92, 'compare:<target:VALUE key:"foo" value_size:11  result:GREATER target:MOD key:"foo" mod_revision:0 '
                    ' target:CREATE key:"bar" create_revision:0 > success:<request_put:<key:"foo" value_size:7 > '
                    'request_range:<key:"foo" >  request_delete_range:<key:"zz" prev_kv:true >  '
                    'request_txn:<compare:<> success:<request_put:<key:"n" value_size:7 >> failure:<>>> '
                    'failure:<request_range:<key:"foo" range_end:"fop" > >')),
    ("/v3/kv/txn", {"compare": [{"target": "VALUE", "key": _b("foo"), "value": _b("nope")}],
                    "success": [{"request_put": {"key": _b("foo"), "value": _b("s")}}],
                    "failure": [{"request_range": {"key": _b("foo")}}, {"request_range": {"key": _b("n")}}]},
     '{%s,"responses":[{"response_range":{"header":{"revision":"4"},"kvs":[{"key":"Zm9v","create_revision":"2",'
     '"mod_revision":"4","version":"2","value":"c2VjcmV0Mg=="}],"count":"1"}},{"response_range":{"header":'
     '{"revision":"4"},"kvs":[{"key":"bg==","create_revision":"4","mod_revision":"4","version":"1",'
     '"value":"c2VjcmV0Mw=="}],"count":"1"}}]}' % (_HEADER % 4),
     (2, 12, 0, 88, 'compare:<target:VALUE key:"foo" value_size:4 > success:<request_put:<key:"foo" value_size:1 >> '
                    'failure:<request_range:<key:"foo" >  request_range:<key:"n" > >')),
    ("/v3/kv/deleterange", {"key": _b("n"), "prev_kv": True},
     '{%s,"deleted":"1","prev_kvs":[{"key":"bg==","create_revision":"4","mod_revision":"4","version":"1",'
     '"value":"c2VjcmV0Mw=="}]}' % (_HEADER % 5),
     (0, 5, 1, 48, 'key:"n" prev_kv:true ')),
    ("/v3/kv/deleterange", {"key": _b("a"), "range_end": _b("\0")}, '{%s,"deleted":"2"}' % (_HEADER % 6),
     (0, 6, 2, 28, 'key:"a" range_end:"\\000" ')),
    ("/v3/kv/range", {"key": _b("foo"), "revision": 99999}, None, (0, 9, 0, 0, 'key:"foo" revision:99999 ')),
    ("/v3/lease/grant", {"TTL": 60}, '{%s,"ID":"2494609701010199310","TTL":"60"}' % (_HEADER % 6),
     (-1, -1, -1, -1, "")),
]


@pytest.mark.parametrize(("path", "request_doc", "answer", "expected"), ETCD_CASES,
                         ids=[f"{case[0]}-{i}" for i, case in enumerate(ETCD_CASES)])
def test_the_fields_are_etcds_for_the_same_call(path: str, request_doc: dict[str, Any], answer: str | None,
                                                expected: tuple[int, int, int, int, str]) -> None:
    method = method_for(path)
    assert method is not None
    body = json.dumps(request_doc).encode()
    assert stats_fields(method, "application/json", body, None if answer is None else answer.encode()) == expected


def _packed(doc: Any) -> Any:
    """A JSON request or answer as kvraft's msgpack shape: bytes raw, integers as integers."""
    if isinstance(doc, dict):
        out: dict[str, Any] = {}
        for name, value in doc.items():
            if name in ("key", "value", "range_end") and isinstance(value, str):
                out[name] = base64.b64decode(value)
            elif isinstance(value, str) and value.isdigit():
                out[name] = int(value)
            else:
                out[name] = _packed(value)
        return out
    if isinstance(doc, list):
        return [_packed(item) for item in doc]
    return doc


@pytest.mark.parametrize("index", [0, 2, 4, 6])
def test_a_msgpack_call_gives_the_same_fields(index: int) -> None:
    path, request_doc, answer, expected = ETCD_CASES[index]
    method = method_for(path)
    assert method is not None and answer is not None
    body = msgpack.packb(_packed(request_doc), use_bin_type=True)
    payload = msgpack.packb(_packed(json.loads(answer)), use_bin_type=True)
    assert stats_fields(method, MSGPACK, body, payload) == expected


def test_a_put_shows_its_values_size_never_its_value() -> None:
    put = PutOp(b"/registry/secret", b"hunter2-the-password", lease=7, ignore_lease=True)
    assert request_content(put) == 'key:"/registry/secret" value_size:20 lease:7 ignore_lease:true '
    method = method_for("/v3/kv/put")
    assert method is not None
    body = json.dumps({"key": _b("k"), "value": _b("hunter2-the-password")}).encode()
    fields = stats_fields(method, "application/json", body, b'{"header":{"revision":"2"}}')
    assert fields is not None and "hunter2" not in repr(fields) and _b("hunter2-the-password") not in repr(fields)
    assert fields[4] == 'key:"k" value_size:20 '


def test_a_txns_puts_nested_txns_and_value_compares_show_sizes_only() -> None:
    txn = TxnOp(
        compare=[Compare(result=3, target=3, key=b"k", value=b"compare-secret", range_end=b"l")],
        success=[PutOp(b"a", b"success-secret"),
                 TxnOp(failure=[PutOp(b"b", b"nested-secret", prev_kv=True)])],
        failure=[PutOp(b"c", b"failure-secret"), RangeOp(b"d", count_only=True)],
    )
    content = request_content(txn)
    assert "secret" not in content
    assert content == (
        'compare:<result:NOT_EQUAL target:VALUE key:"k" value_size:14 range_end:"l" > '
        'success:<request_put:<key:"a" value_size:14 > request_txn:<compare:<> success:<> '
        'failure:<request_put:<key:"b" value_size:13 prev_kv:true >>>> '
        'failure:<request_put:<key:"c" value_size:14 > request_range:<key:"d" count_only:true > >'
    )


def test_a_ranges_fields_are_its_set_fields_in_field_order() -> None:
    op = RangeOp(b"a", b"\xff\x00", limit=10, revision=5, sort_order=1, sort_target=4, count_only=True,
                 min_create_revision=2, max_mod_revision=9)
    assert request_content(op) == ('key:"a" range_end:"\\377\\000" limit:10 revision:5 sort_order:ASCEND '
                                   "sort_target:VALUE count_only:true max_mod_revision:9 min_create_revision:2 ")


@pytest.mark.parametrize(("path", "doc"), [
    ("/v3/auth/authenticate", {"name": "root", "password": "hunter2"}),
    ("/v3/auth/user/add", {"name": "bob", "password": "hunter2", "options": {"no_password": False}}),
    ("/v3/auth/user/changepw", {"name": "bob", "password": "hunter2"}),
])
def test_auth_calls_are_logged_without_their_content(path: str, doc: dict[str, Any],
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """etcd fills the content and sizes of the four KV calls only: an auth call's line has
    -1s and no content, so no password (or token) reaches the log."""
    method = method_for(path)
    assert method is not None
    body = json.dumps(doc).encode()
    assert stats_fields(method, "application/json", body, b'{"token":"hunter2.token"}') == (-1, -1, -1, -1, "")
    with caplog.at_level(logging.WARNING, "kvraft.api.requests"):
        RequestStats(1e-9, debug=False).log(method, 0.5, ("127.0.0.1", 4242), "application/json", body, 0,
                                             b'{"token":"hunter2.token"}')
    [record] = [r for r in caplog.records if r.getMessage() == "request stats"]
    fields = record.fields  # type: ignore[attr-defined]
    assert "hunter2" not in repr(fields)
    assert fields["response type"] == f"/etcdserverpb.Auth/{method[2]}" and fields["request content"] == ""


def test_the_line_is_etcds_warn_or_debug(caplog: pytest.LogCaptureFixture) -> None:
    method = method_for("/v3/kv/range")
    assert method is not None
    body, answer = b'{"key":"Zm9v"}', b'{"header":{"revision":"3"},"count":"1"}'
    with caplog.at_level(logging.DEBUG, "kvraft.api.requests"):
        stats = RequestStats(0.3, debug=False)
        assert stats.threshold == 0.3
        stats.log(method, 0.2, ("127.0.0.1", 1), "application/json", body, 0, answer)  # not slow: nothing
        stats.log(method, 0.4, ("::1", 2), "application/json", body, 0, answer)
        debug = RequestStats(0.3)  # the logger is enabled for DEBUG: every call, at DEBUG (a slow one too)
        assert debug.threshold < 0
        debug.log(method, 0.001, ("127.0.0.1", 3), "application/json", body, 0, answer)
        debug.log(method, 1.0, ("127.0.0.1", 4), "application/json", body, 0, answer)
        watch = method_for("/v3/watch")
        assert watch is not None and watch[0] != "unary"
        stats.log(watch, 5.0, ("127.0.0.1", 5), "application/json", b"", 0, b"")  # a stream: never
        stats.log(method, 0.4, None, "application/json", b"{not json", 0, answer)  # no call was made: none
        stats.log(method, 0.4, ("127.0.0.1", 6), "application/json", body, 11, b'{"error":"x"}')  # failed
    lines = [(r.levelno, r.fields) for r in caplog.records if r.getMessage() == "request stats"]  # type: ignore[attr-defined]
    assert [level for level, _ in lines] == [logging.WARNING, logging.DEBUG, logging.DEBUG, logging.WARNING]
    assert [fields["remote"] for _, fields in lines] == ["[::1]:2", "127.0.0.1:3", "127.0.0.1:4", "127.0.0.1:6"]
    first = lines[0][1]
    assert list(first) == ["start time", "time spent", "remote", "response type", "request count", "request size",
                           "response count", "response size", "request content"]
    assert first["time spent"] == "400ms" and first["response type"] == "/etcdserverpb.KV/Range"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", first["start time"])
    assert (first["request count"], first["request size"], first["response count"]) == (0, 5, 1)
    assert lines[3][1]["response count"] == 0 and lines[3][1]["response size"] == 0  # a failed call: no response


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (1e-9, "1ns"), (999e-9, "999ns"), (1.5e-6, "1.5µs"), (0.000955337, "955.337µs"),
    (0.3, "300ms"), (0.001231782, "1.231782ms"), (1.0, "1s"), (61.5, "1m1.5s"), (3723.0, "1h2m3s"),
])
def test_time_spent_is_a_go_duration(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text


def test_the_threshold_is_the_configs() -> None:
    assert RequestStats.of(SimpleNamespace(warn_request_s=lambda: 1e-9)).warn_s == 1e-9
    assert RequestStats.of(None).warn_s == 0.3  # (a member without a config: etcd's default)


# -- real members --------------------------------------------------------------------------

SECRETS = ("the-fast-path-secret", "the-aiohttp-path-secret")


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, LocalCluster]]:
    base = tmp_path_factory.mktemp("request-stats")
    clusters = {"slow": LocalCluster(1, base / "slow", extra_args=["--warning-unary-request-duration", "1ns"]),
                "default": LocalCluster(1, base / "default")}
    try:
        for cluster in clusters.values():
            cluster.start(timeout_s=90)
            cluster.wait_leader(60)
        for cluster in clusters.values():
            _requests(cluster.url("m0"))
        yield clusters
    finally:
        for cluster in clusters.values():
            cluster.stop()


def _requests(url: str) -> None:
    """The same calls on each member: a put and a range on the fast path, a put through
    aiohttp (the emit-defaults header hands the connection over), a lease grant and a
    keepalive stream, a maintenance status, and /health and /metrics."""
    assert post(url, "/v3/kv/put", {"key": _b("rs-fast"), "value": _b(SECRETS[0])})[0] == 200
    code, body = post(url, "/v3/kv/range", {"key": _b("rs-fast")})
    assert code == 200 and body["count"] == "1", body
    code, body = post(url, "/v3/kv/put", {"key": _b("rs-aiohttp"), "value": _b(SECRETS[1])},
                      headers={"Kvraft-Emit-Defaults": "false"})
    assert code == 200, body
    code, grant = post(url, "/v3/lease/grant", {"TTL": 60})
    assert code == 200, grant
    assert post(url, "/v3/lease/keepalive", {"ID": grant["ID"]})[0] == 200
    assert post(url, "/v3/maintenance/status", {})[0] == 200
    host, port = url.removeprefix("http://").split(":")
    for path in ("/health", "/metrics", "/version"):
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            conn.request("GET", path)
            assert conn.getresponse().status == 200
        finally:
            conn.close()


def _lines(cluster: LocalCluster) -> tuple[str, list[dict[str, Any]]]:
    text = cluster.members["m0"].log_path.read_text()
    return text, [line for line in (json.loads(raw) for raw in text.splitlines() if raw.startswith("{"))
                  if line["msg"] == "request stats"]


def test_every_unary_call_is_logged_once_when_every_call_is_slow(members: dict[str, LocalCluster]) -> None:
    deadline = time.monotonic() + 10
    while True:  # (the last call's line is written after its answer)
        text, lines = _lines(members["slow"])
        if any(line["response type"] == "/etcdserverpb.Maintenance/Status" for line in lines) \
                or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    for secret in SECRETS:
        assert secret not in text and _b(secret) not in text
    assert all(line["level"] == "warn" and line["logger"] == "kvraft.api.requests" for line in lines), lines
    assert all(line["remote"].startswith("127.0.0.1:") for line in lines), lines

    def only(content: str) -> dict[str, Any]:
        found = [line for line in lines if line["request content"] == content]
        assert len(found) == 1, (content, lines)
        return found[0]

    put = only(f'key:"rs-fast" value_size:{len(SECRETS[0])} ')  # the fast path's
    assert put["response type"] == "/etcdserverpb.KV/Put" and put["request count"] == 1
    assert put["request size"] == 2 + len("rs-fast") + 2 + len(SECRETS[0])
    assert parse_go_duration_s(put["time spent"]) > 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", put["start time"])
    ranged = only('key:"rs-fast" ')
    assert ranged["response type"] == "/etcdserverpb.KV/Range" and ranged["response count"] == 1
    assert ranged["response size"] > len(SECRETS[0])  # (the answer holds the value; the line only its size)
    aiohttp_put = only(f'key:"rs-aiohttp" value_size:{len(SECRETS[1])} ')  # aiohttp's
    assert aiohttp_put["response type"] == "/etcdserverpb.KV/Put"
    types = [line["response type"] for line in lines]
    assert types.count("/etcdserverpb.Lease/LeaseGrant") == 1, types
    assert "/etcdserverpb.Maintenance/Status" in types, types  # (LocalCluster's own probes ask for it too)
    for line in lines:
        if not line["response type"].startswith("/etcdserverpb.KV/"):  # etcd's lines for the other calls
            assert (line["request count"], line["request size"], line["request content"]) == (-1, -1, ""), line
    assert not [t for t in types if "KeepAlive" in t or "Watch" in t], types  # streams are not unary calls


def test_the_default_threshold_logs_none_of_the_same_calls(members: dict[str, LocalCluster]) -> None:
    _text, lines = _lines(members["default"])
    # (a call that really took over 300ms on a busy machine is etcd's warning all the same)
    assert [line for line in lines if parse_go_duration_s(line["time spent"]) <= 0.3] == [], lines
