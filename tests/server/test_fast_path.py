"""The fast path for the hot KV routes (``kvraft.server.api.fast``): same answers as the
aiohttp routes, keep-alive and pipelining, hand-over of a connection to aiohttp, and the
msgpack ``kv/batch`` route. One real member process on 127.0.0.1."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import msgpack
import pytest

from kvraft.server.local import LocalCluster
from tests.server.conftest import FAST_FLAGS, start_cluster
from tests.server.helpers import b64


@pytest.fixture(scope="module")
def member(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    cluster: LocalCluster = start_cluster(tmp_path_factory.mktemp("fast"), size=1, extra=FAST_FLAGS)
    try:
        cluster.wait_leader(60)
        url = urlsplit(cluster.url(next(iter(cluster.members))))
        assert url.hostname is not None and url.port is not None
        yield url.hostname, url.port
    finally:
        cluster.stop()


def _request(path: str, body: bytes, *, version: str = "1.1", ctype: str = "application/json",
             extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/{version}\r\nHost: x\r\nContent-Type: {ctype}\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


def _read_responses(sock: socket.socket, n: int) -> list[tuple[int, dict[str, str], bytes]]:
    """Read ``n`` responses (Content-Length framed; or up to EOF without one)."""
    buf, out = b"", []
    sock.settimeout(30)
    while len(out) < n:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            lines = buf[:end].decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
            status = int(lines[0].split(" ")[1])
            length = int(headers.get("content-length", "-1"))
            if length >= 0 and len(buf) >= end + 4 + length:
                out.append((status, headers, buf[end + 4 : end + 4 + length]))
                buf = buf[end + 4 + length :]
                continue
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed after {len(out)} of {n} responses: {buf[:200]!r}")
        buf += chunk
    return out


def _exchange(addr: tuple[str, int], raw: bytes, n: int = 1) -> list[tuple[int, dict[str, str], bytes]]:
    with socket.create_connection(addr, timeout=30) as sock:
        sock.sendall(raw)
        return _read_responses(sock, n)


def _strip(doc: dict[str, Any]) -> dict[str, Any]:
    doc = dict(doc)
    doc.pop("header", None)
    return doc


def test_pipelined_requests_are_answered_in_order(member: tuple[str, int]) -> None:
    raws = [_request("/v3/kv/put", json.dumps({"key": b64(f"p{i}"), "value": b64(f"v{i}")}).encode()) for i in range(5)]
    raws.append(_request("/v3/kv/range", json.dumps({"key": b64("p"), "range_end": b64("q")}).encode()))
    answers = _exchange(member, b"".join(raws), 6)
    assert [status for status, _, _ in answers] == [200] * 6
    revisions = [int(json.loads(body)["header"]["revision"]) for _, _, body in answers[:5]]
    assert revisions == sorted(revisions) and len(set(revisions)) == 5
    kvs = json.loads(answers[5][2])["kvs"]
    assert [kv["key"] for kv in kvs] == [b64(f"p{i}") for i in range(5)]
    status, headers, _ = answers[0]
    assert headers["content-type"] == "application/json"
    assert headers["access-control-allow-origin"] == "*"
    assert "date" in headers


@pytest.mark.parametrize(
    ("path", "doc"),
    [
        ("/v3/kv/range", {"key": b64("p0")}),
        ("/v3beta/kv/range", {"key": b64("p"), "range_end": b64("q"), "limit": "2", "count_only": True}),
        ("/v3/kv/range", {"key": 5}),  # wrong type: etcd's error
        ("/v3/kv/put", {"key": ""}),  # empty key: etcd's error
        ("/v3/kv/txn", {"compare": [{"key": b64("p0"), "target": "VALUE", "value": b64("v0")}],
                        "success": [{"request_range": {"key": b64("p1")}}]}),
        ("/v3/kv/deleterange", {"key": b64("nothing-here")}),
    ],
)
def test_same_answers_as_the_aiohttp_routes(member: tuple[str, int], path: str, doc: dict[str, Any]) -> None:
    body = json.dumps(doc).encode()
    (fast,) = _exchange(member, _request(path, body))
    # HTTP/1.0 is never taken by the fast path: aiohttp answers it
    (slow,) = _exchange(member, _request(path, body, version="1.0"))
    assert fast[0] == slow[0]
    assert _strip(json.loads(fast[2])) == _strip(json.loads(slow[2]))
    for name in ("content-type", "access-control-allow-origin", "access-control-allow-headers"):
        assert fast[1][name] == slow[1][name]


@pytest.mark.parametrize(
    ("body", "ctype"),
    [
        (b'{"key": "cHV0MQ==", "value": "dg=="}', "application/json"),  # plain: the template path
        (b'{"key": "cHV0MQ=="}', "application/json"),
        (b'{"key": "cHV0MQ", "value": "dg=="}', "application/json"),  # bad base64
        (b'{"key": "cHV0MQ==", "value": null}', "application/json"),
        (b'{"key": "cHV0MQ==", "value": "dg==", "prev_kv": true}', "application/json"),
        (b'{"key": "", "value": "dg=="}', "application/json"),
        (b'{"key": 5}', "application/json"),
        (b'["key"]', "application/json"),
        ('{"key": "cHV0MQ=="}'.encode("utf-16"), "application/json"),
        (b"", "application/json"),
        (msgpack.packb({"key": b"put1", "value": b"v"}), "application/x-msgpack"),
        (msgpack.packb({"key": "put1", "value": b"v"}), "application/x-msgpack"),
        (msgpack.packb({"key": b"put1", "value": b"v", "lease": 0}), "application/x-msgpack"),
        (b"\xc1", "application/x-msgpack"),
    ],
)
def test_put_bodies_answer_as_the_aiohttp_route(member: tuple[str, int], body: bytes, ctype: str) -> None:
    """kv/put on the fast path is decoded and answered without a task (plain puts without
    the schema walk, the answer from a template): the same answers as aiohttp's route,
    header included (its revision aside)."""
    (fast,) = _exchange(member, _request("/v3/kv/put", body, ctype=ctype))
    (slow,) = _exchange(member, _request("/v3/kv/put", body, ctype=ctype, version="1.0"))
    loads = json.loads if ctype == "application/json" else (lambda raw: msgpack.unpackb(raw, raw=False))
    fast_doc, slow_doc = loads(fast[2]), loads(slow[2])
    assert fast[0] == slow[0] and fast[1]["content-type"] == slow[1]["content-type"]
    if fast[0] != 200:
        assert fast_doc == slow_doc
        return
    fast_prev, slow_prev = fast_doc.pop("prev_kv", None), slow_doc.pop("prev_kv", None)
    if fast_prev is not None or slow_prev is not None:  # (the slow put's prev is the fast put)
        assert fast_prev is not None and slow_prev is not None and fast_prev["key"] == slow_prev["key"]
        assert int(slow_prev["mod_revision"]) == int(fast_doc["header"]["revision"])
    assert _strip(fast_doc) == _strip(slow_doc)
    fast_header, slow_header = fast_doc["header"], slow_doc["header"]
    assert list(fast_header) == list(slow_header) == ["cluster_id", "member_id", "revision", "raft_term"]
    assert int(slow_header["revision"]) == int(fast_header["revision"]) + 1
    assert {k: v for k, v in fast_header.items() if k != "revision"} == {
        k: v for k, v in slow_header.items() if k != "revision"}


_RANGE_BODIES = [
    (b'{"key": "cDA="}', "application/json"),  # plain: decoded without the schema walk
    (b'{"key": "cA==", "range_end": "cQ==", "limit": 2, "keys_only": true}', "application/json"),
    (b'{"key": "cA==", "range_end": "cQ==", "count_only": true, "serializable": true}', "application/json"),
    (b'{"key": "cA==", "range_end": "", "limit": 0, "serializable": false}', "application/json"),
    (b'{"key": "cA==", "range_end": "cQ==", "limit": "2"}', "application/json"),  # a string number
    (b'{"key": "cA==", "limit": -1}', "application/json"),
    (b'{"key": "cA==", "limit": 1.0}', "application/json"),
    (b'{"key": "cA==", "limit": 9223372036854775808}', "application/json"),  # over int64
    (b'{"key": "cA==", "serializable": 1}', "application/json"),
    (b'{"key": "cA==", "serializable": null}', "application/json"),
    (b'{"key": "cA==", "sort_order": "DESCEND", "range_end": "cQ=="}', "application/json"),
    (b'{"key": "cA==", "revision": 1}', "application/json"),
    (b'{"key": "cDA", "range_end": "cQ=="}', "application/json"),  # bad base64
    (b'{"key": "cA==", "range_end": "c@=="}', "application/json"),
    (b'{"key": "c\\u00e9A="}', "application/json"),  # non-ASCII in base64 text
    (b'{"key": ""}', "application/json"),  # empty key: etcd's error
    (b'{"key": 5}', "application/json"),
    (b'{"range_end": "cQ=="}', "application/json"),
    (b'["key"]', "application/json"),
    (b'{"key": "cA=="} x', "application/json"),
    (b'{"key": ', "application/json"),
    (b"", "application/json"),
    ('{"key": "cDA="}'.encode("utf-16"), "application/json"),
    (msgpack.packb({"key": b"p", "range_end": b"q", "limit": 3}), "application/x-msgpack"),
    (msgpack.packb({"key": b"p0"}), "application/x-msgpack"),
    (msgpack.packb({"key": "p0"}), "application/x-msgpack"),  # str for bytes: UTF-8
    (msgpack.packb({"key": b"p", "range_end": b"q", "limit": True}), "application/x-msgpack"),
    (msgpack.packb({"key": b""}), "application/x-msgpack"),
    (b"\xc1", "application/x-msgpack"),
]


@pytest.mark.parametrize(("body", "ctype"), _RANGE_BODIES)
def test_the_range_decoder_is_decode_bodys(body: bytes, ctype: str) -> None:
    """``_decode_range`` builds plain ranges itself: the same op, or the same error, as the
    schema walk."""
    from kvraft.apply.errors import InvalidArgument
    from kvraft.server.api import schemas
    from kvraft.server.api.codec import JSON_OUT, MSGPACK_OUT, decode_body
    from kvraft.server.api.fast import _decode_range

    out = MSGPACK_OUT if ctype == "application/x-msgpack" else JSON_OUT
    try:
        want: Any = decode_body(body, ctype, schemas.RANGE)
    except InvalidArgument as exc:
        with pytest.raises(InvalidArgument) as got:
            _decode_range(body, out)
        assert got.value.message == exc.message
        return
    assert _decode_range(body, out) == want


@pytest.mark.parametrize(("body", "ctype"), _RANGE_BODIES)
def test_range_bodies_answer_as_the_aiohttp_route_byte_for_byte(member: tuple[str, int], body: bytes,
                                                                 ctype: str) -> None:
    """kv/range on the fast path (its own decoder, the JSON answer written directly): the
    very bytes of aiohttp's route (a range changes no revision, so nothing differs)."""
    setup = [_request("/v3/kv/put", json.dumps({"key": b64(f"p{i}"), "value": b64(f"v{i}")}).encode())
             for i in range(3)]
    _exchange(member, b"".join(setup), 3)
    (fast,) = _exchange(member, _request("/v3/kv/range", body, ctype=ctype))
    (slow,) = _exchange(member, _request("/v3/kv/range", body, ctype=ctype, version="1.0"))
    assert (fast[0], fast[1]["content-type"], fast[2]) == (slow[0], slow[1]["content-type"], slow[2])


