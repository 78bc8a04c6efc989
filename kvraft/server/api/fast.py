"""The fast path for the hot KV routes: an asyncio protocol in front of aiohttp.

``POST /v3/kv/{range,put,deleterange,txn}`` (and ``/v3beta/``) and the msgpack batch route
``POST /v3/kv/batch`` are parsed and answered here, straight from the socket: no aiohttp
``Request``/``Response`` objects, router, middleware or stream writer (they were ~35% of
the leader's CPU at saturation). Everything else is aiohttp's, unchanged: the first
request on a connection that this path does not take (another route or method, a
chunked body, ``Expect``, HTTP/1.0, a body over the size limit, any request while auth is
enabled, any request from a TLS client without a certificate under ``--client-cert-auth``,
which aiohttp's middleware refuses unless it carries a scoped token, or any request at all
when ``--cors`` or ``--host-whitelist`` is not etcd's default ``*``) hands the connection,
with the bytes already read, to aiohttp's protocol for the rest of its life.

Wire compatibility: the same decoders (``codec.decode_body``), encoders (``encode``), and
error answers (``errors.error_response``) as the aiohttp routes, and the same headers
(content type, length, the CORS headers, ``Date``, ``Server``). Requests on a connection are
answered in order, one at a time (as aiohttp does); a pipelined request waits in the
buffer.

``/kv/batch`` (msgpack only): the body is a list of ``[kind, request]`` with kind one of
``put``, ``range``, ``deleterange``, ``txn`` and the request in the route's msgpack shape;
the answer is a list with one ``[code, response]`` per op (code 0 and the route's
response, or the gRPC code and ``{"error", "message", "code"}``). The ops are independent
(not a transaction). The puts are proposed as ``BatchOp`` entries (one log entry, one
proposal and one waiter per up to ``--max-request-bytes`` of puts, each put its own
revision, in the batch's order); the other ops take their route's path, concurrently.
"""

from __future__ import annotations

import asyncio
import binascii
import json
import logging
import time
from email.utils import formatdate
from typing import Any

import msgpack
from aiohttp import web

from kvraft.apply.errors import FailedPrecondition, InvalidArgument, Unavailable
from kvraft.apply.ops import BatchOp, PutOp, RangeOp
from kvraft.apply.sessions import RequestId, request_id
from kvraft.apply.validate import validate_op
from kvraft.durations import parse_go_duration_s
from kvraft.server import client_keepalive
from kvraft.server.api import fast_lease, gojson, schemas
from kvraft.server.api.access import Access
from kvraft.server.api.coalesce import PutCoalescer
from kvraft.server.api.codec import JSON_OUT, MSGPACK, MSGPACK_OUT, Out, decode_body, decode_message
from kvraft.server.api.encode import (
    encode_delete,
    encode_header,
    encode_put,
    encode_range,
    encode_range_json,
    encode_txn,
)
from kvraft.server.api.errors import GRPC_CODE, HTTP_STATUS, error_response, to_etcd_error
from kvraft.server.api.feature_state import FEATURES
from kvraft.server.api.grpc_stats import GrpcStats, Method, method_for
from kvraft.server.api.request import body_limit
from kvraft.server.api.request_stats import RequestStats
from kvraft.server.api.state import SERVER
from kvraft.server.cert_names import CertRule
from kvraft.server.tls_accept import accepting

__all__ = ["FastProtocol", "FastTCPSite", "MAX_BATCH_OPS", "fast_factory"]

log = logging.getLogger("kvraft.api.fast")

MAX_BATCH_OPS = 10_000
_HEADER_LIMIT = 64 * 1024
_CORS = (
    b"Access-Control-Allow-Origin: *\r\n"
    b"Access-Control-Allow-Methods: POST, GET, OPTIONS, PUT, DELETE\r\n"
    b"Access-Control-Allow-Headers: accept, content-type, authorization\r\n"
    b"Grpc-Metadata-Content-Type: application/grpc\r\n"
)
_REASONS = {200: b"OK", 400: b"Bad Request", 401: b"Unauthorized", 403: b"Forbidden", 404: b"Not Found",
            408: b"Request Timeout", 409: b"Conflict", 412: b"Precondition Failed",
            429: b"Too Many Requests", 500: b"Internal Server Error", 501: b"Not Implemented",
            503: b"Service Unavailable", 504: b"Gateway Timeout"}


