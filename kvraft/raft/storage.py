"""The storage contract between the Raft core and a durable log.

The core only *reads* through ``LogStorage``; the node driver (or the simulator) *writes*,
following the Ready contract in ``types.Ready``. Two implementations exist:
``MemoryLogStorage`` (this package; the reference, used by the simulator and property tests)
and the LMDB log in ``kvraft.storage.raft_log``.

Errors::

    StorageError
     +-- CompactedError      the requested index predates the last snapshot
     +-- UnavailableError    the requested index is past the end of the log
     +-- SnapshotOutOfDateError  a snapshot older than the current one was offered

Threading: every method is called from one thread (the driver's), never concurrently.
Ownership: returned lists belong to the caller; entries are immutable values.
Sizes: ``max_bytes`` counts ``Entry.size()`` (payload plus a fixed overhead).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from kvraft.raft.types import ConfState, Entry, HardState, Snapshot

__all__ = [
    "CompactedError",
    "LogStorage",
    "SnapshotOutOfDateError",
    "StorageError",
    "UnavailableError",
    "WritableLogStorage",
]


class StorageError(Exception):
    """Base of the errors a LogStorage may raise as expected outcomes."""


class CompactedError(StorageError):
    """The index asked for is at or before the first index kept (compacted into a snapshot)."""


class UnavailableError(StorageError):
    """The index asked for is past the last index in the log."""


class SnapshotOutOfDateError(StorageError):
    """A snapshot at or before the current snapshot's index was offered."""


@runtime_checkable
class LogStorage(Protocol):
    """Read side, used by the core. Indexes follow the convention of etcd-io/raft:
    the log holds entries ``[first_index(), last_index()]``; ``term(first_index() - 1)``
    is the snapshot's term and is always answerable."""

    def initial_state(self) -> tuple[HardState, ConfState]:
        """The saved hard state and the membership as of the last snapshot or conf entry
        known to storage (the core replays conf entries after it itself).

        How the core uses it at start: term, vote and commit come from the hard state. The
        membership is rebuilt as of the applied index (``RaftConfig.applied``, at least the
        snapshot's index): from ``snapshot().metadata.conf_state`` plus the CONF_CHANGE
        entries after the snapshot up to the applied index. Only when there is no
        snapshot yet (index 0: a freshly bootstrapped log) is this ConfState used as the
        starting membership, as of ``first_index() - 1``."""
        ...

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries in ``[lo, hi)``. At least one entry is returned if any is in range, even
        when it alone exceeds ``max_bytes``. Raises CompactedError if ``lo <= snapshot
        index``, UnavailableError if ``hi > last_index() + 1``."""
        ...

    def term(self, index: int) -> int:
        """Term of the entry at ``index``, for ``first_index() - 1 <= index <=
        last_index()``. Raises CompactedError below, UnavailableError above."""
        ...

    def first_index(self) -> int:
        """Index of the first entry still held (snapshot index + 1)."""
        ...

    def last_index(self) -> int:
        """Index of the last entry held (the snapshot's index when the log is empty)."""
        ...

    def snapshot(self) -> Snapshot:
        """The most recent snapshot. Raises UnavailableError when one is being prepared
        and is not ready yet (the core retries later)."""
        ...


@runtime_checkable
class WritableLogStorage(LogStorage, Protocol):
    """Write side, used only by the driver while fulfilling a Ready."""

    def append(self, entries: list[Entry]) -> None:
        """Append, truncating any existing entries from ``entries[0].index`` on. Entries
        must be contiguous and ``entries[0].index <= last_index() + 1``."""
        ...

    def set_hard_state(self, hard_state: HardState) -> None: ...

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        """Replace the log with the snapshot (discarding entries it covers, and any after
        it whose term conflicts). Raises SnapshotOutOfDateError if not newer."""
        ...

    def create_snapshot(self, index: int, conf_state: ConfState, data: bytes) -> Snapshot:
        """Record a snapshot of the applied state at ``index`` (<= last applied)."""
        ...

    def compact(self, compact_index: int) -> None:
        """Discard entries up to and including ``compact_index`` (which must be covered by
        the current snapshot, i.e. ``<= snapshot index``)."""
        ...

    def sync(self) -> None:
        """Make everything written so far durable (one fsync / commit per batch)."""
        ...
