"""``/v3/maintenance/*``: status, defragment, alarm, hash, hashkv, snapshot,
transfer-leadership."""

from __future__ import annotations

import json

from aiohttp import web

from kvraft.server.api import schemas
from kvraft.server.api.codec import MSGPACK_OUT
from kvraft.server.api.request import header, read_request, respond
from kvraft.server.api.state import SERVER

__all__ = ["ROUTES"]

ALARM_NAMES = {0: "NONE", 1: "NOSPACE", 2: "CORRUPT"}
SNAPSHOT_CHUNK_BYTES = 32 * 1024


async def _status(request: web.Request) -> web.Response:
    out, _ = await read_request(request, schemas.EMPTY)
    server = request.app[SERVER]
    status = await server.status()
    doc = {"header": header(request, out, status["revision"]), "version": status["version"]}
    for name in ("dbSize", "leader", "raftIndex", "raftTerm", "raftAppliedIndex", "dbSizeInUse"):
        if status[name]:
            doc[name] = out.i(status[name])
    if status["isLearner"]:
        doc["isLearner"] = True
    if status["errors"]:
        doc["errors"] = status["errors"]
    return respond(out, doc)


async def _defragment(request: web.Request) -> web.Response:
    out, _ = await read_request(request, schemas.EMPTY)
    await request.app[SERVER].defragment()
    return respond(out, {})


async def _alarm(request: web.Request) -> web.Response:
    out, fields = await read_request(request, schemas.ALARM)
    alarms = await request.app[SERVER].alarm(fields["action"], fields["memberID"], fields["alarm"])
    doc = {}
    if alarms:
        doc["alarms"] = [
            {**({"memberID": out.i(member_id)} if member_id else {}), "alarm": ALARM_NAMES.get(kind, kind)}
            for member_id, kind in alarms
        ]
    return respond(out, doc)


async def _hash(request: web.Request) -> web.Response:
    out, _ = await read_request(request, schemas.EMPTY)
    revision, value = await request.app[SERVER].hash()
    doc = {"header": header(request, out, revision)}
    if value:
        doc["hash"] = value  # uint32: a JSON number
    return respond(out, doc)


async def _hash_kv(request: web.Request) -> web.Response:
    out, fields = await read_request(request, schemas.HASH_KV)
    revision, value, compact_revision = await request.app[SERVER].hash_kv(fields["revision"])
    doc = {"header": header(request, out, revision)}
    if value:
        doc["hash"] = value
    if compact_revision:
        doc["compact_revision"] = out.i(compact_revision)
    return respond(out, doc)


async def _transfer_leadership(request: web.Request) -> web.Response:
    out, fields = await read_request(request, schemas.MOVE_LEADER)
    revision = await request.app[SERVER].move_leader(fields["targetID"])
    return respond(out, {"header": header(request, out, revision)})


async def _snapshot(request: web.Request) -> web.StreamResponse:
    out, _ = await read_request(request, schemas.EMPTY)
    server = request.app[SERVER]
    revision, data = await server.snapshot_blob()
    response = web.StreamResponse(headers={"Content-Type": out.content_type})
    await response.prepare(request)
    remaining = len(data)
    for offset in range(0, max(len(data), 1), SNAPSHOT_CHUNK_BYTES):
        chunk = data[offset : offset + SNAPSHOT_CHUNK_BYTES]
        remaining -= len(chunk)
        result = {"header": header(request, out, revision), "blob": out.b(chunk)}
        if remaining:
            result["remaining_bytes"] = out.i(remaining)
        if out is MSGPACK_OUT:
            await response.write(out.dumps({"result": result}))
        else:
            await response.write(json.dumps({"result": result}, separators=(",", ":")).encode() + b"\n")
    await response.write_eof()
    return response


ROUTES = {
    "/maintenance/status": _status,
    "/maintenance/defragment": _defragment,
    "/maintenance/alarm": _alarm,
    "/maintenance/hash": _hash,
    "/maintenance/hashkv": _hash_kv,
    "/maintenance/snapshot": _snapshot,
    "/maintenance/transfer-leadership": _transfer_leadership,
}
