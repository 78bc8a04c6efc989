"""etcd's "request stats" log line for slow client requests (``--warning-unary-request-duration``).

What etcd does (``server/etcdserver/api/v3rpc/interceptor.go``, ``logUnaryRequestStats``): a
gRPC interceptor times every unary call (not the Watch, LeaseKeepAlive, Snapshot or Observe
streams). When the call took longer than ``--warning-unary-request-duration`` (300ms by
default) it logs a WARN line ``request stats``; when the logger is enabled for debug, it logs
every call's line at DEBUG instead (and then no WARN). The fields:

- ``start time``, ``time spent`` (a Go duration, ``1.234567ms``), ``remote`` (the peer's
  ``ip:port``), ``response type`` (the gRPC method, ``/etcdserverpb.KV/Range``);
- ``request count``, ``request size``, ``response count``, ``response size`` and
  ``request content``: filled for the four KV calls only. Range: 0, the request's protobuf
  size, the response's ``count``; Put: 1; DeleteRange: 0 and the response's ``deleted``;
  Txn: the number and total size of the ops of the branch that ran (``success`` when
  ``succeeded``). Every other call (LeaseGrant, the Auth and Cluster calls, ...) logs -1 for
  the four numbers and an empty content, so no password is ever logged. A call that failed
  has no response: 0 for the response's numbers (a failed Txn logs 0s and no content);
- ``request content``: the request in protobuf's compact text form, with every value
  replaced by its size (``key:"foo" value_size:3 ``; a Txn's puts and value compares the
  same, ``compare:<...> success:<request_put:<...>> failure:<...>``).

What kvraft does: the same line, message and fields, for every unary gateway call that
``grpc_stats`` counts under an etcd method, on both ways a request is served: the fast path
(``fast.FastProtocol._respond``) and aiohttp's ``_errors`` middleware (``app.py``). The start
time is the one ``GrpcStats.start`` reads; ``GrpcStats.finish`` returns the time spent (one
clock read each), and the only other cost of a request that is not slow is one comparison
with ``RequestStats.threshold`` (the warning threshold, or -1 when the logger
``kvraft.api.requests`` is enabled for DEBUG when the member starts: etcd's
``etcdserver/api/v3rpc`` package level covers it). Everything else (decoding the request
again from its body, the response from its payload, the sizes and the content) is done only
for a line that is written. Differences: ``remote`` is the client's own address (etcd's
gateway calls its gRPC server over loopback, so etcd logs the gateway's); a KV request whose
body does not decode is not logged (etcd's gateway never makes that call); a request whose
body aiohttp did not keep (a chunked body, or one never read because the call failed before)
logs -1 for its size and an empty content; kvraft's own ``/v3/kv/batch`` and
``/v3/kvraft/kv/rangestream`` have no etcd method and are not logged.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import msgpack
from aiohttp import web

from kvraft.apply.ops import Compare, DeleteRangeOp, PutOp, RangeOp, TxnOp
from kvraft.server.api import schemas
from kvraft.server.api.codec import MSGPACK, Message, decode_body
from kvraft.server.api.grpc_stats import Method
from kvraft.server.etcd36 import DEFAULT_WARNING_UNARY_REQUEST_S

__all__ = ["REQUEST_STATS", "RequestStats", "go_duration", "request_content", "stats_fields"]

log = logging.getLogger("kvraft.api.requests")

MESSAGE = "request stats"

_KV = "etcdserverpb.KV"
_REQUESTS: dict[str, Message] = {
    "Range": schemas.RANGE, "Put": schemas.PUT, "DeleteRange": schemas.DELETE_RANGE, "Txn": schemas.TXN,
}


class RequestStats:
    """One member's "request stats" logging: ``threshold`` for the hot path's comparison
    (``elapsed > threshold``), ``log`` for a line."""

    __slots__ = ("threshold", "warn_s")

    def __init__(self, warn_s: float = DEFAULT_WARNING_UNARY_REQUEST_S, debug: bool | None = None) -> None:
        self.warn_s = warn_s
        if debug is None:
            debug = log.isEnabledFor(logging.DEBUG)
        self.threshold = -1.0 if debug else warn_s
        """Seconds a request must exceed to be logged: every request's at DEBUG."""

    @classmethod
    def of(cls, config: Any) -> RequestStats:
        """From a member's config (``Config.warn_request_s``; etcd's 300ms without one)."""
        warn = getattr(config, "warn_request_s", None)
        return cls(warn() if callable(warn) else DEFAULT_WARNING_UNARY_REQUEST_S)

    def log(self, method: Method, elapsed: float, peer: Any, content_type: str, body: bytes | None,
            code: int, payload: bytes) -> None:
        """Log one request that took ``elapsed`` seconds (already known to exceed
        ``threshold``): ``peer`` its transport's ``peername``, ``body`` its body (None when
        not known), ``code`` the answer's gRPC code and ``payload`` the answer's body."""
        if method[0] != "unary":
            return
        debug = self.threshold < 0 and log.isEnabledFor(logging.DEBUG)
        if not debug and not elapsed > self.warn_s:
            return
        try:  # (a line that cannot be built must not cost the request its answer)
            fields = stats_fields(method, content_type, body, None if code else payload)
        except Exception:
            log.warning("could not build the request stats of %s", method[2], exc_info=True)
            return
        if fields is None:
            return
        started = datetime.fromtimestamp(time.time() - elapsed, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        count, size, response_count, response_size, content = fields
        log.log(logging.DEBUG if debug else logging.WARNING, MESSAGE, extra={"fields": {
            "start time": started, "time spent": go_duration(elapsed), "remote": _remote(peer),
            "response type": f"/{method[1]}/{method[2]}", "request count": count, "request size": size,
            "response count": response_count, "response size": response_size, "request content": content}})

    async def log_aiohttp(self, request: web.Request, method: Method, elapsed: float,
                          response: web.StreamResponse, code: int) -> None:
        """``log`` for a request aiohttp served (its body as the handler read it)."""
        body: bytes | None = None
        if method[2] in _REQUESTS and method[1] == _KV and request.content_length is not None and not request.can_read_body:
            try:
                body = await request.read()  # (the handler's read, kept by aiohttp)
            except Exception:  # (the client went away: nothing left to log)
                body = None
        raw = response.body if isinstance(response, web.Response) else None
        transport = request.transport
        self.log(method, elapsed, transport.get_extra_info("peername") if transport is not None else None,
                 MSGPACK if request.content_type == MSGPACK else "application/json", body, code,
                 raw if isinstance(raw, bytes) else b"")


REQUEST_STATS = web.AppKey("kvraft.request_stats", RequestStats)
"""The app's ``RequestStats`` (``make_app``)."""


# -- the fields -----------------------------------------------------------------------------

Fields = tuple[int, int, int, int, str]
"""request count, request size, response count, response size, request content."""


def stats_fields(method: Method, content_type: str, body: bytes | None, payload: bytes | None) -> Fields | None:
    """The numbers and the content of one call's line, as etcd's ``logUnaryRequestStats``:
    ``body`` the request's body (None: not known), ``payload`` the answer's body (None: the
    call failed). None when a KV request's body does not decode (no call was made)."""
    schema = _REQUESTS.get(method[2]) if method[1] == _KV else None
    if schema is None:
        return -1, -1, -1, -1, ""
    op: Any = None
    if body is not None:
        try:
            op = decode_body(body, content_type, schema)
        except Exception:
            return None
    response = _load(payload, content_type) if payload is not None else None
    packed = content_type == MSGPACK
    name = method[2]
    if name == "Txn":  # (the request's numbers are those of the branch that ran)
        if response is None:
            return 0, 0, 0, 0, ""
        response_size = _doc_size(response, _TXN_RESPONSE, packed)
        if op is None:
            return -1, -1, 0, response_size, ""
        branch = op.success if response.get("succeeded") is True else op.failure
        return len(branch), sum(_request_op_size(item) for item in branch), 0, response_size, _txn_text(op)
    count = 1 if name == "Put" else 0
    size = -1 if op is None else _request_size(op)
    content = "" if op is None else request_content(op)
    if response is None:
        return count, size, 0, 0, content
    spec = _RANGE_RESPONSE if name == "Range" else _PUT_RESPONSE if name == "Put" else _DELETE_RESPONSE
    answered = _int(response.get("count" if name == "Range" else "deleted")) if name != "Put" else 0
    return count, size, answered, _doc_size(response, spec, packed), content


def request_content(op: Any) -> str:
    """A KV request as etcd logs it: protobuf's compact text form (gogo's
    ``CompactTextString``: set fields in field order, each followed by a space, bytes
    C-quoted, enums by name) with values replaced by their size (``value_size``)."""
    if isinstance(op, RangeOp):
        return _text(_range_pairs(op))
    if isinstance(op, PutOp):
        return _put_text(op)
    if isinstance(op, DeleteRangeOp):
        return _text((("key", op.key), ("range_end", op.range_end), ("prev_kv", op.prev_kv)))
    if isinstance(op, TxnOp):
        return _txn_text(op)
    return ""


def go_duration(seconds: float) -> str:
    """Go's ``time.Duration.String`` (``1.5ms``, ``955.337µs``, ``2m3.5s``), as zap writes
    a duration field in etcd's logs."""
    nanos = round(seconds * 1e9)
    sign = "-" if nanos < 0 else ""
    nanos = abs(nanos)
    if nanos == 0:
        return "0s"
    if nanos < 1_000:
        return f"{sign}{nanos}ns"
    if nanos < 1_000_000:
        return f"{sign}{_trim(nanos, 1_000)}µs"
    if nanos < 1_000_000_000:
        return f"{sign}{_trim(nanos, 1_000_000)}ms"
    hours, rest = divmod(nanos, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    text = f"{_trim(rest, 1_000_000_000)}s"
    if hours:
        return f"{sign}{hours}h{minutes}m{text}"
    return f"{sign}{minutes}m{text}" if minutes else sign + text


def _trim(nanos: int, unit: int) -> str:
    whole, fraction = divmod(nanos, unit)
    digits = str(fraction).rjust(len(str(unit)) - 1, "0").rstrip("0")
    return f"{whole}.{digits}" if digits else str(whole)


def _remote(peer: Any) -> str:
    """``ip:port`` (``[ip]:port`` for IPv6), as Go's ``net.Addr.String``."""
    if isinstance(peer, tuple) and len(peer) >= 2:
        host, port = peer[0], peer[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return "No remote client info." if not peer else str(peer)


def _load(payload: bytes, content_type: str) -> dict[str, Any] | None:
    try:
        doc = msgpack.unpackb(payload, raw=False) if content_type == MSGPACK else json.loads(payload)
    except Exception:
        return None
    return doc if isinstance(doc, dict) else None


# -- compact text ---------------------------------------------------------------------------

_SORT_ORDER = {value: name for name, value in schemas.SORT_ORDER.values.items()}
_SORT_TARGET = {value: name for name, value in schemas.SORT_TARGET.values.items()}
_RESULT = {value: name for name, value in schemas.COMPARE_RESULT.values.items()}
_TARGET = {value: name for name, value in schemas.COMPARE_TARGET.values.items()}
_UNION = {0: ("version", 4), 1: ("create_revision", 5), 2: ("mod_revision", 6), 3: ("value", 7), 4: ("lease", 8)}
"""Compare's ``target_union`` by target: the field that is set, and its number."""

_ESCAPES = {ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t", ord('"'): '\\"', ord("\\"): "\\\\"}


def _quote(data: bytes) -> str:
    """Bytes as protobuf's text format writes them: printable ASCII as is, C escapes,
    octal for the rest."""
    out = ['"']
    for byte in data:
        escaped = _ESCAPES.get(byte)
        if escaped is not None:
            out.append(escaped)
        elif 0x20 <= byte < 0x7F:
            out.append(chr(byte))
        else:
            out.append(f"\\{byte:03o}")
    out.append('"')
    return "".join(out)


def _enum(names: dict[int, str], value: int) -> str | int:
    """An enum field for ``_text``: its name (its number when it has none); 0, the default,
    stays 0 and is left out as any zero value."""
    return names.get(value, str(value)) if value else 0


def _text(pairs: Iterable[tuple[str, Any]], always: frozenset[str] = frozenset()) -> str:
    """The fields that are set, in order (a str is an enum's name); ``always``: a oneof
    member, written even when zero."""
    out = []
    for name, value in pairs:
        if value is True:
            out.append(f"{name}:true ")
        elif isinstance(value, bytes):
            if value or name in always:
                out.append(f"{name}:{_quote(value)} ")
        elif isinstance(value, str) or isinstance(value, int) and value is not False and (value or name in always):
            out.append(f"{name}:{value} ")
    return "".join(out)


def _range_pairs(op: RangeOp) -> tuple[tuple[str, Any], ...]:
    return (("key", op.key), ("range_end", op.range_end), ("limit", op.limit), ("revision", op.revision),
            ("sort_order", _enum(_SORT_ORDER, op.sort_order)), ("sort_target", _enum(_SORT_TARGET, op.sort_target)),
            ("serializable", op.serializable), ("keys_only", op.keys_only), ("count_only", op.count_only),
            ("min_mod_revision", op.min_mod_revision), ("max_mod_revision", op.max_mod_revision),
            ("min_create_revision", op.min_create_revision), ("max_create_revision", op.max_create_revision))


def _put_text(op: PutOp) -> str:
    """etcd's ``loggablePutRequest``: the value as ``value_size``."""
    return _text((("key", op.key), ("value_size", len(op.value)), ("lease", op.lease), ("prev_kv", op.prev_kv),
                  ("ignore_value", op.ignore_value), ("ignore_lease", op.ignore_lease)))


def _compare_text(compare: Compare) -> str:
    """``Compare.String``, or etcd's ``loggableValueCompare`` (the value as ``value_size``)."""
    head = (("result", _enum(_RESULT, compare.result)), ("target", _enum(_TARGET, compare.target)),
            ("key", compare.key))
    union = _UNION.get(compare.target)
    if union is None:
        return _text((*head, ("range_end", compare.range_end)))
    if union[0] == "value":
        return _text((*head, ("value_size", len(compare.value)), ("range_end", compare.range_end)))
    field = union[0]
    return _text((*head, (field, getattr(compare, field)), ("range_end", compare.range_end)), frozenset((field,)))


def _request_op_text(op: Any) -> str:
    """etcd's ``requestOpStringer``: puts and txns redacted, the rest ``RequestOp.String``."""
    if isinstance(op, PutOp):
        return f"request_put:<{_put_text(op)}>"
    if isinstance(op, TxnOp):
        return f"request_txn:<{_txn_text(op)}>"
    if isinstance(op, RangeOp):
        return f"request_range:<{_text(_range_pairs(op))}> "
    if isinstance(op, DeleteRangeOp):
        return f"request_delete_range:<{request_content(op)}> "
    return ""


def _txn_text(op: TxnOp) -> str:
    """etcd's ``txnRequestStringer``."""
    return "compare:<{}> success:<{}> failure:<{}>".format(
        " ".join(_compare_text(c) for c in op.compare), " ".join(_request_op_text(s) for s in op.success),
        " ".join(_request_op_text(f) for f in op.failure))


# -- protobuf sizes -------------------------------------------------------------------------

def _varint(value: int) -> int:
    """A varint's length; a negative int64 (or enum) takes ten bytes."""
    if value < 0:
        return 10
    return max(1, (value.bit_length() + 6) // 7)


def _tag(number: int) -> int:
    return _varint(number << 3)


def _pairs_size(pairs: Iterable[tuple[int, Any]], always: int = 0) -> int:
    """The encoded size of scalar fields ``(number, value)``; ``always``: a oneof member's
    number (counted even when zero)."""
    size = 0
    for number, value in pairs:
        if isinstance(value, bytes):
            if value or number == always:
                size += _tag(number) + _varint(len(value)) + len(value)
        elif value is True:
            size += _tag(number) + 1
        elif isinstance(value, int) and value is not False and (value or number == always):
            size += _tag(number) + _varint(value)
    return size


def _embedded(number: int, size: int) -> int:
    return _tag(number) + _varint(size) + size


def _request_size(op: Any) -> int:
    """``Size()`` of a RangeRequest, PutRequest, DeleteRangeRequest or TxnRequest."""
    if isinstance(op, RangeOp):
        return _pairs_size((
            (1, op.key), (2, op.range_end), (3, op.limit), (4, op.revision), (5, op.sort_order), (6, op.sort_target),
            (7, op.serializable), (8, op.keys_only), (9, op.count_only), (10, op.min_mod_revision),
            (11, op.max_mod_revision), (12, op.min_create_revision), (13, op.max_create_revision)))
    if isinstance(op, PutOp):
        return _pairs_size(((1, op.key), (2, op.value), (3, op.lease), (4, op.prev_kv), (5, op.ignore_value),
                            (6, op.ignore_lease)))
    if isinstance(op, DeleteRangeOp):
        return _pairs_size(((1, op.key), (2, op.range_end), (3, op.prev_kv)))
    if isinstance(op, TxnOp):
        return (sum(_embedded(1, _compare_size(c)) for c in op.compare)
                + sum(_embedded(2, _request_op_size(s)) for s in op.success)
                + sum(_embedded(3, _request_op_size(f)) for f in op.failure))
    return 0


def _compare_size(compare: Compare) -> int:
    union = _UNION.get(compare.target)
    pairs = [(1, compare.result), (2, compare.target), (3, compare.key)]
    if union is not None:
        pairs.append((union[1], getattr(compare, union[0])))
    pairs.append((64, compare.range_end))
    return _pairs_size(pairs, always=union[1] if union is not None else 0)


_OP_NUMBERS = {RangeOp: 1, PutOp: 2, DeleteRangeOp: 3, TxnOp: 4}


def _request_op_size(op: Any) -> int:
    """``RequestOp.Size()``: the one request it holds (an empty one: 0)."""
    number = _OP_NUMBERS.get(type(op))
    return 0 if number is None else _embedded(number, _request_size(op))


# A response message: field name -> (number, kind, message); kinds: b bytes, i varint,
# ? bool, m message, r repeated message. Sizes are of the answer as decoded (JSON's base64
# and decimal strings, or msgpack's raw values).
_Spec = dict[str, tuple[int, str, Any]]
_HEADER: _Spec = {"cluster_id": (1, "i", None), "member_id": (2, "i", None), "revision": (3, "i", None),
                  "raft_term": (4, "i", None)}
_KEY_VALUE: _Spec = {"key": (1, "b", None), "create_revision": (2, "i", None), "mod_revision": (3, "i", None),
                     "version": (4, "i", None), "value": (5, "b", None), "lease": (6, "i", None)}
_RANGE_RESPONSE: _Spec = {"header": (1, "m", _HEADER), "kvs": (2, "r", _KEY_VALUE), "more": (3, "?", None),
                          "count": (4, "i", None)}
_PUT_RESPONSE: _Spec = {"header": (1, "m", _HEADER), "prev_kv": (2, "m", _KEY_VALUE)}
_DELETE_RESPONSE: _Spec = {"header": (1, "m", _HEADER), "deleted": (2, "i", None), "prev_kvs": (3, "r", _KEY_VALUE)}
_RESPONSE_OP: _Spec = {"response_range": (1, "m", _RANGE_RESPONSE), "response_put": (2, "m", _PUT_RESPONSE),
                       "response_delete_range": (3, "m", _DELETE_RESPONSE)}
_TXN_RESPONSE: _Spec = {"header": (1, "m", _HEADER), "succeeded": (2, "?", None), "responses": (3, "r", _RESPONSE_OP)}
_RESPONSE_OP["response_txn"] = (4, "m", _TXN_RESPONSE)


def _int(value: Any) -> int:
    """A 64-bit integer of an answer (a decimal string in JSON)."""
    if value is None:
        return 0
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _bytes_len(value: Any, packed: bool) -> int:
    if isinstance(value, (bytes, bytearray)):
        return len(value)
    if isinstance(value, str):
        if packed:
            return len(value.encode())
        try:
            return len(base64.b64decode(value))
        except ValueError:
            return 0
    return 0


def _doc_size(doc: Any, spec: _Spec, packed: bool) -> int:
    """``Size()`` of an answer's message, from its decoded body."""
    if not isinstance(doc, dict):
        return 0
    size = 0
    for name, (number, kind, inner) in spec.items():
        value = doc.get(name)
        if value is None:
            continue
        if kind == "b":
            length = _bytes_len(value, packed)
            if length:
                size += _tag(number) + _varint(length) + length
        elif kind == "i":
            number_value = _int(value)
            if number_value:
                size += _tag(number) + _varint(number_value)
        elif kind == "?":
            if value is True:
                size += _tag(number) + 1
        elif kind == "m":
            size += _embedded(number, _doc_size(value, inner, packed))
        elif isinstance(value, list):
            size += sum(_embedded(number, _doc_size(item, inner, packed)) for item in value)
    return size