_MSGPACK_BYTES = MSGPACK.encode()

class _Date:
    """The ``Date`` header, formatted once a second."""

    second = -1
    value = b""

    @classmethod
    def get(cls) -> bytes:
        now = int(time.time())
        if now != cls.second:
            cls.second, cls.value = now, formatdate(now, usegmt=True).encode()
        return cls.value


class _Routes:
    """The member-facing side: decode, call the server, encode (as ``kv.py``)."""

    def __init__(self, server: Any, features: Any, server_header: bytes) -> None:
        self.server = server
        self.features = features
        self.server_header = server_header
        self.puts = PutCoalescer(server, features)
        self.grpc_stats: GrpcStats = getattr(server, "grpc_stats", None) or GrpcStats()
        config = getattr(server, "config", None)
        self.request_stats = RequestStats.of(config)
        """etcd's "request stats" line for a slow request (``request_stats``)."""
        self.client_cert_auth = bool(getattr(config, "client_cert_auth", False))
        self.cert_rule = CertRule("client", allowed_hostname=str(getattr(config, "client_cert_allowed_hostname", "") or ""))
        self.emit_defaults = bool(getattr(config, "gateway_emit_defaults", False))
        """JSON answers are then aiohttp's (its middleware fills them: ``defaults``)."""
        self.keepalive = (parse_go_duration_s(getattr(config, "grpc_keepalive_interval", "2h")),
                          parse_go_duration_s(getattr(config, "grpc_keepalive_timeout", "20s")))
        """``client_keepalive``: every client connection's TCP keepalive (etcd's flags)."""
        self.open_access = Access.of(config).default
        """etcd's default ``--cors`` and ``--host-whitelist``; else every request is aiohttp's
        (``access``: the headers and the host check depend on the request)."""

    def header(self, out: Out, revision: int) -> dict[str, Any]:
        s = self.server
        return encode_header(out, s.cluster_id, s.member_id, revision, s.raft_term)

    def put_answer(self, out: Out, result: Any) -> bytes:
        """``out.dumps(encode_put(...))``; the usual answer (no prev_kv, every header
        field set) from a template."""
        s = self.server
        cluster_id, member_id, term = s.cluster_id, s.member_id, s.raft_term
        if result.prev_kv is None and cluster_id and member_id and term and result.revision:
            if out is JSON_OUT:
                return _PUT_JSON % (cluster_id, member_id, result.revision, term)
            return out.dumps({"header": {"cluster_id": cluster_id, "member_id": member_id,
                                         "revision": result.revision, "raft_term": term}})
        return out.dumps(encode_put(out, self.header(out, result.revision), result))

    def range_answer(self, out: Out, result: Any) -> bytes:
        """``out.dumps(encode_range(...))``; JSON written directly (``encode_range_json``)."""
        s = self.server
        if out is JSON_OUT:
            return encode_range_json(s.cluster_id, s.member_id, s.raft_term, result)
        return out.dumps(encode_range(out, self.header(out, result.revision), result))

    async def one(self, route: str, out: Out, op: Any, once: RequestId | None = None) -> dict[str, Any]:
        s = self.server
        if route == "put":  # puts of one loop turn share a log entry (coalesce.py)
            result = await self.puts.put(op)
            return encode_put(out, self.header(out, result.revision), result)
        if route == "range":
            result = await s.range(op)
            return encode_range(out, self.header(out, result.revision), result)
        if route == "deleterange":
            result = await s.delete_range(op, once)
            return encode_delete(out, self.header(out, result.revision), result)
        result = await s.txn(op, once)
        return encode_txn(out, self.header(out, result.revision), result)

    async def batch(self, body: bytes) -> list[Any]:
        if self.features.auth.enabled:  # (the route is never taken with auth on; a race)
            raise FailedPrecondition("kv/batch is not available while auth is enabled")
        try:
            items = msgpack.unpackb(body, raw=False) if body else []
        except Exception as exc:  # msgpack raises several unrelated types
            raise InvalidArgument(f"msgpack: {exc}") from None
        if not isinstance(items, list) or len(items) > MAX_BATCH_OPS:
            raise InvalidArgument(f"kv/batch: want a list of at most {MAX_BATCH_OPS} [kind, request] pairs")
        answers: list[Any] = [None] * len(items)
        puts: list[tuple[int, PutOp]] = []
        others: list[tuple[int, str, Any]] = []
        for i, item in enumerate(items):
            if not (type(item) is list and len(item) == 2 and type(item[0]) is str and item[0] in SCHEMAS):
                raise InvalidArgument("kv/batch: each op is [kind, request], kind put|range|deleterange|txn")
            kind, request = item
            if kind == "put" and type(request) is dict:
                # a plain put (a non-empty binary key, a binary value or none, nothing else):
                # the PutOp that decode_message would build and validate_op pass, built here
                key, value, n = request.get("key"), request.get("value", b""), len(request)
                if (type(key) is bytes and key and type(value) is bytes
                        and (n == 2 and "value" in request or n == 1)):
                    puts.append((i, PutOp(key, value)))
                    continue
            others.append((i, kind, decode_message(request, SCHEMAS[kind], packed=True)))
        tasks: list[tuple[int, asyncio.Future[Any]]] = []
        max_txn_ops = self.server.config.max_txn_ops
        plain = len(puts)
        for i, route, op in others:
            if route != "put":  # reads, deletes, txns: their own route's path, concurrently
                tasks.append((i, asyncio.ensure_future(self.one(route, MSGPACK_OUT, op))))
                continue
            try:
                validate_op(op, max_txn_ops)
            except Exception as exc:
                answers[i] = _error_answer(exc)
                continue
            puts.append((i, op))
        if plain and len(puts) > plain:
            puts.sort(key=_first)  # (the decoded ones were appended last): the batch's order
        # the puts go into the log as BatchOp entries (one proposal, one entry, one waiter
        # per entry of up to ``max_request_bytes``), applied in order, a revision each
        max_bytes = self.server.config.max_request_bytes
        chunks = [puts] if len(body) + 64 <= max_bytes else _chunks(puts, max_bytes)
        submitted = [(chunk, self._submit(chunk)) for chunk in chunks if chunk]
        for i, future in tasks:
            try:
                answers[i] = [0, await future]
            except Exception as exc:
                answers[i] = _error_answer(exc)
        for chunk, future in submitted:
            await self._answer_puts(chunk, future, answers)
        return answers

    def _submit(self, chunk: list[tuple[int, PutOp]]) -> asyncio.Future[Any]:
        try:
            future: asyncio.Future[Any] = self.server.submit_write(BatchOp([op for _i, op in chunk]))
            return future
        except Exception as exc:
            return _failed(exc)

    async def _answer_puts(self, chunk: list[tuple[int, PutOp]], submitted: asyncio.Future[Any],
                           answers: list[Any]) -> None:
        try:
            results = await submitted
        except InvalidArgument as exc:
            if len(chunk) > 1 and "too large" in exc.message:  # (sizes were estimated): halve
                half = len(chunk) // 2
                for part in (chunk[:half], chunk[half:]):
                    await self._answer_puts(part, self._submit(part), answers)
                return
            results = [exc] * len(chunk)
        except Exception as exc:  # the whole entry failed (timeout, no leader, quota, auth)
            results = [exc] * len(chunk)
        s = self.server
        cluster_id, member_id, term = s.cluster_id, s.member_id, s.raft_term
        plain = bool(cluster_id and member_id and term)
        for (i, _op), result in zip(chunk, results, strict=True):
            if isinstance(result, BaseException):
                answers[i] = _error_answer(result)
            elif plain and result.prev_kv is None:  # encode_put's answer, built in one go
                answers[i] = [0, {"header": {"cluster_id": cluster_id, "member_id": member_id,
                                             "revision": result.revision, "raft_term": term}}]
            else:
                answers[i] = [0, encode_put(MSGPACK_OUT, self.header(MSGPACK_OUT, result.revision), result)]