def test_thousands_of_pipelined_bad_puts_are_each_answered(member: tuple[str, int]) -> None:
    """A put refused before proposing is answered a loop turn later: answered at once, each
    answer started the next pipelined request from inside the previous one (a recursion
    per request: RecursionError after a few hundred, and the connection dropped)."""
    n = 3000
    with socket.create_connection(member, timeout=60) as sock:
        sock.sendall(_request("/v3/kv/put", b'{"key": ""}') * n + _request("/v3/kv/put", b'{"key": "b2s="}'))
        answers = _read_responses(sock, n + 1)
    assert [status for status, _, _ in answers] == [400] * n + [200]


def test_bad_json_answers_etcds_error(member: tuple[str, int]) -> None:
    (fast,) = _exchange(member, _request("/v3/kv/put", b'{"key": '))
    (slow,) = _exchange(member, _request("/v3/kv/put", b'{"key": ', version="1.0"))
    assert fast[0] == slow[0] == 400
    assert json.loads(fast[2]) == json.loads(slow[2])
    assert json.loads(fast[2])["code"] == 3


def test_other_routes_hand_the_connection_to_aiohttp(member: tuple[str, int]) -> None:
    raw = (
        _request("/v3/kv/put", json.dumps({"key": b64("h"), "value": b64("1")}).encode())
        + b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n"
        + _request("/v3/kv/range", json.dumps({"key": b64("h")}).encode())
        + _request("/v3/maintenance/status", b"{}")
    )
    answers = _exchange(member, raw, 4)
    assert [status for status, _, _ in answers] == [200] * 4
    assert "etcdserver" in json.loads(answers[1][2])
    assert json.loads(answers[2][2])["kvs"][0]["value"] == b64("1")
    assert "version" in json.loads(answers[3][2])


