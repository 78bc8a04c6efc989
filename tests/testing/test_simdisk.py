"""SimDisk keeps what was synced and loses what was not."""

from __future__ import annotations

import random

from kvraft.raft.memory_storage import MemoryLogStorage
from kvraft.raft.storage import WritableLogStorage
from kvraft.raft.types import ConfState, Entry, HardState
from kvraft.testing.simdisk import SimDisk


def ents(lo: int, hi: int, term: int = 1) -> list[Entry]:
    return [Entry(term=term, index=i, data=b"%d" % i) for i in range(lo, hi + 1)]


def test_is_a_writable_log_storage() -> None:
    assert isinstance(SimDisk(), WritableLogStorage)


def test_reads_see_unsynced_writes_and_crash_loses_them() -> None:
    d = SimDisk()
    d.append(ents(1, 3))
    d.set_hard_state(HardState(term=1, vote=2, commit=0))
    d.sync()
    d.append(ents(4, 6))
    d.set_hard_state(HardState(term=2, vote=3, commit=3))
    assert d.last_index() == 6 and d.initial_state()[0].term == 2
    assert d.unsynced_writes == 2
    assert d.crash() == 2
    assert d.last_index() == 3
    assert d.initial_state()[0] == HardState(term=1, vote=2, commit=0)
    assert d.unsynced_writes == 0 and d.crashes == 1 and d.lost_writes == 2
    # the disk works as before after the crash, and crashing again loses nothing synced
    d.append(ents(4, 4, term=2))
    d.sync()
    d.crash()
    assert d.last_index() == 4 and d.term(4) == 2


def test_truncation_is_undone_by_a_crash_before_sync() -> None:
    d = SimDisk()
    d.append(ents(1, 5))
    d.sync()
    d.append(ents(3, 3, term=2))  # truncates 4..5
    assert d.last_index() == 3
    d.crash()
    assert d.last_index() == 5 and d.term(3) == 1


def test_snapshot_and_compaction_are_journaled() -> None:
    d = SimDisk(MemoryLogStorage.bootstrap([1, 2, 3]))
    d.append(ents(4, 10))
    d.sync()
    d.create_snapshot(8, ConfState(voters=frozenset({1, 2, 3})), b"state")
    d.compact(8)
    assert d.first_index() == 9
    d.crash()
    assert d.first_index() == 1 and d.snapshot().metadata.index == 0
    d.create_snapshot(8, ConfState(voters=frozenset({1, 2, 3})), b"state")
    d.compact(8)
    d.sync()
    d.crash()
    assert d.first_index() == 9 and d.snapshot().data == b"state"


def test_torn_crash_keeps_an_in_order_prefix() -> None:
    outcomes = set()
    for seed in range(60):
        d = SimDisk()
        d.append(ents(1, 2))
        d.sync()
        d.append(ents(3, 6))
        d.set_hard_state(HardState(term=3, vote=1, commit=0))
        d.crash(random.Random(seed), torn=True)
        last, hs = d.last_index(), d.initial_state()[0]
        # a later write never survives without the earlier ones
        assert hs.term == 0 or last == 6
        assert 2 <= last <= 6
        outcomes.add((last, hs.term))
    assert (2, 0) in outcomes and (6, 3) in outcomes
    assert any(2 < last < 6 for last, _ in outcomes)  # a torn append


def test_bootstrap_state_is_durable() -> None:
    d = SimDisk(MemoryLogStorage.bootstrap([1, 2, 3]))
    d.crash()
    hs, cs = d.initial_state()
    assert cs.voters == frozenset({1, 2, 3}) and hs.commit == 3 and d.last_index() == 3