_PUT_JSON = b'{"header":{"cluster_id":"%d","member_id":"%d","revision":"%d","raft_term":"%d"}}'


def _load(body: bytes, out: Out) -> Any:
    """The body as JSON or msgpack, or None when it does not parse (``decode_body`` then
    words the error)."""
    try:
        if out is JSON_OUT:
            return json.loads(body.decode("utf-8"))
        return msgpack.unpackb(body, raw=False)
    except Exception:
        return None


def _b64(text: str) -> bytes:
    """Canonical padded base64 only (what Go's decoder takes without CR/LF); anything
    else raises ValueError and takes ``decode_body`` for Go's exact answer."""
    raw = text.encode("utf-8", "surrogatepass")
    if not gojson.STRICT_B64.fullmatch(raw):
        raise ValueError("not canonical base64")
    return binascii.a2b_base64(raw)


def _decode_put(body: bytes, out: Out) -> PutOp:
    """``decode_body(body, ..., PUT)``; a plain put (only a non-empty key and a value, as
    base64 text in JSON or bytes in msgpack) is built without the schema walk. Anything
    else, malformed bodies included, takes ``decode_body`` for its exact answer."""
    doc = _load(body, out)
    if type(doc) is dict:
        key, value, n = doc.get("key"), doc.get("value", b"" if out is MSGPACK_OUT else ""), len(doc)
        if key and (n == 1 or n == 2 and "value" in doc):
            if out is JSON_OUT and type(key) is str and type(value) is str:
                try:
                    return PutOp(_b64(key), _b64(value))
                except (binascii.Error, ValueError):
                    pass
            elif out is MSGPACK_OUT and type(key) is bytes and type(value) is bytes:
                return PutOp(key, value)
    return decode_body(body, out.content_type, schemas.PUT)  # type: ignore[no-any-return]


