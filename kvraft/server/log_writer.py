"""``LogWriter``: every write to the Raft log, on one dedicated thread.

An fsync takes from a fraction of a millisecond to tens of milliseconds on a busy disk.
Done on the event loop it would stall HTTP parsing, peer frames and the apply stage for
that long; done here the loop keeps serving while the thread waits for the disk (LMDB
releases the GIL while it commits).

LMDB binds a write transaction to the thread that began it, so every job ends with a
``sync()`` (no write transaction stays open between jobs), and jobs never overlap (the
driver awaits each), so a small persist may also run on the loop's thread (``persist``). While
a job runs the driver feeds the Raft core nothing that could make it read the entries being
written (a leader steps only its followers' acks then, ``NodeDriver._step_acks``; a leader
only appends), which keeps the log single-threaded in effect, as its contract requires.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kvraft import failpoints
from kvraft.raft.types import ConfState, Entry, HardState, Snapshot

__all__ = ["LogWriter"]

log = logging.getLogger("kvraft.log_writer")


INLINE_MAX_ENTRIES = 4
"""A persist of at most this many entries (and no snapshot) may run on the caller's thread."""
INLINE_MAX_SYNC_S = 0.002
"""... while the recent syncs (a moving average) took less than this."""


class LogWriter:
    def __init__(self, storage: Any) -> None:
        self.storage = storage
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="raft-log")
        self.syncs = 0
        self.inline_syncs = 0
        self.sync_avg_s = 0.0
        """Moving average of a persist's duration, write and sync (weight 1/8 for the newest)."""

    async def persist(
        self, snapshot: Snapshot, entries: tuple[Entry, ...], hard: HardState | None, inline_ok: bool = True
    ) -> None:
        """Install ``snapshot`` (if not empty), append ``entries``, save ``hard``: one sync.

        A small write (``INLINE_MAX_ENTRIES``, no snapshot) while syncs are fast
        (``INLINE_MAX_SYNC_S``) runs right here, on the event loop: on a busy machine the
        thread hand-off (wake the writer thread, which then waits for the GIL; then wake
        the loop again) took longer than the sync itself, twice per member on a lone
        client's write path. The loop is blocked for that sync (a fraction of a
        millisecond): nothing it could do meanwhile would reach the disk sooner, and
        requests that arrive wait in their socket buffers for the next batch. Larger
        batches and slow disks keep the thread, so the loop goes on parsing requests.
        ``inline_ok`` false (the driver: on a leader, unless its Ready holds the only write
        in flight, ``NodeDriver._alone``) always uses the thread."""
        if (
            inline_ok
            and snapshot.is_empty()
            and len(entries) <= INLINE_MAX_ENTRIES
            and self.sync_avg_s < INLINE_MAX_SYNC_S
        ):
            self.inline_syncs += 1
            self._persist(snapshot, entries, hard)
            return
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._persist, snapshot, entries, hard)

    def _persist(self, snapshot: Snapshot, entries: tuple[Entry, ...], hard: HardState | None) -> None:
        started = time.monotonic()
        failpoints.hit("raft_before_save")
        if not snapshot.is_empty():
            self.storage.apply_snapshot(snapshot)
            log.info("recorded the received snapshot at %d (%d bytes) in %.3f s", snapshot.metadata.index,
                     len(snapshot.data), time.monotonic() - started)
        if entries:
            self.storage.append(list(entries))
        if hard is not None:
            self.storage.set_hard_state(hard)
        failpoints.hit("raft_before_fsync")  # `crash` here loses this write (nothing was synced)
        self.storage.sync()
        self.sync_avg_s += (time.monotonic() - started - self.sync_avg_s) / 8
        self.syncs += 1
        failpoints.hit("raft_after_save")

    async def set_conf_state(self, conf: ConfState, index: int) -> None:
        if not hasattr(self.storage, "set_conf_state"):
            return
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._set_conf_state, conf, index)

    def _set_conf_state(self, conf: ConfState, index: int) -> None:
        self.storage.set_conf_state(conf, index)
        self.storage.sync()

    async def snapshot(self, index: int, conf: ConfState, keep_entries: int) -> None:
        """Record a snapshot at ``index`` (without data: the member's store is its state) and
        compact the log behind it, keeping the last ``keep_entries`` entries for followers that
        are only a little behind."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._snapshot, index, conf, keep_entries)

    def _snapshot(self, index: int, conf: ConfState, keep_entries: int) -> None:
        if index <= self.storage.snapshot().metadata.index:
            return
        self.storage.create_snapshot(index, conf, b"")
        compact_to = index - keep_entries
        if compact_to > self.storage.first_index():
            self.storage.compact(compact_to)
        self.storage.sync()

    def close(self) -> None:
        self._thread.shutdown(wait=True)
