"""Emit-defaults JSON: gateway answers with every field of their message, zero values included.

etcd's gateway leaves out every field that holds its type's zero value (the proto3 JSON
rule), so a failed txn has no ``succeeded``, the first watch's answers no ``watch_id``, a
put event no ``type``, a lease that has expired no ``TTL`` (etcd-io/etcd#10743,
grpc-ecosystem/grpc-gateway#233). With ``--gateway-emit-defaults``, or per request with the
header ``Kvraft-Emit-Defaults: true`` (``false`` turns the flag off for one request), a JSON
answer carries them all, as grpc-gateway v2's ``EmitUnpopulated`` (etcd 3.6's marshaler)
writes them: 64-bit integers ``"0"``, ``uint32`` ``0``, ``false``, ``""`` for strings and
bytes, an enum's zero name (``"PUT"``, ``"READ"``), ``[]`` for a repeated field, ``null`` for
a message that is not set; a member of a ``oneof`` that is not set stays out. Fields come in
the message's declaration order, followed by any the message does not declare.

The messages are those of etcd 3.4's ``rpc.proto``, ``kv.proto``, ``auth.proto``,
``v3lock.proto`` and ``v3election.proto`` (plus ``AuthStatusResponse`` of 3.5), the version
kvraft's gateway answers as. Error answers and msgpack answers are unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from kvraft.apply.errors import InvalidArgument
from kvraft.server.api.grpc_stats import gateway_route, method_for

__all__ = ["HEADER", "MESSAGE", "fill", "filler", "message_for", "wants_defaults"]

HEADER = "Kvraft-Emit-Defaults"
MESSAGE = web.RequestKey("kvraft.emit_defaults", str)
"""Set on a request whose JSON answers are filled: the message they are."""

# field kinds: a scalar's JSON zero value, or a message / an enum / a repeated field / a oneof member
_I64 = "0"
_U32 = 0
_BOOL = False
_STR = ""


class _Msg:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


class _Enum:
    __slots__ = ("zero",)

    def __init__(self, zero: str) -> None:
        self.zero = zero


class _Repeated:
    __slots__ = ("item",)

    def __init__(self, item: Any) -> None:
        self.item = item


class _OneOf:
    __slots__ = ("item",)

    def __init__(self, item: Any) -> None:
        self.item = item


_HEADER_FIELD = ("header", _Msg("ResponseHeader"))
_KV = _Msg("KeyValue")
_MEMBERS = ("members", _Repeated(_Msg("Member")))

MESSAGES: dict[str, tuple[tuple[str, Any], ...]] = {
    "ResponseHeader": (("cluster_id", _I64), ("member_id", _I64), ("revision", _I64), ("raft_term", _I64)),
    "KeyValue": (
        ("key", _STR), ("create_revision", _I64), ("mod_revision", _I64), ("version", _I64), ("value", _STR),
        ("lease", _I64),
    ),
    "Event": (("type", _Enum("PUT")), ("kv", _KV), ("prev_kv", _KV)),
    "RangeResponse": (_HEADER_FIELD, ("kvs", _Repeated(_KV)), ("more", _BOOL), ("count", _I64)),
    "PutResponse": (_HEADER_FIELD, ("prev_kv", _KV)),
    "DeleteRangeResponse": (_HEADER_FIELD, ("deleted", _I64), ("prev_kvs", _Repeated(_KV))),
    "ResponseOp": (
        ("response_range", _OneOf(_Msg("RangeResponse"))), ("response_put", _OneOf(_Msg("PutResponse"))),
        ("response_delete_range", _OneOf(_Msg("DeleteRangeResponse"))), ("response_txn", _OneOf(_Msg("TxnResponse"))),
    ),
    "TxnResponse": (_HEADER_FIELD, ("succeeded", _BOOL), ("responses", _Repeated(_Msg("ResponseOp")))),
    "CompactionResponse": (_HEADER_FIELD,),
    "HashResponse": (_HEADER_FIELD, ("hash", _U32)),
    "HashKVResponse": (_HEADER_FIELD, ("hash", _U32), ("compact_revision", _I64)),
    "SnapshotResponse": (_HEADER_FIELD, ("remaining_bytes", _I64), ("blob", _STR)),
    "WatchResponse": (
        _HEADER_FIELD, ("watch_id", _I64), ("created", _BOOL), ("canceled", _BOOL), ("compact_revision", _I64),
        ("cancel_reason", _STR), ("fragment", _BOOL), ("events", _Repeated(_Msg("Event"))),
    ),
    "LeaseGrantResponse": (_HEADER_FIELD, ("ID", _I64), ("TTL", _I64), ("error", _STR)),
    "LeaseRevokeResponse": (_HEADER_FIELD,),
    "LeaseKeepAliveResponse": (_HEADER_FIELD, ("ID", _I64), ("TTL", _I64)),
    "LeaseTimeToLiveResponse": (
        _HEADER_FIELD, ("ID", _I64), ("TTL", _I64), ("grantedTTL", _I64), ("keys", _Repeated(_STR)),
    ),
    "LeaseStatus": (("ID", _I64),),
    "LeaseLeasesResponse": (_HEADER_FIELD, ("leases", _Repeated(_Msg("LeaseStatus")))),
    "Member": (
        ("ID", _I64), ("name", _STR), ("peerURLs", _Repeated(_STR)), ("clientURLs", _Repeated(_STR)),
        ("isLearner", _BOOL),
    ),
    "MemberAddResponse": (_HEADER_FIELD, ("member", _Msg("Member")), _MEMBERS),
    "MemberRemoveResponse": (_HEADER_FIELD, _MEMBERS),
    "MemberUpdateResponse": (_HEADER_FIELD, _MEMBERS),
    "MemberListResponse": (_HEADER_FIELD, _MEMBERS),
    "MemberPromoteResponse": (_HEADER_FIELD, _MEMBERS),
    "DefragmentResponse": (_HEADER_FIELD,),
    "MoveLeaderResponse": (_HEADER_FIELD,),
    "AlarmMember": (("memberID", _I64), ("alarm", _Enum("NONE"))),
    "AlarmResponse": (_HEADER_FIELD, ("alarms", _Repeated(_Msg("AlarmMember")))),
    "StatusResponse": (
        _HEADER_FIELD, ("version", _STR), ("dbSize", _I64), ("leader", _I64), ("raftIndex", _I64),
        ("raftTerm", _I64), ("raftAppliedIndex", _I64), ("errors", _Repeated(_STR)), ("dbSizeInUse", _I64),
        ("isLearner", _BOOL),
    ),
    "AuthStatusResponse": (_HEADER_FIELD, ("enabled", _BOOL), ("authRevision", _I64)),
    "AuthenticateResponse": (_HEADER_FIELD, ("token", _STR)),
    "AuthUserGetResponse": (_HEADER_FIELD, ("roles", _Repeated(_STR))),
    "Permission": (("permType", _Enum("READ")), ("key", _STR), ("range_end", _STR)),
    "AuthRoleGetResponse": (_HEADER_FIELD, ("perm", _Repeated(_Msg("Permission")))),
    "AuthRoleListResponse": (_HEADER_FIELD, ("roles", _Repeated(_STR))),
    "AuthUserListResponse": (_HEADER_FIELD, ("users", _Repeated(_STR))),
    "HeaderOnly": (_HEADER_FIELD,),  # every Auth*Response not above, Unlock, Proclaim, Resign
    "LockResponse": (_HEADER_FIELD, ("key", _STR)),
    "LeaderKey": (("name", _STR), ("key", _STR), ("rev", _I64), ("lease", _I64)),
    "CampaignResponse": (_HEADER_FIELD, ("leader", _Msg("LeaderKey"))),
    "LeaderResponse": (_HEADER_FIELD, ("kv", _KV)),
}  # fmt: skip

_BY_METHOD = {
    "Range": "RangeResponse", "Put": "PutResponse", "DeleteRange": "DeleteRangeResponse", "Txn": "TxnResponse",
    "Compact": "CompactionResponse", "Watch": "WatchResponse", "LeaseGrant": "LeaseGrantResponse",
    "LeaseRevoke": "LeaseRevokeResponse", "LeaseKeepAlive": "LeaseKeepAliveResponse",
    "LeaseTimeToLive": "LeaseTimeToLiveResponse", "LeaseLeases": "LeaseLeasesResponse",
    "MemberAdd": "MemberAddResponse", "MemberRemove": "MemberRemoveResponse", "MemberUpdate": "MemberUpdateResponse",
    "MemberList": "MemberListResponse", "MemberPromote": "MemberPromoteResponse", "Alarm": "AlarmResponse",
    "Status": "StatusResponse", "Defragment": "DefragmentResponse", "Hash": "HashResponse",
    "HashKV": "HashKVResponse", "Snapshot": "SnapshotResponse", "MoveLeader": "MoveLeaderResponse",
    "Lock": "LockResponse", "Unlock": "HeaderOnly", "Campaign": "CampaignResponse", "Proclaim": "HeaderOnly",
    "Leader": "LeaderResponse", "Observe": "LeaderResponse", "Resign": "HeaderOnly",
    "AuthStatus": "AuthStatusResponse", "Authenticate": "AuthenticateResponse", "UserGet": "AuthUserGetResponse",
    "UserList": "AuthUserListResponse", "RoleGet": "AuthRoleGetResponse", "RoleList": "AuthRoleListResponse",
}  # fmt: skip
_AUTH_HEADER_ONLY = (
    "AuthEnable", "AuthDisable", "UserAdd", "UserDelete", "UserChangePassword", "UserGrantRole", "UserRevokeRole",
    "RoleAdd", "RoleDelete", "RoleGrantPermission", "RoleRevokePermission",
)  # fmt: skip
_BY_PATH = {"/kvraft/kv/rangestream": "RangeResponse"}  # kvraft's own routes in an etcd message's shape


def message_for(path: str) -> str | None:
    """The response message a gateway path (``/v3/...``, ``/v3beta/...``) answers with;
    ``None`` for a path answered in another shape (kvraft's token routes, ``/version``)."""
    method = method_for(path)
    if method is not None:
        name = method[2]
        return "HeaderOnly" if name in _AUTH_HEADER_ONLY else _BY_METHOD.get(name)
    route = gateway_route(path)
    return _BY_PATH.get(route) if route is not None else None


def wants_defaults(headers: Any, default: bool) -> bool:
    """The request's ``Kvraft-Emit-Defaults`` header (``true``/``false``, as Go's
    ``strconv.ParseBool`` spells them), else the member's ``--gateway-emit-defaults``."""
    value = headers.get(HEADER)
    if value is None:
        return default
    text = value.strip()
    if text in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if text in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    raise InvalidArgument(f"{HEADER}: want true or false, got {value!r}")


def fill(message: str, doc: Any) -> Any:
    """``doc`` (a decoded JSON answer of ``message``) with every unset field at its zero value."""
    if not isinstance(doc, dict):
        return doc
    out: dict[str, Any] = {}
    for name, kind in MESSAGES[message]:
        if name in doc:
            out[name] = _value(kind, doc[name])
        elif not isinstance(kind, _OneOf):
            out[name] = _zero(kind)
    for name, value in doc.items():
        if name not in out:
            out[name] = value
    return out


def _value(kind: Any, value: Any) -> Any:
    if isinstance(kind, _OneOf):
        return _value(kind.item, value)
    if isinstance(kind, _Msg):
        return fill(kind.name, value) if value is not None else None
    if isinstance(kind, _Repeated) and isinstance(value, list):
        return [_value(kind.item, item) for item in value]
    return value


def _zero(kind: Any) -> Any:
    if isinstance(kind, _Msg):
        return None
    if isinstance(kind, _Enum):
        return kind.zero
    if isinstance(kind, _Repeated):
        return []
    return kind


def filler(request: web.Request) -> Callable[[Any], Any] | None:
    """For a stream's ``Sink``: how to fill each message of this request's answer, or ``None``."""
    message = request.get(MESSAGE)
    if message is None:
        return None
    return lambda doc: fill(message, doc)
