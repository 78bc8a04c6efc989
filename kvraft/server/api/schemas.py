"""Request schemas: the subset of etcd's ``rpc.proto`` the gateway routes accept.

Field names are the proto names (what the gateway uses): snake_case for KV, camelCase
(``ID``, ``peerURLs``, ``isLearner``, ``targetID``) for cluster and maintenance.
KV schemas build the typed ops of ``kvraft.apply.ops``; the others yield plain dicts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from kvraft.apply.ops import CompactOp, Compare, DeleteRangeOp, PutOp, RangeOp, TxnOp
from kvraft.server.api.codec import BOOL, BYTES, INT64, STRING, UINT64, Enum, Message, Repeated

__all__ = [
    "ALARM",
    "COMPACTION",
    "DELETE_RANGE",
    "EMPTY",
    "HASH_KV",
    "MEMBER_ADD",
    "MEMBER_ID",
    "MEMBER_LIST",
    "MEMBER_UPDATE",
    "MOVE_LEADER",
    "PUT",
    "RANGE",
    "RANGE_STREAM",
    "TXN",
]

SORT_ORDER = Enum("etcdserverpb.RangeRequest_SortOrder", {"NONE": 0, "ASCEND": 1, "DESCEND": 2})
SORT_TARGET = Enum(
    "etcdserverpb.RangeRequest_SortTarget",
    {"KEY": 0, "VERSION": 1, "CREATE": 2, "MOD": 3, "VALUE": 4},
)
COMPARE_RESULT = Enum(
    "etcdserverpb.Compare_CompareResult", {"EQUAL": 0, "GREATER": 1, "LESS": 2, "NOT_EQUAL": 3}
)
COMPARE_TARGET = Enum(
    "etcdserverpb.Compare_CompareTarget",
    {"VERSION": 0, "CREATE": 1, "MOD": 2, "VALUE": 3, "LEASE": 4},
)
ALARM_ACTION = Enum("etcdserverpb.AlarmRequest_AlarmAction", {"GET": 0, "ACTIVATE": 1, "DEACTIVATE": 2})
ALARM_TYPE = Enum("etcdserverpb.AlarmType", {"NONE": 0, "NOSPACE": 1, "CORRUPT": 2})


_Op = TypeVar("_Op")


def _build(cls: Callable[..., _Op]) -> Callable[[dict[str, Any]], _Op]:
    return lambda fields: cls(**fields)


RANGE = Message(
    "etcdserverpb.RangeRequest",
    {
        "key": BYTES,
        "range_end": BYTES,
        "limit": INT64,
        "revision": INT64,
        "sort_order": SORT_ORDER,
        "sort_target": SORT_TARGET,
        "serializable": BOOL,
        "keys_only": BOOL,
        "count_only": BOOL,
        "min_mod_revision": INT64,
        "max_mod_revision": INT64,
        "min_create_revision": INT64,
        "max_create_revision": INT64,
    },
    _build(RangeOp),
)
def _range_stream(fields: dict[str, Any]) -> tuple[RangeOp, int]:
    page_size = fields.pop("page_size", 0)
    return RangeOp(**fields), page_size


RANGE_STREAM = Message("kvraft.RangeStreamRequest", {**RANGE.fields, "page_size": INT64}, _range_stream)
"""kvraft's streamed range (``/v3/kvraft/kv/rangestream``): a RangeRequest and ``page_size``."""
PUT = Message(
    "etcdserverpb.PutRequest",
    {
        "key": BYTES,
        "value": BYTES,
        "lease": INT64,
        "prev_kv": BOOL,
        "ignore_value": BOOL,
        "ignore_lease": BOOL,
    },
    _build(PutOp),
)
DELETE_RANGE = Message(
    "etcdserverpb.DeleteRangeRequest",
    {"key": BYTES, "range_end": BYTES, "prev_kv": BOOL},
    _build(DeleteRangeOp),
)
COMPARE = Message(
    "etcdserverpb.Compare",
    {
        "result": COMPARE_RESULT,
        "target": COMPARE_TARGET,
        "key": BYTES,
        "version": INT64,
        "create_revision": INT64,
        "mod_revision": INT64,
        "value": BYTES,
        "lease": INT64,
        "range_end": BYTES,
    },
    _build(Compare),
)


def _request_op(fields: dict[str, Any]) -> object:
    for name in ("request_range", "request_put", "request_delete_range", "request_txn"):
        if fields[name] is not None:
            return fields[name]
    return None  # an empty RequestOp: rejected by validation ("key not found")


REQUEST_OP = Message("etcdserverpb.RequestOp", {}, _request_op)
TXN = Message("etcdserverpb.TxnRequest", {}, _build(TxnOp))
REQUEST_OP.fields.update(
    request_range=RANGE, request_put=PUT, request_delete_range=DELETE_RANGE, request_txn=TXN
)
TXN.fields.update(compare=Repeated(COMPARE), success=Repeated(REQUEST_OP), failure=Repeated(REQUEST_OP))

COMPACTION = Message(
    "etcdserverpb.CompactionRequest", {"revision": INT64, "physical": BOOL}, _build(CompactOp)
)

EMPTY = Message("etcdserverpb.Empty", {})
MEMBER_ADD = Message(
    "etcdserverpb.MemberAddRequest", {"peerURLs": Repeated(STRING), "isLearner": BOOL}
)
MEMBER_ID = Message("etcdserverpb.MemberIDRequest", {"ID": UINT64})
MEMBER_UPDATE = Message(
    "etcdserverpb.MemberUpdateRequest", {"ID": UINT64, "peerURLs": Repeated(STRING)}
)
MEMBER_LIST = Message("etcdserverpb.MemberListRequest", {"linearizable": BOOL})
HASH_KV = Message("etcdserverpb.HashKVRequest", {"revision": INT64})
ALARM = Message(
    "etcdserverpb.AlarmRequest",
    {"action": ALARM_ACTION, "memberID": UINT64, "alarm": ALARM_TYPE},
)
MOVE_LEADER = Message("etcdserverpb.MoveLeaderRequest", {"targetID": UINT64})