def test_a_chunked_body_is_left_to_aiohttp(member: tuple[str, int]) -> None:
    body = json.dumps({"key": b64("chunked"), "value": b64("yes")}).encode()
    raw = (
        b"POST /v3/kv/put HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"
    )
    ((status, _, answer),) = _exchange(member, raw)
    assert status == 200 and "revision" in json.loads(answer)["header"]


def test_connection_close_is_honoured(member: tuple[str, int]) -> None:
    with socket.create_connection(member, timeout=30) as sock:
        sock.sendall(_request("/v3/kv/range", json.dumps({"key": b64("h")}).encode(), extra="Connection: close\r\n"))
        ((status, headers, _),) = _read_responses(sock, 1)
        assert status == 200 and headers["connection"] == "close"
        sock.settimeout(30)
        assert sock.recv(100) == b""


def _batch(member: tuple[str, int], ops: Any, ctype: str = "application/x-msgpack") -> tuple[int, Any]:
    body = msgpack.packb(ops, use_bin_type=True)
    ((status, headers, answer),) = _exchange(member, _request("/v3/kv/batch", body, ctype=ctype))
    if headers["content-type"] == "application/json":
        return status, json.loads(answer)
    return status, msgpack.unpackb(answer, raw=False)


def test_msgpack_batch_applies_every_op(member: tuple[str, int]) -> None:
    ops = [["put", {"key": b"b%03d" % i, "value": b"x" * 100}] for i in range(200)]
    ops.append(["range", {"key": b"b", "range_end": b"c", "count_only": True}])
    ops.append(["put", {"key": b""}])  # refused alone: the others still apply
    status, answers = _batch(member, ops)
    assert status == 200 and len(answers) == 202
    assert all(code == 0 for code, _ in answers[:201])
    revisions = {doc["header"]["revision"] for _, doc in answers[:200]}
    assert len(revisions) == 200  # one revision per put
    assert answers[202 - 1][0] == 3 and "key is not provided" in answers[201][1]["message"]
    status, answers = _batch(member, [["range", {"key": b"b", "range_end": b"c", "count_only": True}]])
    assert answers[0][1]["count"] == 200


