"""RaftLog and Unstable: appends, conflicts, stale appends, slicing across the storage
and unstable parts, persistence bookkeeping."""

from __future__ import annotations

import pytest

from kvraft.raft.log import RaftLog
from kvraft.raft.memory_storage import MemoryLogStorage
from kvraft.raft.storage import CompactedError
from kvraft.raft.types import ConfState, Entry


def ents(*pairs: tuple[int, int]) -> list[Entry]:
    """(term, index) pairs -> entries with recognizable data."""
    return [Entry(term=t, index=i, data=f"{t}/{i}".encode()) for t, i in pairs]


def log_with(stored: list[Entry], unstable: list[Entry] | None = None) -> RaftLog:
    storage = MemoryLogStorage()
    storage.append(stored)
    log = RaftLog(storage)
    if unstable:
        log.append(unstable)
    return log


def test_slice_spans_storage_and_unstable_and_respects_size() -> None:
    log = log_with(ents((1, 1), (1, 2), (1, 3)), ents((2, 4), (2, 5)))
    assert [e.index for e in log.slice(2, 6)] == [2, 3, 4, 5]
    one = Entry(1, 1, data=b"1/1").size()
    assert [e.index for e in log.slice(1, 6, max_bytes=2 * one)] == [1, 2]
    assert [e.index for e in log.slice(1, 6, max_bytes=0)] == [1]  # at least one
    assert log.entries_from(6) == []


def test_maybe_append_never_truncates_on_a_stale_message() -> None:
    log = log_with(ents((1, 1), (1, 2), (2, 3), (2, 4)))
    # a duplicate carrying only 3: everything matches, 4 must stay
    assert log.maybe_append(2, 1, 2, tuple(ents((2, 3)))) == 3
    assert log.last_index() == 4
    assert log.committed == 2


def test_maybe_append_truncates_at_a_real_conflict_only() -> None:
    log = log_with(ents((1, 1), (1, 2), (2, 3), (2, 4)))
    assert log.maybe_append(2, 1, 0, tuple(ents((2, 3), (3, 4), (3, 5)))) == 5
    assert [(e.term, e.index) for e in log.entries_from(1)] == [
        (1, 1),
        (1, 2),
        (2, 3),
        (3, 4),
        (3, 5),
    ]


def test_maybe_append_rejects_mismatch_and_commits_only_what_it_vouches_for() -> None:
    log = log_with(ents((1, 1), (1, 2)))
    assert log.maybe_append(2, 2, 5, ()) is None  # term at 2 is 1, not 2
    assert log.maybe_append(2, 1, 9, tuple(ents((1, 3)))) == 3
    assert log.committed == 3  # min(leader commit 9, last new index 3)


def test_truncating_below_commit_is_a_bug() -> None:
    log = log_with(ents((1, 1), (1, 2), (1, 3)))
    log.commit_to(3)
    with pytest.raises(AssertionError):
        log.maybe_append(1, 1, 3, tuple(ents((2, 2))))


def test_commit_never_goes_back_and_needs_the_entry() -> None:
    log = log_with(ents((1, 1), (1, 2)))
    log.commit_to(2)
    log.commit_to(1)
    assert log.committed == 2
    with pytest.raises(AssertionError):
        log.commit_to(3)


def test_maybe_commit_only_for_the_given_term() -> None:
    log = log_with(ents((1, 1), (2, 2)))
    assert not log.maybe_commit(1, 2)  # entry 1 is of term 1: the Figure 8 rule
    assert log.maybe_commit(2, 2)
    assert log.committed == 2


def test_find_conflict_by_term_skips_higher_terms() -> None:
    log = log_with(ents((1, 1), (1, 2), (4, 3), (4, 4), (5, 5)))
    assert log.find_conflict_by_term(5, 3) == (2, 1)
    assert log.find_conflict_by_term(5, 4) == (4, 4)
    assert log.find_conflict_by_term(5, 0) == (0, 0)


def test_persisted_bound_and_committed_entries() -> None:
    log = log_with(ents((1, 1), (1, 2)), ents((2, 3), (2, 4)))
    log.commit_to(4)
    assert log.persisted_last_index() == 2
    assert [e.index for e in log.next_committed_entries()] == [1, 2]  # 3, 4 not durable yet
    log.storage.append(ents((2, 3), (2, 4)))  # type: ignore[attr-defined]
    log.stable_to(4, 2)
    assert log.persisted_last_index() == 4
    assert [e.index for e in log.next_committed_entries()] == [1, 2, 3, 4]
    log.applied_to(4)
    assert not log.has_next_committed_entries()


def test_stable_to_ignores_a_replaced_entry() -> None:
    log = log_with(ents((1, 1)), ents((2, 2), (2, 3)))
    log.append(ents((3, 3)))  # 3 replaced before its persistence was reported
    log.stable_to(3, 2)
    assert log.unstable.offset == 2
    log.storage.append(ents((2, 2), (3, 3)))  # type: ignore[attr-defined]
    log.stable_to(3, 3)
    assert log.unstable.offset == 4 and log.unstable.entries == []


def test_truncation_below_the_unstable_offset_moves_it() -> None:
    log = log_with(ents((1, 1), (1, 2), (1, 3)))
    log.append(ents((2, 2)))
    assert log.unstable.offset == 2 and log.persisted_last_index() == 1
    assert log.last_index() == 2 and log.term(2) == 2


def test_compacted_reads_and_restore() -> None:
    storage = MemoryLogStorage()
    storage.append(ents((1, 1), (1, 2), (1, 3), (1, 4)))
    storage.create_snapshot(3, ConfState(voters=frozenset({1})), b"")
    storage.compact(3)
    log = RaftLog(storage)
    assert log.first_index() == 4 and log.term(3) == 1
    with pytest.raises(CompactedError):
        log.term(2)
    with pytest.raises(CompactedError):
        log.slice(3, 5)
    snap = storage.snapshot()
    bigger = type(snap)(
        metadata=type(snap.metadata)(index=10, term=3, conf_state=snap.metadata.conf_state)
    )
    log.restore(bigger)
    assert (log.first_index(), log.last_index(), log.committed) == (11, 10, 10)
    assert log.next_committed_entries() == []
    assert log.persisted_last_index() == 0
