"""``/v3/lease/*`` (and the ``/v3/kv/lease/*`` aliases): grant, revoke, keepalive,
timetolive, leases.

Keepalive over HTTP answers each request object in the body with one ``{"result": ...}``
chunk and ends (the gateway's one-shot form); over WebSocket it is a real stream: every
message received is a keepalive, answered in order. A renewal goes through Raft, so every
member restarts the lease's deadline and a new leader keeps it.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import WSMsgType, web

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
from kvraft.server.api.feature_state import FEATURES
from kvraft.server.api.request import header, read_request, respond
from kvraft.server.api.state import SERVER
from kvraft.server.api.stream import Sink, is_packed, iter_requests, open_stream

__all__ = ["ROUTES", "WS_ROUTES"]

GRANT = Message("etcdserverpb.LeaseGrantRequest", {"TTL": INT64, "ID": INT64})
LEASE_ID = Message("etcdserverpb.LeaseRevokeRequest", {"ID": INT64})
TIME_TO_LIVE = Message("etcdserverpb.LeaseTimeToLiveRequest", {"ID": INT64, "keys": BOOL})


async def _grant(request: web.Request) -> web.Response:
    out, fields = await read_request(request, GRANT)
    result = await request.app[FEATURES].grant(fields["ID"], fields["TTL"])
    doc = {"header": header(request, out, result.revision), "ID": out.i(result.id), "TTL": out.i(result.ttl)}
    return respond(out, doc)


async def _revoke(request: web.Request) -> web.Response:
    out, fields = await read_request(request, LEASE_ID)
    revision = await request.app[FEATURES].revoke(fields["ID"])
    return respond(out, {"header": header(request, out, revision)})


async def _keepalive_doc(request: web.Request, out: Out, lease_id: int) -> dict[str, Any]:
    result = await request.app[FEATURES].renew(lease_id)
    doc: dict[str, Any] = {"header": header(request, out, result.revision), "ID": out.i(lease_id)}
    if result.ttl:
        doc["TTL"] = out.i(result.ttl)
    return doc


async def _keepalive(request: web.Request) -> web.StreamResponse:
    out = MSGPACK_OUT if is_packed(request) else JSON_OUT
    request["out"] = out
    body = await request.read()
    list(iter_requests(body, is_packed(request), LEASE_ID))  # a malformed body fails before the stream opens
    sink = await open_stream(request, out)
    for fields in iter_requests(body, is_packed(request), LEASE_ID):
        await sink.send(await _keepalive_doc(request, out, fields["ID"]))
    assert sink.response is not None
    await sink.response.write_eof()
    return sink.response


async def _keepalive_ws(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for msg in ws:
        if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
            break
        packed = msg.type == WSMsgType.BINARY
        out = MSGPACK_OUT if packed else JSON_OUT
        data = msg.data if packed else msg.data.encode()
        fields = decode_body(data, MSGPACK if packed else "application/json", LEASE_ID)
        await Sink(out, ws=ws).send(await _keepalive_doc(request, out, fields["ID"]))
    return ws


async def _time_to_live(request: web.Request) -> web.Response:
    out, fields = await read_request(request, TIME_TO_LIVE)
    features = request.app[FEATURES]
    await request.app[SERVER].driver.read_barrier()
    lease_id = fields["ID"]
    lease = features.lessor.leases.get(lease_id)
    revision = features.store.rev
    if lease is None:
        return respond(out, {"header": header(request, out, revision), "ID": out.i(lease_id), "TTL": out.i(-1)})
    keys = features.store.keys_by_lease(lease_id)
    features.check_lease_access(keys)
    doc: dict[str, Any] = {
        "header": header(request, out, revision),
        "ID": out.i(lease_id),
        "TTL": out.i(features.lessor.remaining(lease_id, time.monotonic())),
        "grantedTTL": out.i(lease.ttl_s),
    }
    if fields["keys"] and keys:
        doc["keys"] = [out.b(k) for k in keys]
    return respond(out, doc)


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