def _raft_index(member: tuple[str, int]) -> int:
    ((status, _, answer),) = _exchange(member, _request("/v3/maintenance/status", b"{}"))
    assert status == 200
    return int(json.loads(answer)["raftIndex"])


def test_the_puts_of_a_batch_are_one_log_entry(member: tuple[str, int]) -> None:
    """(One entry per put before: a 100-put batch cost 100 proposals, waiters and entries.)"""
    before = _raft_index(member)
    status, answers = _batch(member, [["put", {"key": b"one%03d" % i, "value": b"v"}] for i in range(300)])
    assert status == 200 and [code for code, _ in answers] == [0] * 300
    revisions = [doc["header"]["revision"] for _, doc in answers]
    assert revisions == list(range(revisions[0], revisions[0] + 300))  # in order, one each
    assert _raft_index(member) - before == 1


def test_plain_and_decoded_puts_of_a_batch_keep_the_batch_order(member: tuple[str, int]) -> None:
    """Plain puts (binary key and value only) skip the schema walk; the others (more
    fields, a text key) are decoded; all are applied in the batch's order."""
    ops: list[Any] = []
    for i in range(20):
        doc: dict[str, Any] = {"key": b"ord%02d" % i, "value": b"v"}
        if i % 3 == 1:
            doc["lease"] = 0
        elif i % 3 == 2:
            doc = {"key": f"ord{i:02d}", "value": b"v"}
        ops.append(["put", doc])
    status, answers = _batch(member, ops)
    assert status == 200 and [code for code, _ in answers] == [0] * 20
    revisions = [doc["header"]["revision"] for _, doc in answers]
    assert revisions == list(range(revisions[0], revisions[0] + 20))


