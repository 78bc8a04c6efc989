"""``MVCCStore``: etcd's MVCC key-value store on an LMDB ``Backend``.

State: the ``key`` bucket holds every revision of every key (see ``schema``); the
in-memory ``TreeIndex`` maps keys to their revisions and is rebuilt from the bucket on
open; ``meta`` holds the current and compaction revisions, the consistent index (the
last Raft entry applied, for the apply layer) and the NOSPACE alarm.

Revisions: a fresh store is at revision 1; each ``WriteView`` that changes something is
one new main revision (etcd: first write = 2). ``rev`` is the last COMMITTED revision,
what new readers see. Writes go through ``batch()``: several write views (several
revisions) may share one LMDB commit; until it commits they are visible only to the
writer thread (its reads go through the batch), and a failure part-way rolls the whole
batch back (``BatchAbortedError``; index, leases and revision are restored).

Interface (the apply layer's): ``range``, ``put``, ``delete_range``, ``txn``,
``compact``, ``hash_kv``, ``keys_by_lease``, ``events``; lower level ``read()`` /
``write()`` views (``views``), ``batch()``. Maintenance: ``snapshot``, ``restore``,
``defragment``, ``verify``, ``sizes``.

Threading: one writer thread (the applier) at a time calls the mutating methods; any
thread may call ``read()``/``range``/``hash_kv``/``snapshot``/``defragment``. A read
view holds the ``CompactionGate`` shared, so a compaction waits for reads already under
way (``gate``): never write or compact while holding a read view. Listeners
(``add_listener``) are called on the writer thread after each commit with the committed
revisions' events, in order; they must not block.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from kvraft.storage.backend import DEFAULT_MAP_SIZE, Backend, Batch
from kvraft.storage.defrag import DefragReport, defragment
from kvraft.storage.errors import BatchAbortedError
from kvraft.storage.mvcc import ops
from kvraft.storage.mvcc.compaction import CompactionJob, Compactor
from kvraft.storage.mvcc.counts import OpCounts, StoreTimings, Tally
from kvraft.storage.mvcc.errors import (
    CompactedRevisionError,
    EmptyKeyError,
    FutureRevisionError,
    LeaseNotFoundError,
    MVCCError,
)
from kvraft.storage.mvcc.gate import CompactionGate
from kvraft.storage.mvcc.hash import hash_kv
from kvraft.storage.mvcc.index import TreeIndex
from kvraft.storage.mvcc.rebuild import load_state
from kvraft.storage.mvcc.types import (
    DeleteRangeRequest,
    DeleteRangeResult,
    Event,
    HashKVResult,
    PutRequest,
    PutResult,
    RangeRequest,
    RangeResult,
    TxnRequest,
    TxnResult,
)
from kvraft.storage.mvcc.views import ReadView, WriteView, put_event
from kvraft.storage.schema import (
    ALARM_CORRUPT,
    ALARM_NOSPACE,
    BUCKET_ALARM,
    BUCKET_META,
    DEFAULT_BUCKETS,
    META_CONSISTENT_INDEX,
    META_CURRENT_REV,
    META_NOSPACE_ALARM,
    META_SCHEDULED_COMPACT,
    alarm_record,
    encode_consistent_index,
    encode_int,
)
from kvraft.storage.snapshot import (
    DEFAULT_CHUNK_BYTES,
    RestoreReport,
    SnapshotFile,
    SnapshotStream,
    mark_consistent_index,
    restore_file,
    restore_generation,
)

__all__ = ["COMPACTION_HASHES_KEPT", "Listener", "MVCCStore"]

COMPACTION_HASHES_KEPT = 10
"""etcd's ``hashStorageMaxSize``: the compaction hashes a store keeps (in memory)."""

_log = logging.getLogger(__name__)

Listener = Callable[[list[tuple[int, list[Event]]]], None]



