"""MemoryLogStorage follows the LogStorage / WritableLogStorage contract."""

from __future__ import annotations

import pytest

from kvraft.raft.memory_storage import MemoryLogStorage
from kvraft.raft.storage import (
    CompactedError,
    LogStorage,
    SnapshotOutOfDateError,
    UnavailableError,
    WritableLogStorage,
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


def filled(n: int) -> MemoryLogStorage:
    s = MemoryLogStorage()
    s.append([Entry(term=1 + i // 3, index=i, data=b"x" * i) for i in range(1, n + 1)])
    return s


def test_is_a_writable_log_storage() -> None:
    s = MemoryLogStorage()
    assert isinstance(s, LogStorage) and isinstance(s, WritableLogStorage)
    assert (s.first_index(), s.last_index(), s.term(0)) == (1, 0, 0)
    assert s.initial_state() == (HardState(), ConfState())


def test_bootstrap_records_members_as_state_and_as_conf_entries() -> None:
    s = MemoryLogStorage.bootstrap([3, 1, 2], learners=[4])
    hs, cs = s.initial_state()
    assert cs == ConfState(voters=frozenset({1, 2, 3}), learners=frozenset({4}))
    assert hs == HardState(term=1, vote=0, commit=4)
    entries = s.entries(1, 5)
    assert all(e.type == EntryType.CONF_CHANGE and e.term == 1 for e in entries)
    assert [ConfChange.decode(e.data).changes for e in entries] == [
        ((ConfChangeType.ADD_VOTER, 1),),
        ((ConfChangeType.ADD_VOTER, 2),),
        ((ConfChangeType.ADD_VOTER, 3),),
        ((ConfChangeType.ADD_LEARNER, 4),),
    ]
    with pytest.raises(ValueError):
        MemoryLogStorage.bootstrap([])
    with pytest.raises(ValueError):
        MemoryLogStorage.bootstrap([1], learners=[1])


def test_entries_bounds_and_size_limit() -> None:
    s = filled(6)
    assert [e.index for e in s.entries(2, 5)] == [2, 3, 4]
    assert [e.index for e in s.entries(2, 5, max_bytes=0)] == [2]
    limit = s.entries(2, 3)[0].size() + s.entries(3, 4)[0].size()
    assert [e.index for e in s.entries(2, 7, max_bytes=limit)] == [2, 3]
    with pytest.raises(UnavailableError):
        s.entries(5, 8)
    with pytest.raises(UnavailableError):
        s.term(7)


def test_append_truncates_conflicting_suffix_and_refuses_gaps() -> None:
    s = filled(6)
    s.append([Entry(term=9, index=4)])
    assert s.last_index() == 4 and s.term(4) == 9
    with pytest.raises(ValueError):
        s.append([Entry(term=9, index=6)])
    with pytest.raises(ValueError):
        s.append([Entry(term=9, index=5), Entry(term=9, index=7)])


def test_snapshot_compact_and_reads_below() -> None:
    s = filled(6)
    conf = ConfState(voters=frozenset({1}))
    snap = s.create_snapshot(4, conf, b"state")
    assert snap.metadata == SnapshotMetadata(index=4, term=2, conf_state=conf)
    s.compact(3)
    assert s.first_index() == 4 and s.term(3) == 2
    with pytest.raises(CompactedError):
        s.entries(3, 5)
    with pytest.raises(CompactedError):
        s.term(2)
    with pytest.raises(ValueError):
        s.compact(5)  # beyond the snapshot
    with pytest.raises(SnapshotOutOfDateError):
        s.create_snapshot(4, conf, b"")
    s.append([Entry(term=1, index=2)])  # entirely compacted: ignored
    assert s.first_index() == 4


def test_apply_snapshot_keeps_matching_suffix_only() -> None:
    s = filled(6)
    meta = SnapshotMetadata(index=4, term=2, conf_state=ConfState(voters=frozenset({1})))
    s.apply_snapshot(Snapshot(metadata=meta))
    assert (s.first_index(), s.last_index()) == (5, 6)  # entry 4 had term 2: 5, 6 kept
    other = filled(6)
    meta = SnapshotMetadata(index=5, term=7, conf_state=ConfState(voters=frozenset({1})))
    other.apply_snapshot(Snapshot(metadata=meta))
    assert (other.first_index(), other.last_index(), other.term(5)) == (6, 5, 7)
    with pytest.raises(SnapshotOutOfDateError):
        other.apply_snapshot(Snapshot(metadata=meta))


@pytest.mark.parametrize("backend", ["memory", "lmdb", "wal"])
def test_compact_after_an_append_truncated_below_the_snapshot(backend: str, tmp_path) -> None:
    """An append may truncate the log below the snapshot index (the snapshot is recorded
    separately from the entries). Compacting to an index the log no longer has is refused
    with UnavailableError, the same on every implementation (MemoryLogStorage raised
    IndexError), and leaves the log usable; compacting within what is left still works."""
    if backend == "memory":
        s: WritableLogStorage = MemoryLogStorage()
    elif backend == "wal":
        from kvraft.storage.wal import WalLogStorage

        s = WalLogStorage(tmp_path / "raft.wal", segment_bytes=1 << 20)
    else:
        from kvraft.storage.raft_log import LmdbLogStorage

        s = LmdbLogStorage(tmp_path / "raft.lmdb", map_size=1 << 26)
    s.append([Entry(term=1, index=i, data=b"x") for i in range(1, 11)])
    s.create_snapshot(8, ConfState(voters=frozenset({1})), b"snap")
    s.append([Entry(term=2, index=i, data=b"y") for i in range(5, 7)])
    assert (s.first_index(), s.last_index()) == (1, 6)
    for index in (8, 7):
        with pytest.raises(UnavailableError):
            s.compact(index)
        assert (s.first_index(), s.last_index(), s.term(6)) == (1, 6, 2)
    s.compact(5)
    assert (s.first_index(), s.last_index(), s.term(5), s.term(6)) == (6, 6, 2, 2)
    s.append([Entry(term=2, index=7, data=b"z")])
    assert [e.index for e in s.entries(6, 8)] == [6, 7]
    if backend != "memory":
        s.close()  # type: ignore[attr-defined]
