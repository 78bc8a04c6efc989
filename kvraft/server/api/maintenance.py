"""``/v3/maintenance/*``: status, defragment, alarm, hash, hashkv, snapshot,
transfer-leadership."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from aiohttp import web

from kvraft.server.api import schemas
from kvraft.server.api.access import answer_headers
from kvraft.server.api.codec import MSGPACK_OUT, Out
from kvraft.server.api.defaults import filler
from kvraft.server.api.errors import to_etcd_error
from kvraft.server.api.feature_state import FEATURES
from kvraft.server.api.request import header, read_request, respond
from kvraft.server.api.state import SERVER

__all__ = ["ALARM_NAMES", "ROUTES", "alarm_text"]

ALARM_NAMES = {0: "NONE", 1: "NOSPACE", 2: "CORRUPT"}
ALARM_GET = 0  # AlarmRequest.AlarmAction: GET, ACTIVATE, DEACTIVATE
SNAPSHOT_CHUNK_BYTES = 64 * 1024


def alarm_text(member_id: int, alarm: int) -> str:
    """An alarm as etcd's status ``errors`` list it (its AlarmMember in protobuf's compact
    text: each field set followed by a space, zeros left out): ``memberID:1 alarm:CORRUPT ``."""
    text = f"memberID:{member_id} " if member_id else ""
    return text + (f"alarm:{ALARM_NAMES.get(alarm, alarm)} " if alarm else "")

log = logging.getLogger("kvraft.api")


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
    features = request.app[FEATURES]
    if features.auth.enabled:  # reading alarms is open to any user; changing them is root's
        check = features.auth.check_user if fields["action"] == ALARM_GET else features.auth.check_admin
        features.checked(check, *features.caller_or_empty())
    alarms = await request.app[SERVER].alarm(fields["action"], fields["memberID"], fields["alarm"])
    doc = {}
    if alarms:
        doc["alarms"] = [
            {**({"memberID": out.i(member_id)} if member_id else {}),
             **({"alarm": ALARM_NAMES.get(kind, kind)} if kind else {})}  # proto3 JSON omits zeros
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
    """Stream the member's backend as the framed, checksummed snapshot format of
    ``kvraft.storage.snapshot`` (what ``kvctl snapshot status`` and ``restore`` read): one
    frame per message, read from one LMDB read transaction on a worker thread as the
    client takes them, so memory stays at one frame and writers are never blocked.
    ``remaining_bytes`` is an estimate (the store's bytes in use) until the last message,
    which carries 0. A failure after the first byte ends the stream with an error
    message (``{"error": ...}``), which the client raises; the file is then incomplete
    and its missing trailer says so."""
    out, _ = await read_request(request, schemas.EMPTY)
    server = request.app[SERVER]
    loop = asyncio.get_running_loop()
    server.state.commit()  # applied batches the store still holds go to disk first (as etcd's ForceCommit)
    stream = await loop.run_in_executor(None, server.state.store.snapshot, SNAPSHOT_CHUNK_BYTES)
    frames = iter(stream)
    response = web.StreamResponse(headers={**answer_headers(request), "Content-Type": out.content_type})
    fill = filler(request) if out is not MSGPACK_OUT else None
    failure: Exception | None = None
    try:
        await response.prepare(request)
        sent = 0
        frame = await loop.run_in_executor(None, next, frames, None)
        while frame is not None:
            following = await loop.run_in_executor(None, next, frames, None)
            sent += len(frame)
            result = {"header": header(request, out, stream.revision), "blob": out.b(frame)}
            if following is not None:
                result["remaining_bytes"] = out.i(max(stream.size_estimate - sent, 1))
            if fill is not None:
                result = fill(result)
            await response.write(_message(out, {"result": result}))
            frame = following
    except ConnectionError:
        raise  # the client went away
    except Exception as exc:  # noqa: BLE001 - reported in-band below: the headers are sent
        log.exception("snapshot stream failed", exc_info=exc)
        failure = exc
    finally:
        await loop.run_in_executor(None, stream.close)  # the read transaction ends first
    with contextlib.suppress(ConnectionError):
        if failure is not None:
            error = to_etcd_error(failure)
            await response.write(_message(out, {"error": {"grpc_code": error.code, "message": error.message}}))
        await response.write_eof()
    return response


def _message(out: Out, doc: dict[str, Any]) -> bytes:
    if out is MSGPACK_OUT:
        return out.dumps(doc)
    return json.dumps(doc, separators=(",", ":")).encode() + b"\n"


ROUTES = {
    "/maintenance/status": _status,
    "/maintenance/defragment": _defragment,
    "/maintenance/alarm": _alarm,
    "/maintenance/hash": _hash,
    "/maintenance/hashkv": _hash_kv,
    "/maintenance/snapshot": _snapshot,
    "/maintenance/transfer-leadership": _transfer_leadership,
}