class _ReadViewContext:
    __slots__ = ("_fresh", "_read", "_store")

    def __init__(self, store: MVCCStore, fresh: bool = False) -> None:
        self._store = store
        self._fresh = fresh
        self._read: Any = None

    def __enter__(self) -> ReadView:
        store = self._store
        batch = None if self._fresh else store.backend.current_batch()
        if batch is not None:
            return ReadView(store, batch.txn, batch.dbis, store._pending)
        store.gate.acquire_shared()
        try:
            rev = store._disk_rev  # read before the transaction begins: it then contains ``rev``
            self._read = store.backend.read()
            r = self._read.__enter__()
        except BaseException:
            store.gate.release_shared()
            raise
        return ReadView(store, r.txn, r.dbis, rev)

    def __exit__(self, *exc: object) -> None:
        if self._read is not None:
            try:
                self._read.__exit__(None, None, None)
            finally:
                self._store.gate.release_shared()


class _WriteViewContext:
    __slots__ = ("_batch", "_ctx", "_store", "_view")

    def __init__(self, store: MVCCStore) -> None:
        self._store = store

    def __enter__(self) -> WriteView:
        store = self._store
        self._ctx = store.backend.batch()
        batch = self._batch = self._ctx.__enter__()
        self._view = WriteView(store, batch, store._pending)
        return self._view

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        view, batch = self._view, self._batch
        if exc is not None:
            if view.changes or not isinstance(exc, MVCCError):
                batch.poison(exc)
        elif view.changes:
            store = self._store
            store._pending += 1
            events = batch.data.get("events")
            if events is None:
                events = batch.data["events"] = []
            events.append((store._pending, view.changes))
        self._ctx.__exit__(exc_type, exc, tb)


