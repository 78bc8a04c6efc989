"""``/v3/lock/lock`` and ``/v3/lock/unlock`` (etcd's v3lock service).

Lock ``{"name", "lease"}`` answers ``{"header", "key"}`` once the caller holds the lock:
its key ``<name>/<lease hex>`` is the oldest under ``<name>/``. The lock is released by
Unlock ``{"key"}`` or when the lease ends (the key is deleted with it). Without a lease the
lock gets a new 60 s one that nobody renews, and a caller that leaves while it waits leaves
the line, as in etcd (``locking.session_lease``, ``locking.until_disconnect``).
"""

from __future__ import annotations

from aiohttp import web

from kvraft.apply.ops import DeleteRangeOp
from kvraft.server.api.codec import BYTES, INT64, Message
from kvraft.server.api.feature_state import FEATURES
from kvraft.server.api.locking import (
    ClientGone,
    Participant,
    client_errors,
    session_lease,
    until_disconnect,
)
from kvraft.server.api.request import header, read_request, respond

__all__ = ["ROUTES"]

LOCK = Message("v3lockpb.LockRequest", {"name": BYTES, "lease": INT64})
UNLOCK = Message("v3lockpb.UnlockRequest", {"key": BYTES})


async def _lock(request: web.Request) -> web.Response:
    out, fields = await read_request(request, LOCK)
    with client_errors():
        features = request.app[FEATURES]
        me = Participant(features.node, features.hub, fields["name"], await session_lease(features, fields["lease"]))
        await me.enter()
        try:
            await until_disconnect(request, me.wait_turn())
        except ClientGone:
            return web.Response(status=499)  # nobody reads it
        revision = features.store.rev
        return respond(out, {"header": header(request, out, revision), "key": out.b(me.key)})


async def _unlock(request: web.Request) -> web.Response:
    out, fields = await read_request(request, UNLOCK)
    with client_errors():
        result = await request.app[FEATURES].node.delete_range(DeleteRangeOp(fields["key"]))
        return respond(out, {"header": header(request, out, result.revision)})


ROUTES = {"/lock/lock": _lock, "/lock/unlock": _unlock}
