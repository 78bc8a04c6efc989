"""Physical compaction: deleting the records that a logical compaction made unreachable.

``MVCCStore.compact(rev)`` is logical and immediate: it raises the compaction point (reads
below it now fail with the compacted error), persists ``scheduledCompactRev`` and commits,
then compacts the key index, which returns exactly the revisions it dropped. Those go to
the ``Compactor``, a background thread that deletes them from the ``key`` bucket in
batches of ``batch_limit`` records, each batch its own short write transaction (so
compaction never holds the writer for long: etcd's ``scheduleCompaction``), and finally
persists ``finishedCompactRev``.

Jobs run one at a time, in order. A crash mid-job loses nothing: on restart the store
sees ``scheduled > finished``, rebuilds the index from the records still present (the
undeleted ones come back), compacts it again at the scheduled revision and resubmits.

Threading: ``submit`` is called by the store's writer; the worker takes the backend's
``maint_lock`` (so defragmentation and restore never see a half-deleted batch) and then
the writer lock, in that order, for each batch.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kvraft.storage.revision import rev_to_bytes, unpack
from kvraft.storage.schema import BUCKET_KEY, BUCKET_META, META_FINISHED_COMPACT, encode_int

if TYPE_CHECKING:
    from kvraft.storage.mvcc.store import MVCCStore

__all__ = ["CompactionJob", "Compactor"]

_log = logging.getLogger(__name__)


class _Stopped(RuntimeError):
    pass


@dataclass
class CompactionJob:
    """A logical compaction's physical part. ``wait()`` until the records are gone."""

    revision: int
    dropped: list[tuple[int, bool]]
    done: threading.Event = field(default_factory=threading.Event)
    deleted: int = 0
    error: BaseException | None = None
    epoch: int = 0

    def wait(self, timeout_s: float | None = None) -> bool:
        """True once finished (``error`` says if it failed), False on timeout."""
        return self.done.wait(timeout_s)


class Compactor:
    """The background worker; see the module docstring."""

    def __init__(self, store: MVCCStore, batch_limit: int = 1000) -> None:
        self._store = store
        self._batch_limit = batch_limit
        self._jobs: queue.Queue[CompactionJob | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="mvcc-compactor", daemon=True)
        self._stopping = False
        self._epoch = 0
        self._thread.start()

    def submit(self, job: CompactionJob) -> CompactionJob:
        job.epoch = self._epoch
        self._jobs.put(job)
        return job

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
                self._jobs.put(None)
                return
            job.error = _Stopped("superseded by a snapshot restore")
            job.done.set()

    def close(self) -> None:
        """Stop after the batch in progress; queued jobs resume at the next open."""
        self._stopping = True
        self._jobs.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                self._execute(job)
            except _Stopped as exc:
                job.error = exc
            except BaseException as exc:  # reported on the job; the store stays usable
                _log.exception("physical compaction at %d failed", job.revision)
                job.error = exc
            finally:
                job.done.set()
            if self._stopping:
                return

    def _execute(self, job: CompactionJob) -> None:
        backend = self._store.backend
        dropped = job.dropped
        for i in range(0, max(len(dropped), 1), self._batch_limit):
            if self._stopping:
                raise _Stopped("store closing: compaction interrupted (resumes on open)")
            chunk = dropped[i : i + self._batch_limit]
            last = i + self._batch_limit >= len(dropped)
            with backend.maint_lock, backend.batch() as batch:
                if job.epoch != self._epoch:
                    raise _Stopped("superseded by a snapshot restore")
                key_db = batch.dbis[BUCKET_KEY]
                for packed, tomb in chunk:
                    main, sub = unpack(packed)
                    if batch.txn.delete(rev_to_bytes(main, sub, tomb), db=key_db):
                        job.deleted += 1
                if last:
                    batch.txn.put(META_FINISHED_COMPACT, encode_int(META_FINISHED_COMPACT, job.revision),
                                  db=batch.dbis[BUCKET_META])