class MVCCStore:
    """See the module docstring."""

    def __init__(
        self, directory: str | os.PathLike[str], *, map_size: int = DEFAULT_MAP_SIZE,
        sync: bool = True, metasync: bool = True, max_txn_ops: int = ops.DEFAULT_MAX_TXN_OPS,
        lease_check: Callable[[int], bool] | None = None, compaction_batch: int = 1000, compaction_sleep_s: float = 0.0,
        buckets: tuple[bytes, ...] = DEFAULT_BUCKETS,
    ) -> None:
        self.backend = Backend(directory, map_size=map_size, sync=sync, metasync=metasync, buckets=buckets)
        self.backend.before_commit = self._before_commit
        self.backend.after_commit = self._after_commit
        self.backend.after_abort = self._after_abort
        self.max_txn_ops = max_txn_ops
        self.lease_check = lease_check
        self._listeners: list[Listener] = []
        self.counts = OpCounts()  # etcd's etcd_mvcc_*_total (``counts``), since the process started
        self.timings = StoreTimings()  # snapshots, defragmentations, compactions (``counts``)
        self._held: Any = None  # the batch context ``hold`` opened
        self._committing = False  # listeners running from a commit (its txn is closed)
        self.gate = CompactionGate()
        self._compaction_hashes: list[HashKVResult] = []  # (``compaction_hashes``)
        self._compactor = Compactor(self, compaction_batch, sleep_s=compaction_sleep_s)
        try:
            self._reload()
        except BaseException:
            self._compactor.close()
            self.backend.close()
            raise

    def _reload(self) -> None:
        """(Re)build every in-memory structure from the live backend generation."""
        state = load_state(self.backend)
        self.index: TreeIndex = state.index
        self._rev = self._pending = self._disk_rev = state.current_rev
        self._compact_rev = state.compact_rev
        self._consistent = state.consistent_index
        self._use_alarms(state.alarms)
        self._key_lease = state.key_lease
        self._lease_keys: dict[int, set[bytes]] = {}
        for key, lease in self._key_lease.items():
            self._lease_keys.setdefault(lease, set()).add(key)
        self.last_job: CompactionJob | None = None
        self._compaction_hashes = []  # (those of another generation's compactions)
        if state.resume_compaction:
            self.last_job = self._compactor.submit(CompactionJob(self._compact_rev, self.index))

    # -- state ---------------------------------------------------------------------------

    @property
    def rev(self) -> int:
        """The last committed revision (what a new reader sees)."""
        return self._rev

    @property
    def compact_revision(self) -> int:
        """The compaction point; -1 if the store was never compacted (as etcd)."""
        return self._compact_rev

    @property
    def consistent_index(self) -> tuple[int, int]:
        """``(index, term)`` of the last Raft entry applied (``set_consistent_index``)."""
        return self._consistent

    @property
    def nospace_alarm(self) -> bool:
        return self._nospace

    @property
    def alarms(self) -> frozenset[tuple[int, int]]:
        """The raised alarms, ``(member_id, type)`` (``set_alarms``)."""
        return self._alarms

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    # -- views and batches ---------------------------------------------------------------

    def read(self) -> _ReadViewContext:
        """``with store.read() as view:`` a view at the last committed revision; on the
        writer thread inside a batch, a view of the batch (it reads its own writes)."""
        return _ReadViewContext(self)

    def batch(self) -> Any:
        """``with store.batch():`` group write views (and ``set_consistent_index``,
        ``set_nospace_alarm``) into one LMDB commit."""
        return self.backend.batch()

    def write(self) -> _WriteViewContext:
        """``with store.write() as view:`` one revision's worth of changes. An MVCC error
        raised before the view changed anything leaves the batch intact; any failure
        after that poisons it (the whole batch rolls back)."""
        return _WriteViewContext(self)

    # -- group commit across batches ----------------------------------------------------

    @property
    def compacting(self) -> bool:
        """Whether a compaction's background part is queued or running: it takes the writer
        lock for each step, so a batch held across applies would stall it."""
        return self._compactor.busy

    @property
    def holding(self) -> bool:
        """Whether a held batch has units that are not on disk yet."""
        return self._held is not None

    def hold(self) -> None:
        """Keep a write batch open across the batches that follow (writer thread only),
        until ``release`` or ``abort_held``. No-op if one is held already."""
        if self._held is None:
            ctx = self.backend.batch()
            ctx.__enter__()
            self._held = ctx

    def publish(self) -> None:
        """End one unit of work inside the held batch: its revisions become ``rev`` (what
        reads on the writer thread see) and its events go to the listeners, as a commit
        would do; the data reaches the disk with ``release``. A poisoned batch is rolled
        back whole (every unit since ``hold``) and ``BatchAbortedError`` raised."""
        batch = self.backend.current_batch()
        if self._held is None or batch is None:
            return
        if batch.poisoned is not None:
            error = BatchAbortedError(f"write batch rolled back: {batch.poisoned!r}")
            self.abort_held(error)
            raise error
        self._rev = self._pending
        events = batch.data.pop("events", None)
        if events:
            self._notify(events)

    def release(self) -> None:
        """Commit everything held in ONE LMDB commit (``BatchAbortedError`` if that fails:
        then nothing held is kept)."""
        ctx, self._held = self._held, None
        if ctx is not None:
            ctx.__exit__(None, None, None)

    def _settle(self) -> None:
        """Commit what is held, if this thread holds it (before work that needs the
        disk to have everything: snapshots, restore, defragmentation, close)."""
        if self._held is not None and self.backend.current_batch() is not None:
            self.release()

    def abort_held(self, cause: BaseException) -> None:
        """Roll back everything held (the in-memory index, leases, consistent index and
        revision go back to the state on disk)."""
        ctx, self._held = self._held, None
        if ctx is None:
            return
        batch = self.backend.current_batch()
        if batch is not None:
            batch.poison(cause)
        with contextlib.suppress(BatchAbortedError):
            ctx.__exit__(type(cause), cause, None)

    def listener_read(self) -> Any:
        """For listeners: a read view at ``rev`` that sees every published unit (through
        the held batch on the writer thread; a fresh read transaction otherwise, and while
        a commit calls the listeners)."""
        if self._committing or self._held is None or self.backend.current_batch() is None:
            return _ReadViewContext(self, fresh=True)
        return _ReadViewContext(self)

    def _remember(self, batch: Batch, key: bytes, shape: tuple[int, int, int, int] | None) -> None:
        """Record how to undo this batch's changes to ``key`` (``shape``: the key's index
        before the change being made); only the first change of a batch counts."""
        undo = batch.data.get("undo")
        if undo is None:
            undo = batch.data["undo"] = {}
        if key not in undo:
            undo[key] = (shape, self._key_lease.get(key, 0))

    def _set_lease(self, key: bytes, lease: int) -> None:
        old = self._key_lease.get(key, 0)
        if old == lease:
            return
        if old:
            keys = self._lease_keys[old]
            keys.discard(key)
            if not keys:
                del self._lease_keys[old]
            del self._key_lease[key]
        if lease:
            self._key_lease[key] = lease
            self._lease_keys.setdefault(lease, set()).add(key)

    def _before_commit(self, batch: Batch) -> None:
        meta = batch.dbis[BUCKET_META]
        if self._pending != self._disk_rev:  # not ``_rev``: held units published it already
            batch.txn.put(META_CURRENT_REV, encode_int(META_CURRENT_REV, self._pending), db=meta)
        if "consistent" in batch.data:
            index, term = self._consistent
            batch.txn.put(META_CONSISTENT_INDEX, encode_consistent_index(index, term), db=meta)

    def _after_commit(self, batch: Batch) -> None:
        self._rev = self._disk_rev = self._pending
        events = batch.data.get("events", [])
        batch.data.clear()
        if events:
            self._committing = True
            try:
                self._notify(events)
            finally:
                self._committing = False

    def _notify(self, events: list[tuple[int, list[Event]]]) -> None:
        for listener in self._listeners:
            try:
                listener(events)
            except Exception:  # a listener bug must not undo a commit
                _log.exception("mvcc listener failed")

    def _after_abort(self, batch: Batch) -> None:
        for key, (shape, lease) in batch.data.get("undo", {}).items():
            self.index.truncate(key, shape)
            self._set_lease(key, lease)
        if "consistent" in batch.data:
            self._consistent = batch.data["consistent"]
        if "alarms" in batch.data:
            self._use_alarms(batch.data["alarms"])
        self._rev = self._pending = self._disk_rev  # (units published while held roll back too)
        batch.data.clear()

    def set_consistent_index(self, index: int, term: int) -> None:
        """Record the last applied Raft entry, in the current batch's commit."""
        with self.backend.batch() as batch:
            batch.data.setdefault("consistent", self._consistent)
            self._consistent = (index, term)

    def set_alarms(self, alarms: Iterable[tuple[int, int]]) -> None:
        """Replace the raised alarms, ``(member_id, type)`` pairs (a replicated decision:
        call it when an alarm entry is applied), in the current batch's commit. They are
        kept in the ``alarm`` bucket, so they survive a restart and travel in snapshots.
        While a NOSPACE one is raised, puts and txns with puts fail."""
        new = frozenset(alarms)
        with self.backend.batch() as batch:
            batch.data.setdefault("alarms", self._alarms)
            bucket = batch.dbis[BUCKET_ALARM]
            for member_id, alarm in self._alarms - new:
                batch.txn.delete(alarm_record(member_id, alarm)[0], db=bucket)
            for member_id, alarm in new:
                batch.txn.put(*alarm_record(member_id, alarm), db=bucket)
            batch.txn.delete(META_NOSPACE_ALARM, db=batch.dbis[BUCKET_META])  # the flag of older stores
            self._use_alarms(new)

    def _use_alarms(self, alarms: frozenset[tuple[int, int]]) -> None:
        self._alarms = alarms
        self._nospace = any(alarm == ALARM_NOSPACE for _, alarm in alarms)
        self.corrupt_alarm = any(alarm == ALARM_CORRUPT for _, alarm in alarms)
        """Whether a CORRUPT alarm is raised (the applier chain then refuses writes)."""

    def set_nospace_alarm(self, active: bool) -> None:
        """Raise (as member 0 unless one is raised already) or clear every NOSPACE alarm."""
        others = {a for a in self._alarms if a[1] != ALARM_NOSPACE}
        raised = {a for a in self._alarms if a[1] == ALARM_NOSPACE} or {(0, ALARM_NOSPACE)}
        self.set_alarms(others | raised if active else others)

    # -- requests ------------------------------------------------------------------------

    def range(self, key: bytes, range_end: bytes = b"", **options: Any) -> RangeResult:
        """etcd Range; ``options`` are RangeRequest's fields (limit, revision, sort_order,
        sort_target, keys_only, count_only, min/max_mod_revision, min/max_create_revision)."""
        return self.range_request(RangeRequest(key, range_end, **options))

    def range_request(self, r: Any) -> RangeResult:
        ops.check_range_request(r)
        self.counts.ranges += 1  # one range, failed or not: no txn
        with self.read() as view:
            return ops.apply_range(view, r)

    def put(self, key: bytes, value: bytes = b"", **options: Any) -> PutResult:
        """etcd Put; ``options``: lease, prev_kv, ignore_value, ignore_lease."""
        return self.put_request(PutRequest(key, value, **options))

    def put_request(self, r: Any) -> PutResult:
        ops.check_put_request(r)
        if self._nospace:
            ops.check_capped(True, "put", r)
        batch = self.backend.current_batch()
        if batch is not None and batch.poisoned is None and not (r.prev_kv or r.ignore_value or r.ignore_lease):
            return self._plain_put(batch, r)
        tally = Tally()
        try:
            with self.write() as view:
                return ops.apply_put(view, r, self.lease_check, tally=tally)
        finally:
            self.counts.end(tally)

    def _plain_put(self, batch: Batch, r: Any) -> PutResult:
        """A put without prev_kv/ignore_* inside this thread's batch (every put the apply
        stage applies): what ``write()`` + ``apply_put`` do, without a view, a context and
        a nested batch per put (those were ~20% of a put's apply CPU). Same rules: an MVCC
        error before any change leaves the batch intact, any failure after poisons it."""
        lease = r.lease
        if lease and self.lease_check is not None and not self.lease_check(lease):
            raise LeaseNotFoundError()
        main = self._pending + 1
        try:
            event = put_event(self, batch, main, 0, r.key, r.value, lease)
        except BaseException as exc:
            batch.poison(exc)
            raise
        self._pending = main
        counts = self.counts
        counts.puts += 1
        counts.put_bytes += len(r.key) + len(r.value)
        events = batch.data.get("events")
        if events is None:
            events = batch.data["events"] = []
        events.append((main, [event]))
        return PutResult(revision=main)

    def put_many(self, requests: Iterable[Any]) -> list[PutResult | MVCCError]:
        """Independent puts in order, each its own revision (as ``put_request`` each, not a
        txn): the result of each, or the ``MVCCError`` that refused it (before any change,
        so the others go on). Inside this thread's batch the plain ones go straight to
        ``_plain_put`` (no ``put_request`` checks and batch lookup per put): a ``BatchOp``
        entry's puts."""
        batch = self.backend.current_batch()
        results: list[PutResult | MVCCError] = []
        for r in requests:
            try:
                if (batch is None or batch.poisoned is not None or self._nospace
                        or r.prev_kv or r.ignore_value or r.ignore_lease):
                    results.append(self.put_request(r))
                elif not r.key:
                    results.append(EmptyKeyError())
                else:
                    results.append(self._plain_put(batch, r))
            except MVCCError as exc:
                if batch is not None and batch.poisoned is exc:
                    raise  # a failure after a change: the batch is poisoned, not this put refused
                results.append(exc)
        return results

    def delete_range(self, key: bytes, range_end: bytes = b"", *, prev_kv: bool = False) -> DeleteRangeResult:
        return self.delete_range_request(DeleteRangeRequest(key, range_end, prev_kv))

    def delete_range_request(self, r: Any) -> DeleteRangeResult:
        ops.check_delete_request(r)
        tally = Tally()
        try:
            with self.write() as view:
                return ops.apply_delete_range(view, r, tally)
        finally:
            self.counts.end(tally)

    def txn(self, compare: Iterable[Any] = (), success: Iterable[Any] = (),
            failure: Iterable[Any] = ()) -> TxnResult:
        return self.txn_request(TxnRequest(tuple(compare), tuple(success), tuple(failure)))

    def txn_request(self, r: Any) -> TxnResult:
        ops.check_txn_request(r, self.max_txn_ops)
        ops.check_capped(self._nospace, "txn", r)
        if ops.is_txn_readonly(r):
            with self.read() as view:
                return ops.apply_txn(view, r, self.lease_check, write=False, counts=self.counts)
        with self.write() as wview:
            return ops.apply_txn(wview, r, self.lease_check, write=True, counts=self.counts)

    def request(self, op: Any) -> Any:
        """Dispatch any request object (ours or one with etcd's field names)."""
        kind = ops.op_kind(op)
        if kind == "range":
            return self.range_request(op)
        if kind == "put":
            return self.put_request(op)
        if kind == "delete":
            return self.delete_range_request(op)
        return self.txn_request(op)

    def delete_keys(self, keys: Iterable[bytes]) -> DeleteRangeResult:
        """Delete these keys in ONE revision (lease revocation)."""
        deleted = 0
        tally = Tally()
        with self.write() as view:
            for key in sorted(set(keys)):
                tally.deletes += 1
                deleted += view.delete_range(key, None)[0]
            self.counts.end(tally)
            return DeleteRangeResult(revision=view.rev + 1 if view.changes else view.rev, deleted=deleted)

    def keys_by_lease(self, lease: int) -> list[bytes]:
        """The keys currently attached to ``lease``, sorted ([] for 0, "no lease")."""
        return sorted(self._lease_keys.get(lease, ()))

    def leases(self) -> dict[int, int]:
        """Lease id -> number of attached keys, for every lease in use."""
        return {lease: len(keys) for lease, keys in self._lease_keys.items()}

    def bump_revision(self, amount: int) -> int:
        """Move the current revision ``amount`` ahead without a change (etcdutl's restore
        ``--bump-revision``: revisions a restored cluster hands out are then newer than any
        its clients saw before the restore); the new revision. The bump is in the meta
        bucket's current revision, which a reopened store takes as its revision."""
        if amount < 0:
            raise ValueError("a revision bump must not be negative")
        with self.backend.batch():
            self._pending += amount
        return self._pending

    # -- compaction and hashing ----------------------------------------------------------

    def compact(self, rev: int, *, physical: bool = False) -> CompactionJob:
        """Compact history at ``rev``: reads below it fail from now on (logical, done when
        this returns). Returns the background job (index compaction, then record
        deletion); ``physical=True`` waits for it (not allowed inside a batch)."""
        if physical and self.backend.current_batch() is not None:
            raise RuntimeError("a physical compaction cannot be awaited inside a write batch")
        with self.backend.batch() as batch:
            if rev <= self._compact_rev:
                raise CompactedRevisionError()
            if rev > self._pending:
                raise FutureRevisionError()
            batch.txn.put(META_SCHEDULED_COMPACT, encode_int(META_SCHEDULED_COMPACT, rev),
                          db=batch.dbis[BUCKET_META])
            batch.commit_now()
            previous = self._compact_rev
            with self.gate.exclusive():  # reads under way below ``rev`` finish first
                self._compact_rev = rev
            job = self._compactor.submit(CompactionJob(rev, self.index, previous=previous))
        self.last_job = job
        if physical:
            job.wait()
            if job.error is not None:
                raise job.error
        return job

    def hash_kv(self, rev: int = 0) -> HashKVResult:
        return hash_kv(self, rev)

    def hash_by_rev(self, rev: int = 0) -> HashKVResult:
        """etcd's ``HashStorage.HashByRev``, what HashKV answers: the hash a compaction
        recorded at ``rev`` when there is one (its ``compact_revision`` the compaction point
        before it), else ``hash_kv(rev)``."""
        for recorded in self.compaction_hashes():
            if recorded.hash_revision == rev:
                return HashKVResult(hash=recorded.hash, compact_revision=recorded.compact_revision,
                                    hash_revision=rev, revision=self._rev)
        return hash_kv(self, rev)

    def compaction_hashes(self) -> list[HashKVResult]:
        """The hashes the last ten compactions since this process opened the store recorded
        (``kvraft.storage.mvcc.hash.compaction_hash``), oldest first; none for a compaction
        resumed at open (some of its records may be gone)."""
        return list(self._compaction_hashes)

    def record_compaction_hash(self, recorded: HashKVResult) -> None:
        """(The compactor's, holding the writer lock.) Keep the newest ten, as etcd."""
        hashes = sorted([*self._compaction_hashes, recorded], key=lambda h: h.hash_revision)
        self._compaction_hashes = hashes[-COMPACTION_HASHES_KEPT:]

    def events(self, start_rev: int, end_rev: int = 0) -> list[tuple[int, list[Event]]]:
        """History for watchers: the events of revisions ``[start_rev, end_rev)`` (0: to
        the current revision), grouped by revision. CompactedRevisionError if
        ``start_rev`` is below the compaction point."""
        from kvraft.storage.mvcc.rebuild import read_events

        if start_rev < self._compact_rev:
            raise CompactedRevisionError()
        with self.read() as view:
            return read_events(view, start_rev, end_rev or view.rev + 1)

    # -- maintenance ---------------------------------------------------------------------

    def sizes(self) -> tuple[int, int]:
        """``(db_size, db_size_in_use)`` in bytes (etcd's ``dbSize``, ``dbSizeInUse``)."""
        return self.backend.sizes()

    def verify(self) -> dict[str, Any]:
        """Check every record of the live generation against the rebuilt state."""
        from kvraft.storage.mvcc.rebuild import verify_store

        return verify_store(self)

    def snapshot(self, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> SnapshotStream:
        """A consistent snapshot of the whole backend at the last commit, as a stream of
        chunks (see ``kvraft.storage.snapshot``)."""
        self._settle()
        return SnapshotStream(self.backend, chunk_bytes, on_close=self.timings.snapshot_seconds.observe)

    def snapshot_file(self, piece_bytes: int = DEFAULT_CHUNK_BYTES) -> SnapshotFile:
        """``snapshot`` as the store's LMDB file, compacted (``kvraft.storage.snapshot``)."""
        self._settle()
        return SnapshotFile(self.backend, piece_bytes, on_close=self.timings.snapshot_seconds.observe)

    def restore(self, chunks: Iterable[bytes | memoryview], file: bool = False) -> RestoreReport:
        """Replace the whole state with a snapshot stream (``file``: a ``snapshot_file``'s
        bytes), verified first; on error the store is unchanged. Pending physical compactions
        of the old state are dropped; reads under way finish first (the gate), new ones see
        the restored state."""
        self._settle()
        if self.backend.current_batch() is not None:
            raise RuntimeError("restore cannot run inside a write batch")
        with self.backend.maint_lock:
            if file:
                report = restore_file(self.backend, chunks, self.backend.next_generation_path())
            else:
                report = restore_generation(self.backend, chunks)
            self._install(report.path)
        return report

    def install_prepared(self, path: Path, consistent_index: tuple[int, int]) -> None:
        """``restore`` from a generation file built beforehand (``restore_generation`` at
        ``path``: a received snapshot's store, built as it arrived), recording
        ``consistent_index`` in it first. The file becomes the live generation."""
        self._settle()
        if self.backend.current_batch() is not None:
            raise RuntimeError("restore cannot run inside a write batch")
        with self.backend.maint_lock:
            mark_consistent_index(self.backend, path, *consistent_index)
            self._install(path)

    def _install(self, path: Path) -> None:
        """Switch to the generation file at ``path`` (the maintenance lock held)."""
        with self.backend.writer_lock, self.gate.exclusive():
            self._compactor.cancel_pending()
            old = self.backend.install(path)
            self._reload()
        self.backend.release_old(old)

    def defragment(self, progress: Callable[[str], None] | None = None) -> DefragReport:
        """Rewrite the backend compactly while reads and writes go on (``defrag``)."""
        self._settle()
        timings = self.timings
        timings.defrag_inflight = 1
        try:
            with timings.defrag_seconds.timer():
                return defragment(self.backend, progress=progress)
        finally:
            timings.defrag_inflight = 0

    def close(self) -> None:
        self._settle()
        self._compactor.close()
        with self.backend.maint_lock:  # a defragmentation in another thread finishes first
            self.backend.close()

    def __enter__(self) -> MVCCStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
