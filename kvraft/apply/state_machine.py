"""``StateMachine``: what the driver's apply stage drives, on top of the MVCC store.

- ``apply_ops(items, index, term)``: the committed ops of one Ready, applied through the
  applier chain as one unit of the store's held batch, together with the consistent
  index (the last Raft index applied), so a restart resumes exactly after it. Units are
  group-committed, as etcd's backend batches its commits: ONE LMDB commit (one
  ``fdatasync``) once ``COMMIT_INTERVAL_S`` passed or ``COMMIT_OPS`` ops were applied since
  the first unit held (``--backend-batch-interval``, ``--backend-batch-limit``), or when the
  apply stage asks (``commit``: it is idle). Until then the applied state is in memory and
  in the open write transaction, which every read on the member's thread goes through; a
  crash loses it and the restart re-applies it from the durable Raft log (the consistent
  index on disk says from where). While a compaction's background part is queued or runs,
  each unit commits at its apply: the compactor takes the writer lock between its batches.
- ``apply_member``: membership bookkeeping (the registry lives in the server layer and is
  handed in as ``membership``; it only needs ``apply(op)``, ``to_wire()`` and
  ``restore(wire)``).
- ``snapshot_source`` / ``restore_begin`` + ``restore_end``: the whole state machine as bytes
  for a Raft snapshot a leader sends (msgpack ``[1, membership, mvcc snapshot]``, or streamed:
  ``[2, membership]`` then the stream), built and restored with the store's part in a worker
  thread; a follower that built the store as it arrived installs that file
  (``[3, membership, file name, sha256]``); a member's own snapshots hold no data (its store
  is the state: ``flush`` makes it durable at the snapshot's index).

Snapshots, restores, defragmentation, ``flush`` and ``close`` commit what is held first;
before the Raft log is compacted the store is flushed (``flush``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import zlib
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any, TypeVar

import msgpack

from kvraft import failpoints
from kvraft.apply.chain import Applier, CorruptApplier, QuotaGuard, build_chain
from kvraft.apply.errors import EtcdError
from kvraft.apply.ops import BatchOp, MemberOp, SessionOp, TxnOp, describe, op_name
from kvraft.apply.sessions import Sessions
from kvraft.apply.validate import as_etcd_error
from kvraft.durations import ETCD_APPLY_BUCKETS_S, DurationHistogram
from kvraft.storage.errors import BatchAbortedError, StorageCorruptionError
from kvraft.storage.mvcc import MVCCStore
from kvraft.storage.mvcc import ops as mvcc_ops
from kvraft.storage.mvcc.errors import CompactedRevisionError, MVCCError
from kvraft.storage.mvcc.types import HashKVResult
from kvraft.storage.snapshot import SnapshotFile, SnapshotStream, drop_prepared, prepared_index

__all__ = ["WARN_APPLY_S", "StateMachine"]

log = logging.getLogger(__name__)

_A = TypeVar("_A", bound=Applier)

SNAPSHOT_FORMAT = 1
SNAPSHOT_STREAM_FORMAT = 2
"""``[2, members]`` then the store's stream, unwrapped: what a leader streams while it builds
it, to a member that announced ``snapshot-stream`` (``kvraft.server.wire``)."""
SNAPSHOT_PREPARED_FORMAT = 3
"""``[3, members, file name, sha256]``: the store was built as the snapshot arrived, and waits
in that file beside the live one (``kvraft.server.snapshot_receive``); what a follower's WAL
records for a snapshot it received streamed, instead of the store's bytes."""
SNAPSHOT_FILE_FORMAT = 4
"""``[4, members]`` then the store's LMDB file as it is, compacted, and its trailer
(``kvraft.storage.snapshot.SnapshotFile``): what a leader sends a member of its platform that
announced ``snapshot-file`` (``kvraft.server.wire.FEATURE_SNAPSHOT_FILE``); its receiver
writes the bytes instead of inserting records again."""
COMMIT_INTERVAL_S = 0.1
"""The longest applied units are held before their commit (etcd: ``--backend-batch-interval``)."""
COMMIT_OPS = 10_000
"""The most ops held before a commit (etcd: ``--backend-batch-limit``)."""
WARN_APPLY_S = 0.1
"""An op applied (or a read served) slower than this is logged and counted (etcd's
``warnApplyDuration``: ``etcd_server_slow_apply_total``)."""