_RANGE_FLAGS = ("serializable", "keys_only", "count_only")
_RANGE_FAST = frozenset(("key", "range_end", "limit", *_RANGE_FLAGS))


def _decode_range(body: bytes, out: Out) -> Any:
    """``decode_body(body, ..., RANGE)``; a plain range (a non-empty key, optionally
    ``range_end``, a non-negative ``limit`` number and the three flags as booleans; in JSON
    bytes as base64 text, in msgpack as bin) is built without the schema walk. Anything
    else (other fields, strings for numbers, nulls, malformed bodies) takes ``decode_body``
    for its exact answer."""
    doc = _load(body, out)
    if type(doc) is dict and doc.keys() <= _RANGE_FAST:
        key, end, limit = doc.get("key"), doc.get("range_end", b""), doc.get("limit", 0)
        flags = [doc.get(name, False) for name in _RANGE_FLAGS]
        if key and type(limit) is int and 0 <= limit < 2**63 and all(type(flag) is bool for flag in flags):
            if out is JSON_OUT:
                if type(key) is str and (type(end) is str or end == b""):
                    try:
                        return RangeOp(_b64(key), _b64(end) if end else b"",
                                       limit, 0, 0, 0, *flags)
                    except (binascii.Error, ValueError):
                        pass
            elif type(key) is bytes and type(end) is bytes:
                return RangeOp(key, end, limit, 0, 0, 0, *flags)
    return decode_body(body, out.content_type, schemas.RANGE)


def _first(item: tuple[int, Any]) -> int:
    return item[0]