def test_a_batch_with_a_malformed_op_applies_nothing(member: tuple[str, int]) -> None:
    status, doc = _batch(member, [["put", {"key": b"never", "value": b"1"}], ["put", {"key": 5}]])
    assert status == 400 and doc["code"] == 3
    status, answers = _batch(member, [["range", {"key": b"never"}]])
    assert "kvs" not in answers[0][1]


def test_a_batch_over_max_request_bytes_is_split_and_a_too_large_put_fails_alone(member: tuple[str, int]) -> None:
    """The default --max-request-bytes is 1.5 MiB (the body may be larger, as etcd's
    gateway allows for base64): 12 puts of 200 KB take two entries; a 1.6 MB put is
    refused alone, as kv/put refuses it, and its neighbours apply."""
    before = _raft_index(member)
    status, answers = _batch(member, [["put", {"key": b"big%02d" % i, "value": b"x" * 200_000}] for i in range(12)])
    assert status == 200 and [code for code, _ in answers] == [0] * 12
    assert _raft_index(member) - before == 2
    ops = [["put", {"key": b"big", "value": b"1"}], ["put", {"key": b"huge", "value": b"x" * 1_600_000}],
           ["put", {"key": b"bigger", "value": b"2"}]]
    status, answers = _batch(member, ops)
    assert status == 200 and [code for code, _ in answers] == [0, 3, 0]
    assert answers[1][1]["message"] == "etcdserver: request is too large"
    status, answers = _batch(member, [["range", {"key": b"big", "range_end": b"bih", "count_only": True}]])
    assert answers[0][1]["count"] == 14


def test_batch_answers_match_the_put_route(member: tuple[str, int]) -> None:
    """A put's answer in a batch is the msgpack kv/put answer (header fields, prev_kv)."""
    status, answers = _batch(member, [["put", {"key": b"same", "value": b"1"}],
                                      ["put", {"key": b"same", "value": b"2", "prev_kv": True}]])
    assert status == 200
    body = msgpack.packb({"key": b"same", "value": b"3", "prev_kv": True}, use_bin_type=True)
    ((status, _, raw),) = _exchange(member, _request("/v3/kv/put", body, ctype="application/x-msgpack"))
    single = msgpack.unpackb(raw, raw=False)
    assert set(answers[0][1]) == {"header"}
    assert set(answers[0][1]["header"]) == set(single["header"]) == {"cluster_id", "member_id", "revision", "raft_term"}
    assert answers[1][1]["prev_kv"]["value"] == b"1" and single["prev_kv"]["value"] == b"2"
    assert single["header"]["revision"] == answers[1][1]["header"]["revision"] + 1


@pytest.mark.parametrize(
    ("ops", "ctype"),
    [
        ([["put", {"key": b"k"}]], "application/json"),  # msgpack only
        ({"not": "a list"}, "application/x-msgpack"),
        ([["compaction", {}]], "application/x-msgpack"),
        ([["put"]], "application/x-msgpack"),
    ],
)
def test_bad_batches_are_refused_whole(member: tuple[str, int], ops: Any, ctype: str) -> None:
    status, doc = _batch(member, ops, ctype)
    assert status == 400 and doc["code"] == 3


