"""etcd's MVCC key-value store: revisions, the key index, views, requests, compaction.

Public surface: ``MVCCStore`` (LMDB), ``MemoryKV`` (the in-memory reference model),
the request/result value types, and the errors (each with etcd's message and gRPC code).
"""

from kvraft.storage.mvcc.compaction import CompactionJob
from kvraft.storage.mvcc.errors import (
    BatchAbortedError,
    CompactedRevisionError,
    DuplicateKeyError,
    EmptyKeyError,
    FutureRevisionError,
    InvalidSortOptionError,
    KeyNotFoundError,
    LeaseNotFoundError,
    LeaseProvidedError,
    MVCCError,
    NoSpaceError,
    TooManyOpsError,
    ValueProvidedError,
)
from kvraft.storage.mvcc.model import MemoryKV
from kvraft.storage.mvcc.store import MVCCStore
from kvraft.storage.mvcc.types import (
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    DeleteRangeResult,
    Event,
    EventType,
    HashKVResult,
    KeyValue,
    PutRequest,
    PutResult,
    RangeRequest,
    RangeResult,
    SortOrder,
    SortTarget,
    TxnRequest,
    TxnResult,
)

__all__ = [
    "BatchAbortedError",
    "CompactedRevisionError",
    "CompactionJob",
    "Compare",
    "CompareResult",
    "CompareTarget",
    "DeleteRangeRequest",
    "DeleteRangeResult",
    "DuplicateKeyError",
    "EmptyKeyError",
    "Event",
    "EventType",
    "FutureRevisionError",
    "HashKVResult",
    "InvalidSortOptionError",
    "KeyNotFoundError",
    "KeyValue",
    "LeaseNotFoundError",
    "LeaseProvidedError",
    "MVCCError",
    "MVCCStore",
    "MemoryKV",
    "NoSpaceError",
    "PutRequest",
    "PutResult",
    "RangeRequest",
    "RangeResult",
    "SortOrder",
    "SortTarget",
    "TooManyOpsError",
    "TxnRequest",
    "TxnResult",
    "ValueProvidedError",
]
