"""``/v3/election/*`` (etcd's v3election service): campaign, proclaim, leader, observe,
resign. A ``LeaderKey`` is ``{"name", "key", "rev", "lease"}``: the election, the
leader's own key, its create revision and its lease."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from kvraft.apply.errors import EtcdError, InvalidArgument
from kvraft.apply.ops import CREATE, EQUAL, Compare, DeleteRangeOp, PutOp, RangeOp, TxnOp
from kvraft.server.api.codec import BYTES, INT64, JSON_OUT, MSGPACK, MSGPACK_OUT, Message, Out
from kvraft.server.api.encode import encode_kv
from kvraft.server.api.feature_state import FEATURES
from kvraft.server.api.locking import (
    SORT_ASCEND,
    SORT_BY_CREATE,
    ClientGone,
    Participant,
    client_errors,
    prefix_end,
    session_lease,
    until_disconnect,
)
from kvraft.server.api.request import header, read_request, respond
from kvraft.server.api.stream import open_stream
from kvraft.server.api.watch import next_response
from kvraft.watch import WatchCreate

__all__ = ["ROUTES"]

LEADER_KEY = Message("v3electionpb.LeaderKey", {"name": BYTES, "key": BYTES, "rev": INT64, "lease": INT64})
CAMPAIGN = Message("v3electionpb.CampaignRequest", {"name": BYTES, "lease": INT64, "value": BYTES})
PROCLAIM = Message("v3electionpb.ProclaimRequest", {"leader": LEADER_KEY, "value": BYTES})
LEADER = Message("v3electionpb.LeaderRequest", {"name": BYTES})
RESIGN = Message("v3electionpb.ResignRequest", {"leader": LEADER_KEY})


def _leader_field(leader: dict[str, Any] | None) -> dict[str, Any]:
    if leader is None:
        raise InvalidArgument('"leader" field must be provided')
    return leader


async def _campaign(request: web.Request) -> web.Response:
    out, fields = await read_request(request, CAMPAIGN)
    with client_errors():
        features = request.app[FEATURES]
        me = Participant(features.node, features.hub, fields["name"], await session_lease(features, fields["lease"]))
        entered = await me.enter(fields["value"])  # etcd answers with the header of this txn
        if me.value != fields["value"]:
            await _proclaim_as(features.node, me.key, me.rev, me.lease, fields["value"])
        try:
            await until_disconnect(request, me.wait_turn())
        except ClientGone:
            return web.Response(status=499)  # nobody reads it
        leader = {"name": out.b(fields["name"]), "key": out.b(me.key), "rev": out.i(me.rev), "lease": out.i(me.lease)}
        return respond(out, {"header": header(request, out, entered), "leader": leader})


async def _proclaim_as(node: Any, key: bytes, rev: int, lease: int, value: bytes) -> int:
    txn = TxnOp(compare=[Compare(EQUAL, CREATE, key, create_revision=rev)], success=[PutOp(key, value, lease)])
    result = await node.txn(txn)
    if not result.succeeded:
        raise EtcdError("election: not leader")
    revision: int = result.revision  # the txn's TxnResult
    return revision


async def _proclaim(request: web.Request) -> web.Response:
    out, fields = await read_request(request, PROCLAIM)
    with client_errors():
        leader = _leader_field(fields["leader"])
        features = request.app[FEATURES]
        revision = await _proclaim_as(features.node, leader["key"], leader["rev"], leader["lease"], fields["value"])
        return respond(out, {"header": header(request, out, revision)})


async def _current_leader(node: Any, name: bytes) -> tuple[Any, int]:
    prefix = name + b"/"
    result = await node.range(RangeOp(prefix, prefix_end(prefix), limit=1, sort_order=SORT_ASCEND,
                                      sort_target=SORT_BY_CREATE))
    return (result.kvs[0] if result.kvs else None), result.revision


async def _leader(request: web.Request) -> web.Response:
    out, fields = await read_request(request, LEADER)
    with client_errors():
        features = request.app[FEATURES]
        features.check_election_read(fields["name"])
        kv, revision = await _current_leader(features.node, fields["name"])
        if kv is None:
            raise EtcdError("election: no leader")
        return respond(out, {"header": header(request, out, revision), "kv": encode_kv(out, kv)})


async def _observe(request: web.Request) -> web.StreamResponse:
    out: Out = MSGPACK_OUT if request.content_type == MSGPACK else JSON_OUT
    _, fields = await read_request(request, LEADER)
    features = request.app[FEATURES]
    features.check_election_read(fields["name"])
    sink = await open_stream(request, out, heartbeats=True)
    prefix = fields["name"] + b"/"
    stream = features.hub.open()
    last: tuple[bytes, int] | None = None
    try:
        kv, revision = await _current_leader(features.node, fields["name"])
        stream.create(WatchCreate(prefix, prefix_end(prefix), start_revision=revision + 1))
        while True:
            if kv is not None and (kv.key, kv.mod_revision) != last:
                last = (kv.key, kv.mod_revision)
                await sink.send({"header": header(request, out, revision), "kv": encode_kv(out, kv)})
            response = await next_response(request, stream, sink)  # (heartbeats while quiet)
            if response is None or response.canceled:
                break
            if response.events:
                kv, revision = await _current_leader(features.node, fields["name"])
    except (ConnectionResetError, ClientGone, EtcdError):
        pass
    finally:
        stream.close()
    assert sink.response is not None
    return sink.response


async def _resign(request: web.Request) -> web.Response:
    out, fields = await read_request(request, RESIGN)
    with client_errors():
        leader = _leader_field(fields["leader"])
        features = request.app[FEATURES]
        txn = TxnOp(compare=[Compare(EQUAL, CREATE, leader["key"], create_revision=leader["rev"])],
                    success=[DeleteRangeOp(leader["key"])])
        result = await features.node.txn(txn)
        return respond(out, {"header": header(request, out, result.revision)})


ROUTES = {
    "/election/campaign": _campaign,
    "/election/proclaim": _proclaim,
    "/election/leader": _leader,
    "/election/observe": _observe,
    "/election/resign": _resign,
}