_ENTRY_OVERHEAD = 16  # msgpack framing of one put in a BatchOp entry, at most about this
# (a body within ``max_bytes`` needs no sizing: a put's entry form is no larger than its
# ``["put", {"key": .., "value": ..}]`` in the body, give or take the 64 bytes allowed)


def _chunks(puts: list[tuple[int, PutOp]], max_bytes: int) -> list[list[tuple[int, PutOp]]]:
    """Split the puts into runs whose BatchOp entry stays within ``max_bytes`` (estimated;
    a run found too large when encoded is halved, a single put too large fails alone)."""
    chunks: list[list[tuple[int, PutOp]]] = []
    current: list[tuple[int, PutOp]] = []
    size = 64
    for item in puts:
        op = item[1]
        grow = len(op.key) + len(op.value) + _ENTRY_OVERHEAD
        if current and size + grow > max_bytes:
            chunks.append(current)
            current, size = [], 64
        current.append(item)
        size += grow
    if current:
        chunks.append(current)
    return chunks


def _error_answer(exc: BaseException) -> list[Any]:
    error = to_etcd_error(exc)
    return [error.code, {"error": error.message, "message": error.message, "code": error.code}]


def _failed(exc: BaseException) -> asyncio.Future[Any]:
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    future.set_exception(exc)
    return future


SCHEMAS = {"put": schemas.PUT, "range": schemas.RANGE, "deleterange": schemas.DELETE_RANGE, "txn": schemas.TXN}
_PATHS: dict[bytes, str] = {}
for _prefix in (b"/v3", b"/v3beta"):
    for _name in ("put", "range", "deleterange", "txn", "batch"):
        _PATHS[_prefix + b"/kv/" + _name.encode()] = _name
_PATHS.update(fast_lease.PATHS)  # lease/grant, keepalive, timetolive (served by fast_lease)
# the gRPC method each route counts as (``grpc_stats``); kvraft's own /kv/batch has none
_GRPC = {route: method_for("/v3/" + route if "/" in route else "/v3/kv/" + route) for route in set(_PATHS.values())}


