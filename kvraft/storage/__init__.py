"""Storage: the durable Raft log and the MVCC state machine, on LMDB.

The only package that imports ``lmdb``. See ``docs/design/storage.md``.
"""

from kvraft.storage.backend import Backend
from kvraft.storage.errors import (
    KVCorruptionError,
    LogCorruptionError,
    SnapshotCorruptionError,
    StorageCorruptionError,
)
from kvraft.storage.mvcc import MemoryKV, MVCCStore
from kvraft.storage.quota import BackendQuota
from kvraft.storage.raft_log import LmdbLogStorage

__all__ = [
    "Backend",
    "BackendQuota",
    "KVCorruptionError",
    "LmdbLogStorage",
    "LogCorruptionError",
    "MVCCStore",
    "MemoryKV",
    "SnapshotCorruptionError",
    "StorageCorruptionError",
]
