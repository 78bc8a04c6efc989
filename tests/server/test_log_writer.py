"""``LogWriter``: a small persist runs on the caller's thread while syncs are fast; larger
ones, snapshots and persists after slow syncs go to the writer's thread."""

from __future__ import annotations

import threading
import time

from kvraft.raft.types import ConfState, Entry, HardState, Snapshot, SnapshotMetadata
from kvraft.server import log_writer
from kvraft.server.log_writer import LogWriter


class Storage:
    def __init__(self, sync_s: float = 0.0) -> None:
        self.sync_s = sync_s
        self.sync_threads: list[int] = []
        self.entries: list[Entry] = []

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        pass

    def append(self, entries: list[Entry]) -> None:
        self.entries.extend(entries)

    def set_hard_state(self, hard: HardState) -> None:
        pass

    def sync(self) -> None:
        if self.sync_s:
            time.sleep(self.sync_s)
        self.sync_threads.append(threading.get_ident())


def entries(first: int, count: int) -> tuple[Entry, ...]:
    return tuple(Entry(term=1, index=i, data=b"x") for i in range(first, first + count))


async def test_small_persists_run_inline_and_large_ones_on_the_thread() -> None:
    storage = Storage()
    writer = LogWriter(storage)
    me = threading.get_ident()
    try:
        await writer.persist(Snapshot(), entries(1, 1), HardState(term=1, commit=0))
        await writer.persist(Snapshot(), entries(2, log_writer.INLINE_MAX_ENTRIES), None)
        await writer.persist(Snapshot(), entries(6, log_writer.INLINE_MAX_ENTRIES + 1), None)
        snap = Snapshot(SnapshotMetadata(index=20, term=1, conf_state=ConfState(voters=frozenset({1}))), b"s")
        await writer.persist(snap, (), None)
        assert storage.sync_threads[:2] == [me, me]
        assert storage.sync_threads[2] != me and storage.sync_threads[3] != me
        assert writer.syncs == 4 and writer.inline_syncs == 2
        assert [e.index for e in storage.entries] == list(range(1, 6 + log_writer.INLINE_MAX_ENTRIES + 1))
    finally:
        writer.close()


async def test_slow_syncs_send_even_small_persists_to_the_thread() -> None:
    """A disk that takes longer than ``INLINE_MAX_SYNC_S`` per sync: once the moving
    average says so, the loop no longer waits for it."""
    storage = Storage(sync_s=log_writer.INLINE_MAX_SYNC_S * 3)
    writer = LogWriter(storage)
    me = threading.get_ident()
    try:
        for index in range(1, 21):
            await writer.persist(Snapshot(), entries(index, 1), None)
        assert storage.sync_threads[0] == me  # nothing known yet: inline
        assert storage.sync_threads[-1] != me  # the average caught up with the slow disk
        assert writer.sync_avg_s >= log_writer.INLINE_MAX_SYNC_S
    finally:
        writer.close()


async def test_the_leader_keeps_the_thread_for_small_persists_too() -> None:
    """``inline_ok`` false (the driver passes it on the leader, whose loop parses client
    requests meanwhile) sends even a one-entry persist to the thread."""
    storage = Storage()
    writer = LogWriter(storage)
    try:
        await writer.persist(Snapshot(), entries(1, 1), None, inline_ok=False)
        await writer.persist(Snapshot(), entries(2, 1), None)
        assert storage.sync_threads[0] != threading.get_ident()
        assert storage.sync_threads[1] == threading.get_ident()
        assert writer.inline_syncs == 1
    finally:
        writer.close()