class FastProtocol(asyncio.Protocol):
    def __init__(self, fallback: Any, routes: _Routes, max_body: int) -> None:
        self.fallback = fallback
        self.routes = routes
        self.max_body = max_body
        self.transport: Any = None
        self.buffer = bytearray()
        self.busy = False
        self.closing = False
        self.paused = False
        self.grpc: Method | None = None  # the request being answered, for grpc_stats
        self.grpc_started = 0.0
        self.grpc_body = b""  # (and its body, for request_stats)
        self.uncertified = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        client_keepalive.configure(transport.get_extra_info("socket"), *self.routes.keepalive)
        why = self.routes.cert_rule.refusal(transport.get_extra_info("peercert")) if self.routes.cert_rule else ""
        if why:  # --client-cert-allowed-hostname: closed before a byte is read, as etcd's listener
            log.warning("refused a client connection from %s: %s", transport.get_extra_info("peername"), why)
            self.closing = True
            transport.abort()
            return
        # --client-cert-auth and a TLS client that offered no certificate: aiohttp's middleware
        # decides (a scoped token or a refusal); this path would answer it unchecked
        self.uncertified = self.routes.client_cert_auth and transport.get_extra_info("sslcontext") is not None \
            and not transport.get_extra_info("peercert") or not self.routes.open_access

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.busy:
            self._next()
        elif len(self.buffer) > self.max_body + 2 * _HEADER_LIMIT and not self.paused:
            # a client pipelining faster than we answer: stop reading until we catch up
            self.paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool | None:
        self.closing = True
        if not self.busy:
            self.transport.close()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True

    def _hand_over(self) -> None:
        """Give this connection (and what was read) to aiohttp for good."""
        if self.paused:
            self.paused = False
            self.transport.resume_reading()
        proto = self.fallback()
        self.transport.set_protocol(proto)
        proto.connection_made(self.transport)
        if self.buffer:
            data, self.buffer = bytes(self.buffer), bytearray()
            proto.data_received(data)

    def _next(self) -> None:
        """Start the next complete request in the buffer, if any."""
        buf = self.buffer
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > _HEADER_LIMIT:
                self._hand_over()
            return
        lines = bytes(buf[:end]).split(b"\r\n")
        parts = lines[0].split(b" ")
        route = _PATHS.get(parts[1]) if len(parts) == 3 else None
        if route is None or parts[0] != b"POST" or parts[2] != b"HTTP/1.1" or self.routes.features.auth.enabled \
                or self.uncertified:
            self._hand_over()
            return
        length, ctype, close, once = -1, b"", False, None
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name != name.strip():  # a space before the colon, or a folded line: aiohttp refuses it
                length = -2
                break
            name = name.lower()
            if name == b"content-length":
                # digits only, and once (int() also took '+5', '1_0', ' 5'; the last one won): a
                # length another reader of the stream could read otherwise is aiohttp's to refuse
                value = value.strip()
                length = int(value) if length == -1 and value.isdigit() else -2
                if length < 0:
                    break
            elif name == b"content-type":
                ctype = value.split(b";", 1)[0].strip().lower()
            elif name == b"connection":
                close = value.strip().lower() == b"close"
            elif name == b"kvraft-request-id":
                once = value.strip().decode("latin-1")
            elif name in (b"transfer-encoding", b"expect", b"upgrade", b"kvraft-emit-defaults"):
                length = -2
        if length < 0 or length > self.max_body or (self.routes.emit_defaults and ctype != _MSGPACK_BYTES):
            self._hand_over()
            return
        start = end + 4
        if len(buf) < start + length:
            return  # the body is still coming
        body = bytes(buf[start : start + length])
        del buf[: start + length]
        self.busy = True
        self.grpc = _GRPC[route]
        if self.grpc is not None:
            self.grpc_started = self.routes.grpc_stats.start(self.grpc)
            self.grpc_body = body
        out = MSGPACK_OUT if ctype == _MSGPACK_BYTES else JSON_OUT
        if route == "put":  # answered from a callback: no task, no coroutine
            self._put(out, body, close, once)
            return
        if route == "range":  # the same
            self._range(out, body, close)
            return
        task = asyncio.get_running_loop().create_task(self._serve(route, out, body, close, once))
        task.add_done_callback(_log_failure)

    async def _serve(self, route: str, out: Out, body: bytes, close: bool, once: str | None = None) -> None:
        if route in fast_lease.ROUTES:
            return await fast_lease.serve(self, route, out, body, close, once)
        status, code = 200, 0
        try:
            if route == "batch":
                if out is not MSGPACK_OUT:
                    raise InvalidArgument("kv/batch takes application/x-msgpack only")
                payload = out.dumps(await self.routes.batch(body))
            else:
                op = decode_body(body, out.content_type, SCHEMAS[route])
                payload = out.dumps(await self.routes.one(route, out, op, request_id(once)))  # (deleterange, txn)
        except Exception as exc:  # every failure answers etcd's error JSON, never a bare 500
            answer = error_response(exc, out)
            status, payload, code = answer.status, bytes(answer.body or b""), answer[GRPC_CODE]  # type: ignore[arg-type]
        self._respond(status, out.content_type, payload, close, code=code)

    def _put(self, out: Out, body: bytes, close: bool, once: str | None = None) -> None:
        try:  # answered from the entry's waiter callback itself (``submit_then``)
            self.routes.puts.submit_then(
                _decode_put(body, out), lambda result, error: self._answered(result, error, out, close, self.routes.put_answer),
                request_id(once),
            )
        except Exception as exc:  # answered a turn later: ``_respond`` starts the next
            # pipelined request, so answering here would recurse once per bad request
            asyncio.get_running_loop().call_soon(self._fail, exc, out, close)

    def _range(self, out: Out, body: bytes, close: bool) -> None:
        try:
            future = self.routes.server.range_future(_decode_range(body, out))
        except Exception as exc:  # (answered a turn later, as ``_put``'s)
            asyncio.get_running_loop().call_soon(self._fail, exc, out, close)
            return
        future.add_done_callback(lambda done: self._answer(done, out, close, self.routes.range_answer))

    def _answer(self, done: asyncio.Future[Any], out: Out, close: bool, encode: Any) -> None:
        """Answer a range from its future: ``encode(out, result)`` or the error."""
        if done.cancelled():  # (not expected: nothing cancels a read's future)
            self._answered(None, asyncio.CancelledError(), out, close, encode)
            return
        error = done.exception()
        self._answered(None if error is not None else done.result(), error, out, close, encode)

    def _answered(self, result: Any, error: BaseException | None, out: Out, close: bool, encode: Any) -> None:
        """Answer a put or a range: ``encode(out, result)`` or the error."""
        if isinstance(error, asyncio.CancelledError):
            self._fail(Unavailable("etcdserver: request cancelled"), out, close)
            return
        if error is not None:
            self._fail(error, out, close)
            return
        try:
            payload = encode(out, result)
        except Exception as exc:
            self._fail(exc, out, close)
            return
        self._respond(200, out.content_type, payload, close)

    def _fail(self, exc: BaseException, out: Out, close: bool) -> None:
        answer = error_response(exc, out)
        self._respond(answer.status, out.content_type, bytes(answer.body or b""), close,  # type: ignore[arg-type]
                      code=answer[GRPC_CODE])

    def _respond(self, status: int, content_type: str, payload: bytes, close: bool, chunked: bool = False,
                 code: int = 0) -> None:
        """``chunked``: ``payload`` is an encoded chunked body (a stream's answer); ``code``:
        the gRPC code of an error answer."""
        if self.grpc is not None:
            took = self.routes.grpc_stats.finish(self.grpc, code, self.grpc_started)
            if took > self.routes.request_stats.threshold:
                self.routes.request_stats.log(self.grpc, took, self.transport.get_extra_info("peername"),
                                              content_type, self.grpc_body, code, payload)
            self.grpc, self.grpc_body = None, b""
        length = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % len(payload)
        head = b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\n%s\r\nDate: %s\r\nServer: %s\r\n%s" % (
            status, _REASONS.get(status, b"Unknown"), content_type.encode(), length, _Date.get(),
            self.routes.server_header, _CORS,
        )
        if close:
            head += b"Connection: close\r\n"
        transport = self.transport
        if transport.is_closing():
            return
        transport.write(head + b"\r\n" + payload)
        self.busy = False
        if close or self.closing:
            transport.close()
            return
        if self.paused:
            self.paused = False
            transport.resume_reading()
        if self.buffer:
            self._next()


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("fast path failed", exc_info=task.exception())


