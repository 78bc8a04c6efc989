"""Errors of the storage layer that are not MVCC request outcomes.

The tree::

    StorageCorruptionError     a record failed its checksum or could not be decoded; the
     |                         data on disk is not what was written (never silently used)
     +-- LogCorruptionError    in the Raft log; ``index`` names the entry (or 0 for state)
     +-- KVCorruptionError     in the MVCC key bucket; ``revision`` names the record
     +-- SnapshotCorruptionError  a snapshot stream failed its frame or whole-stream check

    BatchAbortedError          a write batch of the state-machine backend failed part-way
                               and was rolled back (re-exported by ``mvcc.errors``)

Corruption is not an expected outcome: a member that sees one must stop serving from the
damaged store (etcd raises its CORRUPT alarm). The errors carry enough to say where.
"""

from __future__ import annotations

__all__ = [
    "BatchAbortedError",
    "KVCorruptionError",
    "LogCorruptionError",
    "SnapshotCorruptionError",
    "StorageCorruptionError",
]


class StorageCorruptionError(RuntimeError):
    """Bytes on disk do not match their checksum, or do not decode."""


class LogCorruptionError(StorageCorruptionError):
    """A Raft log record is corrupt. ``index`` is the entry index (0: hard/conf state or
    snapshot record, named in the message)."""

    def __init__(self, index: int, detail: str) -> None:
        where = f"raft log entry {index}" if index else "raft log state record"
        super().__init__(f"corrupt {where}: {detail}")
        self.index = index
        self.detail = detail


class KVCorruptionError(StorageCorruptionError):
    """A record of the MVCC key bucket is corrupt. ``revision`` is ``(main, sub)``."""

    def __init__(self, revision: tuple[int, int], detail: str) -> None:
        super().__init__(f"corrupt mvcc record at revision {revision[0]}.{revision[1]}: {detail}")
        self.revision = revision
        self.detail = detail


class SnapshotCorruptionError(StorageCorruptionError):
    """A snapshot stream is truncated or fails its checksums."""


class BatchAbortedError(RuntimeError):
    """A write batch failed after it had changed something (an LMDB error such as a full
    map, or a corrupt record read mid-batch). Everything in the batch was rolled back,
    the store is back at its last commit (``MVCCStore.rev``), and the caller must apply
    again every entry after ``MVCCStore.consistent_index``."""
