"""``/v3/lease/*`` (and the ``/v3/kv/lease/*`` aliases): grant, revoke, keepalive,
timetolive, leases.

Keepalive over HTTP answers each request object in the body with one ``{"result": ...}``
chunk and ends (the gateway's one-shot form); over WebSocket it is a real stream: the
messages are one stream of request objects, each answered in order. A renewal is served by the leader's
lessor in memory (a follower forwards it, ``kvraft.server.lease_renew``); the leader
replicates the new remaining TTL in a batched checkpoint. Grant, keepalive and timetolive
are also served by the fast path (``fast_lease``), with these same functions.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import WSMsgType, web

from kvraft.apply.errors import EtcdError
from kvraft.apply.sessions import HEADER, request_id
from kvraft.server.api import schemas
from kvraft.server.api.codec import (
    BOOL,
    INT64,
    JSON_OUT,
    MSGPACK,
    MSGPACK_OUT,
    Message,
    Out,
    decode_body,
)
from kvraft.server.api.defaults import filler
from kvraft.server.api.encode import encode_header
from kvraft.server.api.errors import HTTP_STATUS, to_etcd_error
from kvraft.server.api.feature_state import FEATURES
from kvraft.server.api.open_streams import STREAM_RESPONSE
from kvraft.server.api.request import OUT, header, read_body, read_request, respond
from kvraft.server.api.state import SERVER
from kvraft.server.api.stream import (
    JsonRequests,
    Sink,
    decode_stream,
    is_packed,
    open_stream,
    send_bare_error,
)

__all__ = [
    "GRANT",
    "LEASE_ID",
    "ROUTES",
    "TIME_TO_LIVE",
    "WS_ROUTES",
    "error_chunk",
    "grant_doc",
    "keepalive_chunks",
    "keepalive_doc",
    "result_chunk",
    "time_to_live_doc",
]

GRANT = Message("etcdserverpb.LeaseGrantRequest", {"TTL": INT64, "ID": INT64})
LEASE_ID = Message("etcdserverpb.LeaseRevokeRequest", {"ID": INT64})
TIME_TO_LIVE = Message("etcdserverpb.LeaseTimeToLiveRequest", {"ID": INT64, "keys": BOOL})


async def grant_doc(features: Any, server: Any, out: Out, fields: dict[str, Any], once: Any = None) -> dict[str, Any]:
    result = await features.grant(fields["ID"], fields["TTL"], once)
    return {"header": _header(server, out, result.revision), "ID": out.i(result.id), "TTL": out.i(result.ttl)}


async def keepalive_doc(features: Any, server: Any, out: Out, lease_id: int) -> dict[str, Any]:
    result = await features.renew(lease_id)
    doc: dict[str, Any] = {"header": _header(server, out, result.revision)}
    if lease_id:  # proto3 JSON omits zero values (a keepalive of ID 0 or null)
        doc["ID"] = out.i(lease_id)
    if result.ttl:
        doc["TTL"] = out.i(result.ttl)
    return doc


async def keepalive_chunks(features: Any, server: Any, out: Out, requests: list[Any]) -> AsyncIterator[bytes]:
    """One encoded ``{"result": ...}`` per request object, in order. An error on the first
    raises (answered as a plain error, nothing sent yet); a later one ends the stream with
    an error chunk (grpc-gateway v1's shape)."""
    for i, fields in enumerate(requests):
        try:
            doc = await keepalive_doc(features, server, out, fields["ID"])
        except Exception as exc:
            if i == 0:
                raise
            yield error_chunk(exc)
            return
        yield result_chunk(out, doc)


def result_chunk(out: Out, doc: dict[str, Any]) -> bytes:
    """A stream message as ``stream.Sink.send`` writes it."""
    if out is MSGPACK_OUT:
        return out.dumps({"result": doc})
    return json.dumps({"result": doc}, separators=(",", ":")).encode() + b"\n"


def error_chunk(exc: BaseException) -> bytes:
    """A stream-level error as ``stream.Sink.send_error`` writes it."""
    error = to_etcd_error(exc)
    doc = {"error": {"grpc_code": error.code, "http_code": HTTP_STATUS.get(error.code, 500),
                     "message": error.message, "http_status": ""}}
    return json.dumps(doc).encode() + b"\n"


async def time_to_live_doc(features: Any, server: Any, out: Out, fields: dict[str, Any]) -> dict[str, Any]:
    await server.driver.read_barrier()
    lease_id = fields["ID"]
    lease = features.lessor.leases.get(lease_id)
    revision = features.store.rev
    if lease is None:
        missing: dict[str, Any] = {"header": _header(server, out, revision), "ID": out.i(lease_id), "TTL": out.i(-1)}
        if not lease_id:  # proto3 JSON omits zero values
            del missing["ID"]
        return missing
    keys = features.store.keys_by_lease(lease_id)
    features.check_lease_access(keys)
    doc: dict[str, Any] = {
        "header": _header(server, out, revision),
        "ID": out.i(lease_id),
        "TTL": out.i(features.lessor.remaining(lease_id, time.monotonic())),
        "grantedTTL": out.i(lease.ttl_s),
    }
    if fields["keys"] and keys:
        doc["keys"] = [out.b(k) for k in keys]
    return doc


def _header(server: Any, out: Out, revision: int) -> dict[str, Any]:
    return encode_header(out, server.cluster_id, server.member_id, revision, server.raft_term)


async def _grant(request: web.Request) -> web.Response:
    out, fields = await read_request(request, GRANT)
    return respond(out, await grant_doc(request.app[FEATURES], request.app[SERVER], out, fields,
                                  request_id(request.headers.get(HEADER))))


async def _revoke(request: web.Request) -> web.Response:
    out, fields = await read_request(request, LEASE_ID)
    revision = await request.app[FEATURES].revoke(fields["ID"], request_id(request.headers.get(HEADER)))
    return respond(out, {"header": header(request, out, revision)})


async def _keepalive(request: web.Request) -> web.StreamResponse:
    packed = is_packed(request)
    out = MSGPACK_OUT if packed else JSON_OUT
    request[OUT] = out
    body = await read_body(request)
    requests = decode_stream(body, packed, LEASE_ID)  # a malformed first object fails before the stream opens
    chunks = keepalive_chunks(request.app[FEATURES], request.app[SERVER], out, requests)
    first = await anext(chunks, None)  # a failure here is answered as a plain error
    sink = await open_stream(request, out)
    if first is not None:
        await sink.send_raw(first)
        async for chunk in chunks:
            await sink.send_raw(chunk)
    assert sink.response is not None
    await sink.response.write_eof()
    return sink.response


async def _keepalive_ws(request: web.Request) -> web.WebSocketResponse:
    """As grpc-websocket-proxy serves it: the text messages are written one after the other
    into the gateway's request body, so they are one stream of requests (two in one message
    are two; one may end in a later message). A first request that does not decode is
    answered with the bare error as a message; a later one, or a renewal that fails (an
    error message in grpc-gateway's stream shape), ends the stream: the socket closes.
    Binary messages are kvraft's: one msgpack request each."""
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    request[STREAM_RESPONSE] = ws  # (closed, going away, when the member stops)
    features, server = request.app[FEATURES], request.app[SERVER]
    requests = JsonRequests(LEASE_ID)
    decoded = False
    async for msg in ws:
        if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
            break
        packed = msg.type == WSMsgType.BINARY
        out = MSGPACK_OUT if packed else JSON_OUT
        batch = iter([msg.data]) if packed else requests.feed(msg.data.encode() + b"\n")
        try:
            for item in batch:
                fields = decode_body(item, MSGPACK, LEASE_ID) if packed else item
                decoded = True
                try:
                    doc = await keepalive_doc(features, server, out, fields["ID"])
                except Exception as exc:
                    await ws.send_str(error_chunk(exc).decode().rstrip("\n"))
                    return ws
                await Sink(out, ws=ws, fill=filler(request)).send(doc)
        except EtcdError as exc:
            if not decoded:
                await send_bare_error(ws, exc, out)
            break
    return ws


async def _time_to_live(request: web.Request) -> web.Response:
    out, fields = await read_request(request, TIME_TO_LIVE)
    return respond(out, await time_to_live_doc(request.app[FEATURES], request.app[SERVER], out, fields))


async def _leases(request: web.Request) -> web.Response:
    out, _ = await read_request(request, schemas.EMPTY)
    features = request.app[FEATURES]
    await request.app[SERVER].driver.read_barrier()
    doc: dict[str, Any] = {"header": header(request, out, features.store.rev)}
    ids = list(features.lessor.leases)
    if ids:
        doc["leases"] = [{"ID": out.i(i)} for i in ids]
    return respond(out, doc)


ROUTES = {
    "/lease/grant": _grant,
    "/lease/revoke": _revoke,
    "/kv/lease/revoke": _revoke,
    "/lease/keepalive": _keepalive,
    "/lease/timetolive": _time_to_live,
    "/kv/lease/timetolive": _time_to_live,
    "/lease/leases": _leases,
    "/kv/lease/leases": _leases,
}
WS_ROUTES = {"/lease/keepalive": _keepalive_ws}