def fast_factory(aiohttp_factory: Any, server: Any, features: Any, max_body: int) -> Any:
    """A protocol factory for ``loop.create_server``: the fast path in front of
    ``aiohttp_factory`` (an aiohttp ``web.Server``)."""
    import sys

    import aiohttp

    python = "Python/{}.{}".format(*sys.version_info[:2])
    routes = _Routes(server, features, f"{python} aiohttp/{aiohttp.__version__}".encode())
    return lambda: FastProtocol(aiohttp_factory, routes, max_body)


class FastTCPSite(web.TCPSite):
    """``web.TCPSite`` whose connections start on the fast path (same arguments)."""

    async def start(self) -> None:
        await web.BaseSite.start(self)
        runner = self._runner
        app = runner.app  # type: ignore[attr-defined]
        limit = body_limit(app[SERVER].config.max_request_bytes)
        factory, context = accepting(fast_factory(runner.server, app[SERVER], app[FEATURES], limit), self._ssl_context,
                                     "client", app[SERVER].handshake_failures)
        self._server = await asyncio.get_running_loop().create_server(
            factory, self._host, self._port, ssl=context, backlog=self._backlog,
            reuse_address=self._reuse_address, reuse_port=self._reuse_port,
        )
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port


assert set(HTTP_STATUS.values()) <= set(_REASONS)