def test_a_client_pipelining_megabytes_is_throttled_not_dropped(member: tuple[str, int]) -> None:
    """More pipelined bytes than one request may hold (the protocol pauses reading until
    it catches up): every request is still answered, in order."""
    value = b64(b"x" * 100_000)
    raws = [_request("/v3/kv/put", json.dumps({"key": b64(f"big{i}"), "value": value}).encode()) for i in range(40)]
    assert sum(map(len, raws)) > 4 << 20
    with socket.create_connection(member, timeout=60) as sock:
        sock.sendall(b"".join(raws))
        answers = _read_responses(sock, 40)
    assert [status for status, _, _ in answers] == [200] * 40
    revisions = [int(json.loads(body)["header"]["revision"]) for _, _, body in answers]
    assert revisions == sorted(revisions)


def _chunked(path: str, body: bytes, piece: int = 65536) -> bytes:
    chunks = b"".join(b"%x\r\n" % len(body[i:i + piece]) + body[i:i + piece] + b"\r\n"
                      for i in range(0, len(body), piece))
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n").encode() + chunks + b"0\r\n\r\n"


@pytest.mark.parametrize("path", ["/v3/kv/put", "/v3/lease/keepalive"])
def test_a_chunked_body_over_the_limit_is_etcds_resource_exhausted(member: tuple[str, int], path: str) -> None:
    """As a body with a Content-Length over the limit: 429, code 8, the body's size (it was a
    500 for a chunked body: aiohttp's 413 carries no size)."""
    body = json.dumps({"key": b64("big"), "value": b64("x" * (3 << 20))}).encode()
    for raw in (_request(path, body), _chunked(path, body)):
        ((status, _, answer),) = _exchange(member, raw)
        doc = json.loads(answer)
        assert (status, doc["code"]) == (429, 8), doc
        assert doc["message"].startswith(f"grpc: received message larger than max ({len(body)} vs. ")
    ((status, _, answer),) = _exchange(member, _chunked("/v3/kv/put", json.dumps(
        {"key": b64("small"), "value": b64("y" * 200_000)}).encode(), piece=1000))
    assert status == 200 and "revision" in json.loads(answer)["header"], "a chunked body under the limit is whole"


@pytest.mark.parametrize("framing", [
    "Content-Length: +{n}",
    "Content-Length : {n}",
    " Content-Length: {n}",
    "Content-Length: {n}\r\nContent-Length: 0",
    "Content-Length: 0\r\nContent-Length: {n}",
    "Content-Length: {u}",
])  # fmt: skip
def test_a_body_length_http_does_not_allow_is_refused_not_served(member: tuple[str, int], framing: str) -> None:
    """The fast path read Content-Length with Python's int() and took the last one, a name
    with spaces around it too: '+29', '2_9', two different lengths, 'Content-Length :' were
    served (a put written), where aiohttp and Go refuse them (400). Two readers of one
    stream that disagree on where a body ends let a request be smuggled past a proxy."""
    key = f"smuggled-{abs(hash(framing))}"
    body = json.dumps({"key": b64(key), "value": b64("v")}).encode()
    n = len(body)
    head = framing.format(n=n, u=f"{str(n)[0]}_{str(n)[1:]}")
    raw = f"POST /v3/kv/put HTTP/1.1\r\nHost: x\r\n{head}\r\n\r\n".encode() + body
    with socket.create_connection(member, timeout=30) as sock:
        sock.sendall(raw)
        sock.settimeout(30)
        answer = sock.recv(65536)
    assert answer.split(b"\r\n", 1)[0].split(b" ")[1] == b"400", answer
    ((status, _, found),) = _exchange(member, _request("/v3/kv/range", json.dumps({"key": b64(key)}).encode()))
    assert status == 200 and "kvs" not in json.loads(found)
