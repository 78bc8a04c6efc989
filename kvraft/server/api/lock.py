"""``/v3/lock/lock`` and ``/v3/lock/unlock`` (etcd's v3lock service).

Lock ``{"name", "lease"}`` answers ``{"header", "key"}`` once the caller holds the lock:
its key ``<name>/<lease hex>`` is the oldest under ``<name>/``. The lock is released by
Unlock ``{"key"}`` or when the lease ends (the key is deleted with it).
"""

from __future__ import annotations

from aiohttp import web

from kvraft.apply.ops import DeleteRangeOp
from kvraft.server.api.codec import BYTES, INT64, Message
from kvraft.server.api.feature_state import FEATURES
from kvraft.server.api.locking import Participant
from kvraft.server.api.request import header, read_request, respond

__all__ = ["ROUTES"]

LOCK = Message("v3lockpb.LockRequest", {"name": BYTES, "lease": INT64})
UNLOCK = Message("v3lockpb.UnlockRequest", {"key": BYTES})


async def _lock(request: web.Request) -> web.Response:
    out, fields = await read_request(request, LOCK)
    features = request.app[FEATURES]
    me = Participant(features.node, features.hub, fields["name"], fields["lease"])
    await me.enter()
    await me.wait_turn()
    revision = features.store.rev
    return respond(out, {"header": header(request, out, revision), "key": out.b(me.key)})


async def _unlock(request: web.Request) -> web.Response:
    out, fields = await read_request(request, UNLOCK)
    result = await request.app[FEATURES].node.delete_range(DeleteRangeOp(fields["key"]))
    return respond(out, {"header": header(request, out, result.revision)})


ROUTES = {"/lock/lock": _lock, "/lock/unlock": _unlock}
