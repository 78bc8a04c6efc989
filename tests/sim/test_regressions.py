"""Bugs the simulator found, pinned as small deterministic tests (the seeds that found them
stop meaning the same run once the simulator changes, so each is rebuilt by hand here).

1. Restart replayed conf changes covered by the snapshot (found 2026-12-02 by seeds 37, 119,
   129 and 282 of the first sweeps, against raft a8d7490): ``RaftLog.applied`` started at
   ``first_index() - 1`` instead of the snapshot index, so when compaction kept entries
   behind the snapshot (etcd's catch-up entries, ``compact_keep``), a restarting member
   re-applied conf changes already in the snapshot's ConfState; a leave-joint entry then
   raised ConfChangeError ("cannot leave a configuration that is not joint") and an
   add/remove could silently resurrect a removed voter. Fixed in 003229c.
"""

from __future__ import annotations

import random

from kvraft.raft.config import RaftConfig
from kvraft.raft.memory_storage import MemoryLogStorage
from kvraft.raft.rawnode import RawNode
from kvraft.raft.types import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
)


def test_restart_does_not_replay_conf_changes_inside_the_snapshot() -> None:
    storage = MemoryLogStorage.bootstrap([1, 2, 3])  # conf entries 1..3, term 1
    joint = ConfChange(changes=((ConfChangeType.ADD_VOTER, 4), (ConfChangeType.REMOVE_NODE, 3)))
    leave = ConfChange(leave_joint=True)
    storage.append(
        [
            Entry(term=2, index=4, type=EntryType.CONF_CHANGE, data=joint.encode()),
            Entry(term=2, index=5, type=EntryType.CONF_CHANGE, data=leave.encode()),
            *(Entry(term=2, index=i, data=b"put|%d|k|v" % i) for i in range(6, 11)),
        ]
    )
    storage.set_hard_state(HardState(term=2, vote=1, commit=10))
    final = ConfState(voters=frozenset({1, 2, 4}))
    storage.create_snapshot(8, final, b"k=v8\n")
    storage.compact(4)  # keep entries 5..8 behind the snapshot, as compact_keep does
    assert storage.first_index() == 5 and storage.snapshot().metadata.index == 8

    node = RawNode(RaftConfig(id=1, rng=random.Random(1), applied=8), storage)
    assert node.status().conf_state.voters == final.voters
    assert not node.status().conf_state.voters_outgoing
    # the entries after the snapshot are still delivered for applying
    rd = node.ready()
    assert [e.index for e in rd.committed_entries] == [9, 10]