def _bin_header(length: int) -> bytes:
    """msgpack's header of a bin of ``length`` bytes (bin 8, 16 or 32)."""
    if length < 1 << 8:
        return b"\xc4" + length.to_bytes(1, "big")
    if length < 1 << 16:
        return b"\xc5" + length.to_bytes(2, "big")
    return b"\xc6" + length.to_bytes(4, "big")


RESTORE_CHUNK_BYTES = 1 << 20


def snapshot_head(data: bytes | bytearray | memoryview) -> tuple[int, Any, Any, int] | None:
    """The head of a snapshot's data: ``(fields, format, members, offset of what follows)``;
    None when ``data`` ends before it (a receiver with only the first bytes yet)."""
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(data)
    try:
        fields, version, members = unpacker.read_array_header(), unpacker.unpack(), unpacker.unpack()
    except msgpack.OutOfData:
        return None
    return fields, version, members, unpacker.tell()


def split_snapshot(data: bytes) -> tuple[Any, Iterator[memoryview]]:
    """A snapshot's data, ``[SNAPSHOT_FORMAT, members, <store stream as one bin>]`` or
    ``[SNAPSHOT_STREAM_FORMAT, members]`` followed by the stream (or ``[SNAPSHOT_FILE_FORMAT,
    members]`` followed by the store's file: ``is_file_snapshot``): the member registry, and the
    store's stream as views of ``data`` in 1 MiB pieces (not copied: unpacking the bin copied
    the whole store, and the restore then buffered it whole again). ``ValueError`` on anything
    else."""
    view = memoryview(data)
    size = 4096
    while (head := snapshot_head(view[:size])) is None:
        if size >= len(data):
            raise ValueError("snapshot data truncated")
        size *= 16
    fields, version, members, offset = head
    if fields == 2 and version in (SNAPSHOT_STREAM_FORMAT, SNAPSHOT_FILE_FORMAT):
        return members, _views(view, offset)
    if fields != 3 or version != SNAPSHOT_FORMAT:
        raise ValueError(f"unknown snapshot format {version!r} ({fields} fields)")
    width = {0xC4: 1, 0xC5: 2, 0xC6: 4}.get(data[offset]) if offset < len(data) else None
    if width is None:
        raise ValueError("snapshot data: the store's stream is not a bin")
    start = offset + 1 + width
    length = int.from_bytes(data[offset + 1 : start], "big")
    if start + length != len(data):
        raise ValueError(f"snapshot data: the store's stream is {len(data) - start} bytes, its header says {length}")
    return members, _views(view, start)


def is_file_snapshot(data: bytes | bytearray | memoryview) -> bool:
    """Whether a snapshot's data is ``[SNAPSHOT_FILE_FORMAT, members]`` and a store's file."""
    return bytes(data[:2]) == b"\x92\x04"  # (a fixarray of 2, then 4)


def prepared_snapshot(data: bytes) -> tuple[Any, str] | None:
    """``(members, file name)`` of a snapshot whose store a follower built as it arrived
    (``[SNAPSHOT_PREPARED_FORMAT, members, name, sha256]``); None for the other formats.
    ``ValueError`` when the name is not one a receiver gives (``prepared_name``)."""
    if not data.startswith(b"\x94\x03"):  # (a fixarray of 4, then 3: never the others' head)
        return None
    _, members, name, _sha256 = msgpack.unpackb(data, raw=False)  # (a few hundred bytes)
    if not isinstance(name, str) or prepared_index(name) is None:
        raise ValueError(f"malformed prepared-store snapshot data (names {name!r})")
    return members, name


def _views(view: memoryview, start: int) -> Iterator[memoryview]:
    """``view`` from ``start`` on, in ``RESTORE_CHUNK_BYTES`` pieces (slices: nothing copied)."""
    return (view[i : i + RESTORE_CHUNK_BYTES] for i in range(start, len(view), RESTORE_CHUNK_BYTES))


