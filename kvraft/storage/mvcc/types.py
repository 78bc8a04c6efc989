"""Values of the MVCC interface: key-values, requests, results, events.

Requests carry the same field names (and enum numbers) as etcd's protobuf messages and as
``kvraft.apply.ops``, so any object with these attributes can be passed where a request
is expected. Every value here is immutable: the per-key and per-request values are
``NamedTuple``s (several times cheaper to build than frozen dataclasses, and a range of
a million keys builds a million of them); ``_replace`` makes a modified copy.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, NamedTuple, Union

__all__ = [
    "Compare",
    "CompareResult",
    "CompareTarget",
    "DeleteRangeRequest",
    "DeleteRangeResult",
    "Event",
    "EventType",
    "HashKVResult",
    "KeyValue",
    "PutRequest",
    "PutResult",
    "RangeRequest",
    "RangeResult",
    "RequestOp",
    "ResponseOp",
    "SortOrder",
    "SortTarget",
    "TxnRequest",
    "TxnResult",
]


class SortOrder(enum.IntEnum):
    NONE = 0
    ASCEND = 1
    DESCEND = 2


class SortTarget(enum.IntEnum):
    KEY = 0
    VERSION = 1
    CREATE = 2
    MOD = 3
    VALUE = 4


class CompareTarget(enum.IntEnum):
    VERSION = 0
    CREATE = 1
    MOD = 2
    VALUE = 3
    LEASE = 4


class CompareResult(enum.IntEnum):
    EQUAL = 0
    GREATER = 1
    LESS = 2
    NOT_EQUAL = 3


class KeyValue(NamedTuple):
    """etcd's ``mvccpb.KeyValue``. ``version`` counts puts since creation (1 on create);
    ``lease`` 0 means none. A deleted key appears in DELETE events as ``key`` and
    ``mod_revision`` (the deletion's revision) only."""

    key: bytes
    create_revision: int = 0
    mod_revision: int = 0
    version: int = 0
    value: bytes = b""
    lease: int = 0


class RangeRequest(NamedTuple):
    """``range_end``: b"" = the single ``key``; b"\\0" = every key >= ``key``; otherwise
    ``[key, range_end)`` (``key`` b"\\0" with ``range_end`` b"\\0" = every key)."""

    key: bytes
    range_end: bytes = b""
    limit: int = 0
    revision: int = 0
    sort_order: int = SortOrder.NONE
    sort_target: int = SortTarget.KEY
    serializable: bool = False
    keys_only: bool = False
    count_only: bool = False
    min_mod_revision: int = 0
    max_mod_revision: int = 0
    min_create_revision: int = 0
    max_create_revision: int = 0
    no_count: bool = False
    """Leave ``count`` 0 and stop the scan at ``limit`` (``RangeOp.no_count``: a streamed
    range's later pages)."""


class PutRequest(NamedTuple):
    key: bytes
    value: bytes = b""
    lease: int = 0
    prev_kv: bool = False
    ignore_value: bool = False
    ignore_lease: bool = False


class DeleteRangeRequest(NamedTuple):
    key: bytes
    range_end: bytes = b""
    prev_kv: bool = False


class Compare(NamedTuple):
    """One txn guard. Only the field named by ``target`` is compared. ``range_end`` as in
    RangeRequest: every key in the range must satisfy it (a missing key compares as a
    zero KeyValue, except that a VALUE compare on a missing key is always false)."""

    result: int = CompareResult.EQUAL
    target: int = CompareTarget.VERSION
    key: bytes = b""
    version: int = 0
    create_revision: int = 0
    mod_revision: int = 0
    value: bytes = b""
    lease: int = 0
    range_end: bytes = b""


class TxnRequest(NamedTuple):
    compare: tuple[Compare, ...] | list[Any] = ()
    success: tuple[RequestOp, ...] | list[Any] = ()
    failure: tuple[RequestOp, ...] | list[Any] = ()


RequestOp = Union[RangeRequest, PutRequest, DeleteRangeRequest, TxnRequest]  # noqa: UP007


class RangeResult(NamedTuple):
    kvs: tuple[KeyValue, ...] = ()
    more: bool = False
    count: int = 0  # type: ignore[assignment]  # the field shadows tuple.count, on purpose
    revision: int = 0
    """The header revision: the store's revision when the range ran (not ``revision``
    asked for)."""


class PutResult(NamedTuple):
    revision: int = 0
    prev_kv: KeyValue | None = None


class DeleteRangeResult(NamedTuple):
    revision: int = 0
    deleted: int = 0
    prev_kvs: tuple[KeyValue, ...] = ()


class TxnResult(NamedTuple):
    """``revision`` is the header revision; 0 for a nested txn (etcd leaves a nested
    txn's header empty)."""

    revision: int = 0
    succeeded: bool = False
    responses: tuple[ResponseOp, ...] = ()


ResponseOp = Union[RangeResult, PutResult, DeleteRangeResult, TxnResult]  # noqa: UP007


@dataclass(frozen=True, slots=True)
class HashKVResult:
    hash: int
    """crc32 (zlib, IEEE polynomial) of the key bucket's records, as etcd's HashKV."""
    compact_revision: int
    """The compaction point (-1 if never compacted), as etcd reports it."""
    hash_revision: int
    revision: int
    """The header revision (current)."""


class EventType(enum.IntEnum):
    PUT = 0
    DELETE = 1


class Event(NamedTuple):
    type: EventType
    kv: KeyValue
