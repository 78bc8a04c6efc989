"""Compaction's background part: compacting the key index, then deleting the records
the logical compaction made unreachable.

``MVCCStore.compact(rev)`` is logical and immediate: it persists ``scheduledCompactRev``,
commits, and moves the compaction point (waiting, through the compaction gate, for reads
already under way below it); from then on reads below ``rev`` fail with the compacted
error, and reads at or above it are unaffected by what follows. The rest is a
``CompactionJob`` for the ``Compactor`` thread:

0. Hash the store at ``rev`` as the previous compaction point left it, before anything is
   deleted, and record it on the store (``compaction_hash``, ``MVCCStore.compaction_hashes``:
   the compact hash check compares these across members). Not for a job resumed at open.
1. Compact the key index, ``index_chunk`` keys at a time, each chunk under the writer
   lock (so never inside a write batch, whose rollback relies on the index only growing)
   and the index lock; writers and readers run between chunks. This yields exactly the
   revisions the index dropped.
2. Delete those records from the ``key`` bucket in batches of ``batch_limit``, each its
   own short write transaction (etcd's ``scheduleCompaction``), then persist
   ``finishedCompactRev``.

Jobs run one at a time, in order. A crash mid-job loses nothing: on restart the store
sees ``scheduled > finished``, rebuilds the index from the records still present (the
undeleted ones come back) and submits the job again.

Threading: ``submit`` is called by the store's writer; the worker takes the writer lock
for index chunks, and the backend's ``maint_lock`` then the writer lock for each delete
batch (so defragmentation and restore never see a half-deleted batch).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kvraft.storage.mvcc.hash import compaction_hash
from kvraft.storage.revision import rev_to_bytes, unpack
from kvraft.storage.schema import BUCKET_KEY, BUCKET_META, META_FINISHED_COMPACT, encode_int

if TYPE_CHECKING:
    from kvraft.storage.mvcc.index import TreeIndex
    from kvraft.storage.mvcc.store import MVCCStore

__all__ = ["CompactionJob", "Compactor"]

_log = logging.getLogger(__name__)


class _Stopped(RuntimeError):
    pass


@dataclass
class CompactionJob:
    """A logical compaction's background part. ``wait()`` until the index is compacted
    and the records are gone."""

    revision: int
    index: TreeIndex
    dropped: list[tuple[int, bool]] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)
    deleted: int = 0
    error: BaseException | None = None
    epoch: int = 0
    previous: int | None = None
    """The compaction point before this one: the job records its hash first
    (``compaction_hash``); None for a compaction resumed at open."""
    hash_s: float = 0.0
    """How long its hash took."""

    def wait(self, timeout_s: float | None = None) -> bool:
        """True once finished (``error`` says if it failed), False on timeout."""
        return self.done.wait(timeout_s)


class Compactor:
    """The background worker; see the module docstring."""

    def __init__(self, store: MVCCStore, batch_limit: int = 1000, index_chunk: int = 2000,
                 sleep_s: float = 0.0) -> None:
        self._store = store
        self._batch_limit = batch_limit
        self._sleep_s = sleep_s
        """Pause between two delete batches, no lock held (``--experimental-compaction-sleep-interval``)."""
        self._index_chunk = index_chunk
        self._jobs: queue.Queue[CompactionJob | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="mvcc-compactor", daemon=True)
        self._stopping = False
        self._epoch = 0
        self._thread.start()

    def submit(self, job: CompactionJob) -> CompactionJob:
        job.epoch = self._epoch
        self._jobs.put(job)
        return job

    @property
    def busy(self) -> bool:
        """Whether a job is queued or running (it needs the writer lock between its steps)."""
        return self._jobs.unfinished_tasks > 0

    def cancel_pending(self) -> None:
        """Drop every job not started yet and stop the running one at its next batch (the
        state they were computed for is being replaced). Caller holds ``maint_lock``."""
        self._epoch += 1
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            if job is None:
                self._jobs.task_done()
                self._jobs.put(None)
                return
            job.error = _Stopped("superseded by a snapshot restore")
            job.done.set()
            self._jobs.task_done()

    def close(self) -> None:
        """Stop after the batch in progress; queued jobs resume at the next open."""
        self._stopping = True
        self._jobs.put(None)
        self._thread.join()

    def _check(self, job: CompactionJob) -> None:
        if self._stopping:
            raise _Stopped("store closing: compaction interrupted (resumes on open)")
        if job.epoch != self._epoch:
            raise _Stopped("superseded by a snapshot restore")

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                self._jobs.task_done()
                return
            try:
                self._execute(job)
            except _Stopped as exc:
                job.error = exc
            except BaseException as exc:  # reported on the job; the store stays usable
                _log.exception("compaction at %d failed", job.revision)
                job.error = exc
            finally:
                job.done.set()
                self._jobs.task_done()
            if self._stopping:
                return

    def _execute(self, job: CompactionJob) -> None:
        """Times each step as etcd does: every pause of the writers (an index chunk, a
        delete batch) and the whole, in milliseconds (``StoreTimings``)."""
        backend = self._store.backend
        timings = self._store.timings
        started = time.monotonic()
        if job.previous is not None:  # (before anything is deleted: the hash covers what goes)
            recorded = compaction_hash(self._store, job.index, job.revision, job.previous)
            job.hash_s = time.monotonic() - started
            with backend.writer_lock:
                self._check(job)
                self._store.record_compaction_hash(recorded)
        keys = job.index.compaction_keys()
        dropped = job.dropped
        for i in range(0, len(keys), self._index_chunk):
            with backend.writer_lock:
                paused = time.monotonic()
                self._check(job)
                job.index.compact_keys(keys[i : i + self._index_chunk], job.revision, dropped)
                timings.index_compaction_pause_ms.observe((time.monotonic() - paused) * 1000)
        dropped.sort()
        for i in range(0, max(len(dropped), 1), self._batch_limit):
            if i and self._sleep_s > 0:  # (writers and readers get the store between batches)
                time.sleep(self._sleep_s)
            chunk = dropped[i : i + self._batch_limit]
            last = i + self._batch_limit >= len(dropped)
            with backend.maint_lock, backend.batch() as batch:
                paused = time.monotonic()
                self._check(job)
                key_db = batch.dbis[BUCKET_KEY]
                deleted = 0
                for packed, tomb in chunk:
                    main, sub = unpack(packed)
                    if batch.txn.delete(rev_to_bytes(main, sub, tomb), db=key_db):
                        deleted += 1
                job.deleted += deleted
                timings.db_compaction_keys += deleted
                if last:
                    batch.txn.put(META_FINISHED_COMPACT, encode_int(META_FINISHED_COMPACT, job.revision),
                                  db=batch.dbis[BUCKET_META])
                else:  # etcd observes the pauses of the batches before the last one
                    timings.db_compaction_pause_ms.observe((time.monotonic() - paused) * 1000)
        timings.db_compaction_total_ms.observe((time.monotonic() - started) * 1000)
        timings.db_compaction_last = time.time()