class StateMachine:
    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        quota_bytes: int,
        member_id: int,
        max_txn_ops: int,
        membership: Any,
        wrap: Callable[[Applier], Applier] | None = None,
        commit_interval_s: float | None = None,
        commit_ops: int | None = None,
        warn_apply_s: float | None = None,
        compaction_batch: int = 1000,
        sync: bool = True,
        compaction_sleep_s: float = 0.0,
    ) -> None:
        self.path = Path(path)
        self.commit_interval_s = commit_interval_s
        """``--backend-batch-interval``; None: ``COMMIT_INTERVAL_S``."""
        self.commit_ops = commit_ops
        """``--backend-batch-limit``; None: ``COMMIT_OPS``."""
        self.warn_apply_s = WARN_APPLY_S if warn_apply_s is None else warn_apply_s
        """``--experimental-warning-apply-duration``: an apply or read slower is logged and counted."""
        # data pages fsynced on every apply commit, the meta page by the next one: a power
        # cut undoes at most the last apply (the consistent index rolls back with it and the
        # Raft log re-applies it); MDB_NOSYNC could leave a mix no member ever had
        # (docs/design/storage.md, section 8)
        # (sync False: --unsafe-no-fsync, LMDB's MDB_NOSYNC)
        self.store = MVCCStore(self.path, sync=sync, metasync=False, max_txn_ops=max_txn_ops,
                               compaction_batch=compaction_batch, compaction_sleep_s=compaction_sleep_s)
        self.chain = build_chain(self.store, member_id, wrap)
        self.chain_backend = _innermost(self.chain)
        self.quota = QuotaGuard(self.store, quota_bytes)
        self.sessions = Sessions(self.store)
        """Numbered writes' answers: a copy of one already applied is answered, not applied."""
        self.membership = membership
        self.on_members_changed: Callable[[], None] = lambda: None
        self.after_restore: list[Callable[[], None]] = []
        """Called once a received snapshot replaced the state (``kvraft.server.features``
        reloads the leases, the auth state and the watch hub)."""
        self._held_since = 0.0
        self._held_ops = 0
        self.commits = 0
        self.slow_applies = 0
        """Ops applied and reads served that took longer than ``warn_apply_s``."""
        self.apply_seconds: dict[tuple[str, bool], DurationHistogram] = {}
        """Per (op, success): each op applied (etcd_server_apply_duration_seconds)."""
        self.range_seconds = {ok: DurationHistogram(ETCD_APPLY_BUCKETS_S) for ok in (True, False)}
        """Per success: each read served (etcd_server_range_duration_seconds)."""
        self.failure: BaseException | None = None
        """Set when a commit of held units failed: they rolled back to the state on disk,
        so no further entry may be applied on top (its revisions would differ from every
        other member's); the member must stop, and a restart re-applies them from the log."""
        self.on_failure: Callable[[BaseException], None] = lambda exc: None
        """Called once, with the error, when a commit fails (the node stops the member)."""

    def wrap_chain(self, wrap: Callable[[Applier], _A]) -> _A:
        """Put appliers (lease, auth: ``kvraft.server.features``) around the chain, inside
        its outermost ``CorruptApplier`` (a CORRUPT alarm refuses writes before anything
        else looks at them, as etcd's). Returns what was wrapped in."""
        outer = self.chain
        if not isinstance(outer, CorruptApplier):
            raise TypeError(f"the chain's outermost applier is {type(outer).__name__}, not CorruptApplier")
        wrapped = wrap(outer.inner)
        outer.inner = wrapped
        return wrapped

    # -- the apply stage -----------------------------------------------------------------
    def interval_s(self) -> float:
        """The longest applied units are held before their commit."""
        return COMMIT_INTERVAL_S if self.commit_interval_s is None else self.commit_interval_s

    def applied_index(self) -> int:
        return self.store.consistent_index[0]

    def applied_term(self) -> int:
        """The term of the entry at ``applied_index``."""
        return self.store.consistent_index[1]

    def apply_ops(self, items: list[tuple[int, Any]], index: int, term: int) -> list[Any]:
        if self.failure is not None:
            raise BatchAbortedError(f"state machine stopped by a failed commit: {self.failure!r}")
        results: list[Any] = []
        store = self.store
        if not store.holding:
            store.hold()
            self._held_since = time.monotonic()
        count = len(items)
        warn_s = self.warn_apply_s
        try:
            with store.batch():
                for _request_id, op in items:
                    if type(op) is BatchOp:
                        count += len(op.ops) - 1
                    started = time.perf_counter()
                    try:
                        if type(op) is BatchOp and any(type(item) is SessionOp for item in op.ops):
                            results.append([self._apply_one(item) for item in op.ops])
                        else:
                            results.append(self._apply(op))
                    except EtcdError as exc:
                        results.append(exc)
                    took = time.perf_counter() - started
                    self._observe_apply(op, results[-1], took)
                    if took > warn_s:
                        self._slow("", op, took, results[-1])
                store.set_consistent_index(index, term)
            store.publish()
        except BaseException as exc:  # nothing held may reach the disk: the log re-applies it
            store.abort_held(exc)
            with contextlib.suppress(Exception):  # (the error raised is the one that matters)
                self.sessions.load()  # its memory back to what is on disk, as the store's
            raise
        self._held_ops += count
        limit = COMMIT_OPS if self.commit_ops is None else self.commit_ops
        # (while a compaction runs nothing is held past its apply: the compactor needs the
        # writer lock between its steps, and would otherwise wait out the whole interval)
        if self._held_ops >= limit or time.monotonic() - self._held_since >= self.interval_s() or store.compacting:
            self.commit()
        return results

    def _observe_apply(self, op: Any, result: Any, took: float) -> None:
        """etcd's ``etcd_server_apply_duration_seconds{version,op,success}``: a failure is an
        error other than a compacted revision (etcd's rule)."""
        ok = not isinstance(result, EtcdError) or result.message == CompactedRevisionError.message
        key = (op_name(op), ok)
        hist = self.apply_seconds.get(key)
        if hist is None:
            hist = self.apply_seconds[key] = DurationHistogram(ETCD_APPLY_BUCKETS_S)
        hist.observe(took)

    def _apply(self, op: Any) -> Any:
        """``op`` through the chain; a numbered one through the table first (``Sessions``)."""
        if type(op) is SessionOp:
            return self.sessions.apply(op, self.chain.apply)
        return self.chain.apply(op)

    def _apply_one(self, op: Any) -> Any:
        """One op of a batch that holds numbered puts (the fast path's coalescer): applied
        alone, as its own entry would have been; its result or ``EtcdError``."""
        try:
            return self._apply(op)
        except EtcdError as exc:
            return exc

    @property
    def holding(self) -> bool:
        """Whether applied units wait for their commit."""
        return bool(self.store.holding)

    def commit(self) -> None:
        """Commit the applied units held (one LMDB commit), if any."""
        if self.store.holding:
            self._held_ops = 0
            self.commits += 1
            try:
                self.store.release()
            except BaseException as exc:  # what was held rolled back: stop (see ``failure``)
                if self.failure is None:
                    self.failure = exc
                    self.on_failure(exc)
                raise

    def apply_member(self, op: MemberOp, index: int, term: int) -> None:
        if self.failure is not None:
            raise BatchAbortedError(f"state machine stopped by a failed commit: {self.failure!r}")
        self.commit()  # the registry file and the store then move together, as before
        self.membership.apply(op)
        with self.store.batch():
            self.store.set_consistent_index(index, term)
        self.on_members_changed()

    def _slow(self, prefix: str, op: Any, took: float, result: Any) -> None:
        """etcd's "apply request took too long" (``warnOfExpensiveRequest``)."""
        self.slow_applies += 1
        error = result if isinstance(result, BaseException) else None
        log.warning("apply request took too long", extra={"fields": {
            "took": f"{took * 1000:.3f}ms", "expected-duration": f"{self.warn_apply_s * 1000:.0f}ms",
            "prefix": prefix, "request": describe(op), **({"error": str(error)} if error is not None else {})}})

    # -- reads ---------------------------------------------------------------------------
    def range(self, op: Any) -> Any:
        return self._read("read-only range ", self.store.range_request, op)

    @staticmethod
    def is_read_only(op: TxnOp) -> bool:
        return mvcc_ops.is_txn_readonly(op)

    @staticmethod
    def is_serializable(op: TxnOp) -> bool:
        return mvcc_ops.is_txn_serializable(op)

    def txn_read_only(self, op: TxnOp) -> Any:
        return self._read("read-only txn ", self.store.txn_request, op)

    def _read(self, prefix: str, run: Callable[[Any], Any], op: Any) -> Any:
        """A read on the store, its MVCC error as etcd's, a slow one logged and counted
        under ``prefix`` (etcd's)."""
        started = time.perf_counter()
        ok = False
        try:
            result = run(op)
            ok = True
            return result
        except MVCCError as exc:
            raise as_etcd_error(exc) from None
        finally:
            took = time.perf_counter() - started
            self.range_seconds[ok].observe(took)  # (etcd_server_range_duration_seconds{success})
            if took > self.warn_apply_s:
                self._slow(prefix, op, took, None)

    def revision(self) -> int:
        return self.store.rev

    def alarms(self, alarm: int = 0) -> list[tuple[int, int]]:
        """``(member_id, alarm)`` raised, of one type or (0) all; a NOSPACE raised before a
        restart is member 0 (the store keeps the alarm, not who raised it)."""
        return list(self.chain_backend.raised(alarm))

    def db_sizes(self) -> tuple[int, int]:
        return self.store.sizes()

    def hash_kv(self, revision: int) -> tuple[int, int]:
        result = self.hash_kv_result(revision)
        return result.hash, result.compact_revision

    def hash_kv_result(self, revision: int, recorded: bool = True) -> HashKVResult:
        """The store's hash at ``revision`` (0: its last committed one), with the revision
        hashed, or (``recorded``) the one a compaction at ``revision`` recorded (etcd's
        ``HashByRev``); ``EtcdError`` for a compacted or future revision."""
        try:
            return self.store.hash_by_rev(revision) if recorded else self.store.hash_kv(revision)
        except MVCCError as exc:
            raise as_etcd_error(exc) from None

    def hash_all(self) -> int:
        """Hash of the whole state (etcd's ``Hash``: of its backend file; here of the key
        history and the membership, which is what must agree across members)."""
        kv_hash, _ = self.hash_kv(0)
        members = msgpack.packb(self.membership.to_wire())
        return zlib.crc32(members, kv_hash) & 0xFFFFFFFF

    # -- maintenance ---------------------------------------------------------------------
    def flush(self, index: int = 0, term: int = 0) -> None:
        """Everything applied durable, with ``index`` (``term``) recorded as applied when the
        store is behind it: entries after the last that wrote (a leader's no-op) change
        nothing, but a Raft snapshot at ``index`` holds no data, and a store behind it at the
        next start would be a store older than its log."""
        if index > self.applied_index():
            self.apply_ops([], index, term)
        self.commit()
        self.store.backend.sync()

    def defragment(self) -> None:
        self.commit()
        self.store.defragment()

    def snapshot_data(self) -> bytes:
        return b"".join(self.snapshot_source()())

    def snapshot_source(self) -> Callable[[], list[bytes]]:
        """What is held committed, the member registry copied and a read transaction opened
        on that commit, here; the returned function builds ``snapshot_data``'s bytes from them,
        as pieces to be sent in order (never joined on the leader), and may run in another
        thread (the store's copy is what takes time). The data of a
        snapshot sent to a follower (``kvraft.server.snapshot_send``); the member's own
        snapshots hold none."""
        members, stream = self._pin()

        def build() -> list[bytes]:
            failpoints.hit("snapshot_build")
            chunks = list(stream)  # (chunks of 1 MiB, each copied while the GIL comes and goes)
            # msgpack ``[SNAPSHOT_FORMAT, members, <the stream as one bin>]``: its head, then the
            # stream's chunks as they are (joining them copied the store again, holding the GIL)
            packer = msgpack.Packer(use_bin_type=True)
            head = packer.pack_array_header(3) + packer.pack(SNAPSHOT_FORMAT) + packer.pack(members)
            return [head + _bin_header(sum(len(c) for c in chunks)), *chunks]

        return build

    def _pin(self, file: bool = False) -> tuple[list[Any], SnapshotStream | SnapshotFile]:
        """The state to send as it is now: what is held committed, the member registry copied
        and a read transaction opened on that commit (the store's snapshot stream; ``file``:
        its file)."""
        self.commit()
        return self.membership.to_wire(), self.store.snapshot_file() if file else self.store.snapshot()

    def snapshot_stream_source(self, file: bool = False) -> Generator[bytes, None, None]:
        """``snapshot_source`` for a member that takes the streamed format: pinned here (the
        held units committed, the registry copied, a read transaction opened), and iterated
        one piece at a time, in a worker thread, while the pieces are sent: ``[2, members]``,
        then the store's stream as it is read. With ``file`` (a member of this platform that
        takes it): ``[4, members]``, then the store's LMDB file as LMDB copies it. Closing it
        ends the read transaction."""
        members, stream = self._pin(file)

        def pieces() -> Generator[bytes, None, None]:
            try:
                failpoints.hit("snapshot_build")
                yield msgpack.packb([SNAPSHOT_FILE_FORMAT if file else SNAPSHOT_STREAM_FORMAT, members],
                                    use_bin_type=True)
                yield from stream
            finally:
                stream.close()

        return pieces()

    def restore(self, snapshot: Any) -> None:
        """Replace the state with a received snapshot's, here (at start: the store behind the
        log's snapshot). The apply stage runs the same steps with the store's part in a worker
        thread (``restore_begin``, the work, ``restore_end``)."""
        work = self.restore_begin(snapshot)
        work()
        self.restore_end(snapshot)

    def restore_begin(self, snapshot: Any) -> Callable[[], None]:
        """Check the snapshot's data and commit what is held; the returned function rebuilds
        the store from it and may run in another thread: it writes a new generation file while
        reads go on (or takes the one built as the snapshot arrived), then installs it under the
        writer lock and the read gate, as the online defragmentation does
        (``MVCCStore.restore``, ``install_prepared``). On error the store is unchanged."""
        meta = snapshot.metadata
        prepared = prepared_snapshot(snapshot.data)
        if prepared is not None:
            members, name = prepared
            path = self.store.backend.directory / name
            if not path.is_file():
                raise StorageCorruptionError(
                    f"{path}: the store of the snapshot at {meta.index} that this member received is missing "
                    "(deleted?): restore this member from a snapshot, or remove it from the cluster and add it "
                    "again with an empty data dir")

            def work() -> None:
                self.store.install_prepared(path, (meta.index, meta.term))
        else:
            members, chunks = split_snapshot(snapshot.data)
            file = is_file_snapshot(snapshot.data)

            def work() -> None:
                self.store.restore(chunks, file=file)
        self.commit()
        # the registry first (its own file): a stop or crash before the store is switched
        # leaves a store behind the log's snapshot, restored again at the next start; after
        # the switch, a store at the snapshot's index whose registry is already the snapshot's
        self.membership.restore(members)
        return work

    def discard_snapshot(self, snapshot: Any) -> None:
        """A received snapshot Raft did not take: its store, if one was built as it arrived, is
        deleted (``ApplyTarget.discard_snapshot``)."""
        try:
            prepared = prepared_snapshot(snapshot.data)
        except ValueError:
            return
        if prepared is not None:
            path = self.store.backend.directory / prepared[1]
            try:
                for p in (path, Path(f"{path}-lock")):
                    p.unlink(missing_ok=True)
            except OSError as exc:  # (left for the next start, which deletes every one left)
                log.warning("could not delete %s, a received snapshot's store not taken: %s", path, exc)

    def restore_end(self, snapshot: Any) -> None:
        """After ``restore_begin``'s work: the applied index, the sessions, the members'
        callbacks and what ``after_restore`` reloads (leases, auth, the watch hub)."""
        meta = snapshot.metadata
        with self.store.batch():
            self.store.set_consistent_index(meta.index, meta.term)
        drop_prepared(self.store.backend.directory, meta.index)  # (received again, or not taken)
        self.sessions.load()
        self.on_members_changed()
        for reload in self.after_restore:
            reload()

    def close(self) -> None:
        self.commit()
        self.store.close()


def _innermost(applier: Any) -> Any:
    while hasattr(applier, "inner"):
        applier = applier.inner
    return applier
