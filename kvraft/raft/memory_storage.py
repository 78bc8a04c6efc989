"""``MemoryLogStorage``: the reference ``WritableLogStorage``, held in memory.

Used by the simulator, the interaction harness and the tests. Everything written is
"durable" at once (``sync()`` does nothing); a simulator that models lost writes wraps it.

Layout: ``_entries[0]`` is a dummy entry standing for the snapshot (its index and term);
real entries follow contiguously::

    snapshot index 5, term 2; entries 6..8
    _entries = [Entry(2, 5) (dummy), Entry(2, 6), Entry(3, 7), Entry(3, 8)]
    first_index() == 6, last_index() == 8, term(5) == 2, entries(6, 9) -> 3 entries

Bootstrap (``MemoryLogStorage.bootstrap``): the initial membership is both the
``ConfState`` of an (empty, index 0) snapshot and a run of committed CONF_CHANGE entries at
indexes 1..n, term 1, one per member. Bootstrapped members start from the ConfState; a
member that joins later with an empty log learns the initial membership by applying those
entries (re-applying them on a bootstrapped member changes nothing).
"""

from __future__ import annotations

from collections.abc import Iterable

from kvraft.raft.storage import (
    CompactedError,
    SnapshotOutOfDateError,
    UnavailableError,
)
from kvraft.raft.types import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Snapshot,
    SnapshotMetadata,
)

__all__ = ["MemoryLogStorage", "entries_to_append", "limit_size"]


def entries_to_append(stored: list[Entry], entries: list[Entry]) -> list[Entry]:
    """The part of ``entries`` an append writes to a log holding ``stored`` (its first
    element the dummy entry at the snapshot index): checked for contiguity and gaps, and
    without what the snapshot already covers (empty when it covers all of it). The caller
    then replaces everything from the first returned index on."""
    if not entries:
        return []
    for prev, cur in zip(entries, entries[1:], strict=False):
        if cur.index != prev.index + 1:
            raise ValueError(f"entries not contiguous: {prev.index} then {cur.index}")
    first, last = entries[0].index, stored[-1].index
    if first > last + 1:
        raise ValueError(f"append at {first} leaves a gap after {last}")
    offset = stored[0].index
    if entries[-1].index <= offset:
        return []  # entirely covered by the snapshot
    return entries[offset + 1 - first :] if first <= offset else entries


def limit_size(entries: list[Entry], max_bytes: int | None) -> list[Entry]:
    """The longest prefix of ``entries`` within ``max_bytes`` (``Entry.size()``), but at
    least one entry when there is any."""
    if max_bytes is None or not entries:
        return entries
    total = entries[0].size()
    for i in range(1, len(entries)):
        total += entries[i].size()
        if total > max_bytes:
            return entries[:i]
    return entries


class MemoryLogStorage:
    """In-memory ``WritableLogStorage``; see the module docstring for its layout."""

    def __init__(self) -> None:
        self._hard_state = HardState()
        self._snapshot = Snapshot()
        self._entries: list[Entry] = [Entry(term=0, index=0)]

    @classmethod
    def bootstrap(cls, voters: Iterable[int], learners: Iterable[int] = ()) -> MemoryLogStorage:
        """A storage for a founding member of a new cluster with this membership."""
        voter_ids = sorted(set(voters))
        learner_ids = sorted(set(learners))
        if not voter_ids:
            raise ValueError("bootstrap needs at least one voter")
        if any(n <= 0 for n in voter_ids + learner_ids):
            raise ValueError("node ids must be positive")
        if set(voter_ids) & set(learner_ids):
            raise ValueError("a node cannot be both voter and learner")
        storage = cls()
        conf = ConfState(voters=frozenset(voter_ids), learners=frozenset(learner_ids))
        storage._snapshot = Snapshot(metadata=SnapshotMetadata(index=0, term=0, conf_state=conf))
        changes = [(ConfChangeType.ADD_VOTER, n) for n in voter_ids]
        changes += [(ConfChangeType.ADD_LEARNER, n) for n in learner_ids]
        for i, change in enumerate(changes, start=1):
            data = ConfChange(changes=(change,)).encode()
            storage._entries.append(Entry(term=1, index=i, type=EntryType.CONF_CHANGE, data=data))
        storage._hard_state = HardState(term=1, vote=0, commit=len(changes))
        return storage

    # -- read side (LogStorage) -------------------------------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self._hard_state, self._snapshot.metadata.conf_state

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        offset = self._entries[0].index
        if lo <= offset:
            raise CompactedError(f"entries from {lo}: compacted up to {offset}")
        if hi > self.last_index() + 1:
            raise UnavailableError(f"entries up to {hi - 1}: last index is {self.last_index()}")
        if lo >= hi:
            return []
        return limit_size(self._entries[lo - offset : hi - offset], max_bytes)

    def term(self, index: int) -> int:
        offset = self._entries[0].index
        if index < offset:
            raise CompactedError(f"term of {index}: compacted up to {offset}")
        if index > self.last_index():
            raise UnavailableError(f"term of {index}: last index is {self.last_index()}")
        return self._entries[index - offset].term

    def first_index(self) -> int:
        return self._entries[0].index + 1

    def last_index(self) -> int:
        return self._entries[0].index + len(self._entries) - 1

    def snapshot(self) -> Snapshot:
        return self._snapshot

    # -- write side (WritableLogStorage) ----------------------------------------------

    def append(self, entries: list[Entry]) -> None:
        entries = entries_to_append(self._entries, entries)
        if entries:
            del self._entries[entries[0].index - self._entries[0].index :]
            self._entries.extend(entries)

    def set_hard_state(self, hard_state: HardState) -> None:
        self._hard_state = hard_state

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        meta = snapshot.metadata
        if meta.index <= self._snapshot.metadata.index:
            raise SnapshotOutOfDateError(
                f"snapshot at {meta.index} is not newer than {self._snapshot.metadata.index}"
            )
        keep: list[Entry] = []
        offset = self._entries[0].index
        if offset < meta.index <= self.last_index() and self.term(meta.index) == meta.term:
            keep = self._entries[meta.index - offset + 1 :]
        self._snapshot = snapshot
        self._entries = [Entry(term=meta.term, index=meta.index), *keep]

    def create_snapshot(self, index: int, conf_state: ConfState, data: bytes) -> Snapshot:
        if index <= self._snapshot.metadata.index:
            raise SnapshotOutOfDateError(
                f"snapshot at {index} is not newer than {self._snapshot.metadata.index}"
            )
        if index > self.last_index():
            raise UnavailableError(f"snapshot at {index}: last index is {self.last_index()}")
        meta = SnapshotMetadata(index=index, term=self.term(index), conf_state=conf_state)
        self._snapshot = Snapshot(metadata=meta, data=data)
        return self._snapshot

    def compact(self, compact_index: int) -> None:
        offset = self._entries[0].index
        if compact_index <= offset:
            return
        if compact_index > self._snapshot.metadata.index:
            raise ValueError(
                f"compact to {compact_index}: not covered by the snapshot at "
                f"{self._snapshot.metadata.index}"
            )
        if compact_index > self.last_index():
            # an append truncated the log below the snapshot index: the entries to compact
            # to are gone, and so is the term the new first entry would need (as LmdbLogStorage)
            raise UnavailableError(f"compact to {compact_index}: last index is {self.last_index()}")
        i = compact_index - offset
        self._entries = [
            Entry(term=self._entries[i].term, index=compact_index),
            *self._entries[i + 1 :],
        ]

    def sync(self) -> None:
        return None
