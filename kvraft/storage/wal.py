"""``WalLogStorage``: the durable Raft log as an append-only write-ahead log (etcd's design).

Implements ``kvraft.raft.storage.WritableLogStorage`` with the semantics of
``MemoryLogStorage`` plus the conf-state bookkeeping of ``LmdbLogStorage`` (one contract
suite runs against all three). The log since the last compaction is held in memory, as
etcd's ``MemoryStorage`` holds it; the files make it durable.

Layout: a directory::

    0000000000000007.wal          segments, named by sequence number (hex); normally one
    snap-00000000000c3500.snap    the current snapshot's data (none for an empty snapshot)

A segment is a preallocated file (``segment_bytes``, 64 MiB by default; ``fallocate``, so
an append does not change the file size and ``fdatasync`` writes no size metadata) holding
frames back to back, then zeros. The bytes of frames, records and snapshot files are
``kvraft.storage.wal_format``. Every segment starts with a HEAD frame: the whole state at
that moment (snapshot metadata, offset, hard and conf state, every retained entry), so a
segment never needs an older one. Records after the head are the write operations
themselves and are replayed through the same code that executed them.

Group commit: every write method applies its change to the in-memory log (reads see it at
once) and stages its record; ``sync()`` writes all staged records as ONE frame and calls
``fdatasync`` once. Nothing staged is durable before ``sync()`` returns; a crash loses the
batch in flight, whole (its frame fails its crc or is absent), never part of it.

Segment rotation and compaction: after a ``sync()`` that leaves the active segment past
``segment_bytes``, a new segment is written (as ``*.tmp``, preallocated, HEAD frame,
fdatasync, renamed, directory fsynced) and every older segment is deleted: compaction
drops whole segments, and what ``compact()`` removed is simply not in the new head. If the
retained entries are more than half a segment (no compaction for a long time) the active
segment grows instead, so rewriting stays a small fraction of what is written.

Open: the newest segment is replayed (older ones, ``*.tmp`` files and unreferenced
snapshot files are leftovers of an interrupted rotation: deleted). Reading it back (frame
checks, torn tails, corruption) is ``kvraft.storage.wal_replay``: a bad frame with only
zeros after it is a torn write of a batch never acknowledged: cut (zeroed, fsynced). A bad
frame with data after it, a bad head, a bad snapshot file, or snapshot files without a
segment raise ``LogCorruptionError`` (naming the frame's first entry index when readable).
``replay_only`` reads without changing anything (``kvraft.storage.fsck_wal``).

Write failures (disk full, EIO from fsync): the log refuses every later write and sync
(``OSError``); what was acknowledged stays on disk. The driver treats it as fatal.
Threading: as ``LmdbLogStorage``, one thread at a time (the driver's log writer writes).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kvraft import failpoints
from kvraft.durations import DurationHistogram
from kvraft.raft.memory_storage import entries_to_append, limit_size
from kvraft.raft.storage import CompactedError, SnapshotOutOfDateError, UnavailableError
from kvraft.raft.types import ConfState, Entry, HardState, Snapshot, SnapshotMetadata
from kvraft.storage.errors import LogCorruptionError
from kvraft.storage.lmdb_env import fsync_dir
from kvraft.storage.wal_format import (
    FRAME,
    SNAP_APPLY,
    SNAP_CREATE,
    SNAPFILE,
    encode_compact,
    encode_conf,
    encode_entries,
    encode_frame,
    encode_hard,
    encode_head,
    encode_snap,
    segment_name,
    snap_file_name,
)
from kvraft.storage.wal_replay import (
    AppendRecord,
    CompactRecord,
    ConfRecord,
    HardRecord,
    HeadRecord,
    SnapRecord,
    check_snapshot_file,
    iter_records,
    read_snapshot_file,
    replay_segment,
)

__all__ = ["DEFAULT_SEGMENT_BYTES", "WalLogStorage", "is_wal_dir"]

log = logging.getLogger("kvraft.wal")

WARN_SYNC_S = 1.0
"""A sync slower than this logs etcd's "slow fdatasync" (its ``warnSyncDuration``)."""

DEFAULT_SEGMENT_BYTES = 64 << 20


def is_wal_dir(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` holds a WAL (a directory with at least one segment)."""
    p = Path(path)
    return p.is_dir() and any(p.glob("*.wal"))


def _lock_dir(path: Path) -> int:
    """An exclusive ``flock`` on the WAL's directory, held while the log is open (etcd locks
    its WAL files): a second process opening the same log (two members started on one data
    dir) is refused instead of writing into the same segment. Released by ``close`` or
    the process's exit, SIGKILL included."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise OSError(f"{path}: in use by another process (is a member already running on this data dir?); "
                      "stop it first, or give this member its own --data-dir") from None
    return fd


class WalLogStorage:
    """Durable ``WritableLogStorage`` on a write-ahead log; see the module docstring."""

    _lock_fd = -1  # (a read-only replay, ``replay_only``, takes no lock)

    def __init__(self, path: str | os.PathLike[str], *, segment_bytes: int = DEFAULT_SEGMENT_BYTES) -> None:
        self.path = Path(path)
        self.segment_bytes = segment_bytes
        self._reset_state()
        self._fd = -1
        self._seq = 0
        self._pos = 0
        self._failed: BaseException | None = None
        self.frames = 0  # frames replayed at open
        self.torn_tail: tuple[int, int] | None = None  # (offset, bytes): see wal_replay
        self._unsynced: tuple[int, int] | None = None  # (offset, length) written, not yet fdatasynced
        self.fsync = True
        """False: ``sync`` writes its frame without ``fdatasync`` (``--unsafe-no-fsync``)."""
        if failpoints.enabled():
            failpoints.on_crash(self._lose_unsynced)
        self.syncs = 0
        self.rotations = 0
        self.fsync_seconds = DurationHistogram()  # etcd_disk_wal_fsync_duration_seconds
        self.write_seconds = DurationHistogram()  # etcd_disk_wal_write_duration_seconds (the write call)
        self.bytes_written = 0  # frames made durable: etcd_disk_wal_write_bytes_total
        created = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        if created:
            fsync_dir(self.path.parent)
        self._lock_fd = _lock_dir(self.path)
        try:
            self._open()
        except LogCorruptionError as exc:  # (replay names a segment or snapshot file: say where it is)
            os.close(self._lock_fd)
            if str(self.path) in exc.detail:
                raise
            raise LogCorruptionError(exc.index, f"{self.path}: {exc.detail}") from exc
        except BaseException:
            os.close(self._lock_fd)
            raise

    def _reset_state(self) -> None:
        self._hard = HardState()
        self._snapshot = Snapshot()
        self._snap_len, self._snap_crc = 0, 0
        self._snap_dirty = False
        self._entries: list[Entry] = [Entry(term=0, index=0)]
        self._conf_index, self._conf = 0, ConfState()
        self._staged: list[bytes] = []
        self._replaying = False

    # -- lifecycle -----------------------------------------------------------------------

    @classmethod
    def bootstrap(
        cls, path: str | os.PathLike[str], voters: Iterable[int], learners: Iterable[int] = (),
        **kwargs: Any,
    ) -> WalLogStorage:
        """A durable log for a founding member, identical to
        ``MemoryLogStorage.bootstrap(voters, learners)`` (durable before returning)."""
        log = cls(path, **kwargs)
        try:
            log.bootstrap_members(voters, learners)
        except BaseException:
            log.close()
            raise
        return log

    def is_empty(self) -> bool:
        """Nothing was ever written (a new log, or a bootstrap a crash interrupted)."""
        return self.last_index() == 0 and self._hard.is_empty() and self._snapshot.metadata == SnapshotMetadata()

    def bootstrap_members(self, voters: Iterable[int], learners: Iterable[int] = ()) -> None:
        """Turn this empty log into a founding member's (atomically: one new segment)."""
        from kvraft.raft.memory_storage import MemoryLogStorage

        mem = MemoryLogStorage.bootstrap(voters, learners)
        if not self.is_empty() or self._staged:
            raise ValueError(f"{self.path}: not an empty log, refusing to bootstrap")
        hard, conf = mem.initial_state()
        self._snapshot = mem.snapshot()
        self._conf_index, self._conf = 0, conf
        self._entries = [Entry(term=0, index=0), *mem.entries(mem.first_index(), mem.last_index() + 1)]
        self._hard = hard
        self._rotate()  # a segment whose head is exactly this state

    def close(self, *, sync: bool = True) -> None:
        """Write what is staged (unless ``sync=False``: drop it, as a crash would) and
        close the files. The object is unusable afterwards."""
        if sync and self._staged and self._failed is None:
            self.sync()
        self._staged = []
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def __enter__(self) -> WalLogStorage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- files ---------------------------------------------------------------------------

    def _segment(self, seq: int) -> Path:
        return self.path / segment_name(seq)

    def _snap_file(self, index: int) -> Path:
        return self.path / snap_file_name(index)

    def _open(self) -> None:
        for tmp in self.path.glob("*.tmp"):
            tmp.unlink()
        segments = sorted(self.path.glob("*.wal"))
        for stray in segments:  # (a copy or a backup: never taken for a segment by its name)
            if len(stray.stem) != 16 or stray.stem.strip("0123456789abcdef"):
                raise LogCorruptionError(0, f"{self.path}: segment name {stray.name!r} is not <16 hex digits>.wal")
        if not segments:
            for orphan in self.path.glob("snap-*.snap"):  # written only once a segment exists
                raise LogCorruptionError(0, f"{self.path}: no segment, but snapshot file {orphan.name}: the log is missing")
            self._rotate()
            return
        last = segments[-1]
        self._seq = int(last.stem, 16)
        self._replay(last)
        for old in segments[:-1]:  # superseded by the newest head (an interrupted rotation)
            old.unlink()
        if len(segments) > 1:
            fsync_dir(self.path)
        self._check_snapshot_file(read=False)
        self._fd = os.open(last, os.O_RDWR)
        self._rotate_at = self.segment_bytes

    def _replay(self, segment: Path, *, repair: bool = True) -> None:
        """Replay ``segment`` into the log (``wal_replay.replay_segment``). A torn tail is
        described in ``torn_tail`` (offset, bytes) and cut, unless ``repair`` is false (a
        read-only check)."""
        self._replaying = True
        try:
            replayed = replay_segment(segment, self._apply_payload, repair=repair)
        finally:
            self._replaying = False
        self.frames, self.torn_tail, self._pos = replayed.frames, replayed.torn_tail, replayed.end

    def _check_snapshot_file(self, *, read: bool, drop: bool = True) -> None:
        """Check the current snapshot's file: its header and size (``read``: every byte against
        its crc, as ``snapshot_data`` does); delete the others (``drop``). The data is not
        kept: it is read again only where it is needed (a member whose store is behind it)."""
        meta = self._snapshot.metadata
        keep = None
        if meta.index and self._snap_len:
            keep = self._snap_file(meta.index)
            if read:
                read_snapshot_file(keep, self._snap_len, self._snap_crc)
            else:
                check_snapshot_file(keep, self._snap_len, self._snap_crc)
        if drop:
            self._drop_snapshot_files(keep)

    def snapshot_data(self) -> bytes:
        """The current snapshot's data, read from its file and checked (empty for a snapshot
        without data: one this member took, whose state is its store). ``snapshot()`` holds
        only the metadata: a received snapshot's data is the size of the store, and a member
        needs it again only after a crash between recording it and restoring the store."""
        if not (self._snapshot.metadata.index and self._snap_len):
            return b""
        return read_snapshot_file(self._snap_file(self._snapshot.metadata.index), self._snap_len, self._snap_crc)

    def _drop_snapshot_files(self, keep: Path | None, *, older_only: bool = False) -> None:
        """Delete the snapshot files but ``keep``; with ``older_only`` (at run time) only those
        of lower indexes (never one of a snapshot about to be recorded)."""
        below = self._snapshot.metadata.index
        for f in self.path.glob("snap-*.snap"):
            if f == keep:
                continue
            if older_only:
                try:
                    if int(f.stem.removeprefix("snap-"), 16) >= below:
                        continue
                except ValueError:
                    continue
            f.unlink(missing_ok=True)

    def _write_snapshot_file(self, index: int, data: bytes) -> int:
        """Write the data of a snapshot durably (before its record is staged); its crc."""
        crc = zlib.crc32(data)
        if not data:
            return crc
        final = self._snap_file(index)
        tmp = final.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, SNAPFILE.pack(len(data), crc))
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
        fsync_dir(self.path)
        return crc

    # -- records -------------------------------------------------------------------------

    def _apply_payload(self, payload: bytes | memoryview, head: bool) -> None:
        """Replay one frame's records through the methods that wrote them."""
        for record in iter_records(payload, head=head):
            match record:
                case AppendRecord(entries):
                    self.append(entries)
                case HardRecord(hard):
                    self.set_hard_state(hard)
                case ConfRecord(index, conf):
                    self.set_conf_state(conf, index)
                case SnapRecord(how, meta, length, crc):
                    if how == SNAP_APPLY:
                        self._apply_snapshot(Snapshot(metadata=meta), length, crc)
                    else:
                        self._create_snapshot(meta.index, meta.conf_state, b"", length, crc)
                case CompactRecord(index):
                    self.compact(index)
                case HeadRecord():
                    self._restore_head(record)

    def _restore_head(self, head: HeadRecord) -> None:
        if head.seq != self._seq:
            raise LogCorruptionError(0, f"head names segment {head.seq}, file is {self._seq}")
        self._entries = [head.offset]
        self._conf_index, self._conf = head.conf_index, head.conf
        self._snapshot = Snapshot(metadata=head.snapshot)
        self._snap_len, self._snap_crc = head.snap_len, head.snap_crc
        self._hard = head.hard

    def _head_payload(self) -> bytes:
        return encode_head(
            self._seq, self._entries, self._conf_index, self._conf, self._snapshot.metadata,
            self._snap_len, self._snap_crc, self._hard,
        )

    def _stage(self, record: bytes) -> None:
        if self._replaying:
            return
        if self._failed is not None:
            raise OSError(f"{self.path}: the log failed earlier ({self._failed!r}); refusing writes")
        self._staged.append(record)

    # -- read side (LogStorage) ------------------------------------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self._hard, self._conf

    def first_index(self) -> int:
        return self._entries[0].index + 1

    def last_index(self) -> int:
        return self._entries[0].index + len(self._entries) - 1

    def snapshot(self) -> Snapshot:
        return self._snapshot

    def term(self, index: int) -> int:
        offset = self._entries[0].index
        if index < offset:
            raise CompactedError(f"term of {index}: compacted up to {offset}")
        if index > self.last_index():
            raise UnavailableError(f"term of {index}: last index is {self.last_index()}")
        return self._entries[index - offset].term

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        offset = self._entries[0].index
        if lo <= offset:
            raise CompactedError(f"entries from {lo}: compacted up to {offset}")
        if hi > self.last_index() + 1:
            raise UnavailableError(f"entries up to {hi - 1}: last index is {self.last_index()}")
        if lo >= hi:
            return []
        return limit_size(self._entries[lo - offset : hi - offset], max_bytes)

    # -- write side (WritableLogStorage) ------------------------------------------------

    def append(self, entries: list[Entry]) -> None:
        entries = entries_to_append(self._entries, entries)
        if entries:
            if not self._replaying:  # (a replay stages nothing: not encoded for nothing either)
                self._stage(encode_entries(entries))
            del self._entries[entries[0].index - self._entries[0].index :]
            self._entries.extend(entries)

    def set_hard_state(self, hard_state: HardState) -> None:
        self._stage(encode_hard(hard_state))
        self._hard = hard_state

    def set_conf_state(self, conf_state: ConfState, index: int) -> None:
        """Record the membership in force as of log ``index`` (the conf entry applied
        there). ``initial_state()`` returns the newest of this and the snapshots'."""
        self._stage(encode_conf(index, conf_state))
        self._conf_index, self._conf = index, conf_state

    def _install(self, snapshot: Snapshot, length: int, crc: int) -> None:
        self._snapshot = Snapshot(metadata=snapshot.metadata)  # (the data is in its file)
        self._snap_len, self._snap_crc = length, crc
        self._snap_dirty = True
        if snapshot.metadata.index >= self._conf_index:
            self._conf_index, self._conf = snapshot.metadata.index, snapshot.metadata.conf_state

    def _require_newer(self, index: int) -> None:
        if index <= self._snapshot.metadata.index:
            raise SnapshotOutOfDateError(
                f"snapshot at {index} is not newer than {self._snapshot.metadata.index}"
            )

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        meta = snapshot.metadata
        self._require_newer(meta.index)  # before writing its file
        self._check_writable()
        crc = self._write_snapshot_file(meta.index, snapshot.data)
        self._apply_snapshot(snapshot, len(snapshot.data), crc)

    def _apply_snapshot(self, snapshot: Snapshot, length: int, crc: int) -> None:
        meta = snapshot.metadata
        self._require_newer(meta.index)
        self._stage(encode_snap(SNAP_APPLY, meta, length, crc))
        keep: list[Entry] = []
        offset = self._entries[0].index
        if offset < meta.index <= self.last_index() and self.term(meta.index) == meta.term:
            keep = self._entries[meta.index - offset + 1 :]
        self._entries = [Entry(term=meta.term, index=meta.index), *keep]
        self._install(snapshot, length, crc)

    def create_snapshot(self, index: int, conf_state: ConfState, data: bytes) -> Snapshot:
        return self._create_snapshot(index, conf_state, data, len(data), None)

    def _create_snapshot(self, index: int, conf_state: ConfState, data: bytes, length: int, crc: int | None) -> Snapshot:
        self._require_newer(index)
        if index > self.last_index():
            raise UnavailableError(f"snapshot at {index}: last index is {self.last_index()}")
        meta = SnapshotMetadata(index=index, term=self.term(index), conf_state=conf_state)
        if crc is None:  # a live call (replay passes the recorded crc)
            self._check_writable()
            crc = self._write_snapshot_file(index, data)
        self._stage(encode_snap(SNAP_CREATE, meta, length, crc))
        snap = Snapshot(metadata=meta, data=data)
        self._install(snap, length, crc)
        return snap

    def compact(self, compact_index: int) -> None:
        offset = self._entries[0].index
        if compact_index <= offset:
            return
        if compact_index > self._snapshot.metadata.index:
            raise ValueError(
                f"compact to {compact_index}: not covered by the snapshot at "
                f"{self._snapshot.metadata.index}"
            )
        if compact_index > self.last_index():
            # an append truncated the log below the snapshot index: the entries to compact to
            # are gone, and so is the term the new first entry would need (as the other logs)
            raise UnavailableError(f"compact to {compact_index}: last index is {self.last_index()}")
        self._stage(encode_compact(compact_index))
        i = compact_index - offset
        self._entries = [Entry(term=self._entries[i].term, index=compact_index), *self._entries[i + 1 :]]
        # a segment grown past its size (the entries kept were many) is looked at again at the
        # next sync, not a quarter segment later: a member that wrote large values, then small
        # ones, kept (and read at every start) the grown segment until another 16 MiB came
        if not self._replaying:  # (open sets it after the replay)
            self._rotate_at = min(self._rotate_at, max(self._pos, self.segment_bytes))

    # -- durability ----------------------------------------------------------------------

    def _check_writable(self) -> None:
        if self._failed is not None:
            raise OSError(f"{self.path}: the log failed earlier ({self._failed!r}); refusing writes")

    def _lose_unsynced(self) -> None:
        """A power cut (failpoint ``crash``): the frame written but not yet fdatasynced is torn,
        its second half never reached the disk."""
        if self._unsynced is not None and self._fd >= 0:
            pos, length = self._unsynced
            keep = length // 2
            os.pwrite(self._fd, bytes(length - keep), pos + keep)
            os.fdatasync(self._fd)

    def sync(self) -> None:
        """Write everything staged as one frame and ``fdatasync`` once."""
        self._check_writable()
        if not self._staged:
            return
        payload = b"".join(self._staged)
        self._staged = []
        frame = encode_frame(payload)
        try:
            started = time.perf_counter()
            written = os.pwrite(self._fd, frame, self._pos)
            self.write_seconds.observe(time.perf_counter() - started)
            if written != len(frame):
                raise OSError(f"short write to {self._segment(self._seq).name}: {written} of {len(frame)}")
            if failpoints.enabled():
                self._unsynced = (self._pos, len(frame))
                failpoints.hit("wal_before_fdatasync")  # `crash`: the frame is torn (see _lose_unsynced)
            if self.fsync:
                started = time.perf_counter()
                os.fdatasync(self._fd)
                took = time.perf_counter() - started
                self.fsync_seconds.observe(took)
                if took > WARN_SYNC_S:  # (etcd's warning, the first sign of a slow or failing disk)
                    log.warning("slow fdatasync", extra={"fields": {"took": f"{took:.6f}s",
                                                                    "expected-duration": f"{WARN_SYNC_S:g}s"}})
            self._unsynced = None
        except BaseException as exc:
            self._failed = exc
            raise
        self._pos += len(frame)
        self.bytes_written += len(frame)
        self.syncs += 1
        if self._pos >= self._rotate_at and self._wants_rotation():
            self._rotate()
        elif self._snap_dirty:
            self._drop_snapshot_files(self._current_snap_file(), older_only=True)

    def _current_snap_file(self) -> Path | None:
        self._snap_dirty = False
        return self._snap_file(self._snapshot.metadata.index) if self._snap_len else None

    def _wants_rotation(self) -> bool:
        """Rotate unless the retained entries are over half a segment (then grow, and look
        again a quarter segment later: summing the entries is O(entries))."""
        retained = sum(len(e.data) for e in self._entries) + 21 * len(self._entries)
        if retained < self.segment_bytes // 2:
            return True
        self._rotate_at = self._pos + self.segment_bytes // 4
        return False

    def _rotate(self) -> None:
        """Start segment ``seq + 1`` with a head of the current (fully synced) state and
        delete every older segment."""
        seq = self._seq + 1
        final = self._segment(seq)
        tmp = final.with_suffix(".tmp")
        self._seq = seq
        payload = self._head_payload()
        frame = encode_frame(payload)
        size = max(self.segment_bytes, len(frame) + FRAME.size)
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.posix_fallocate(fd, 0, size)
                os.pwrite(fd, frame, 0)
                os.fdatasync(fd)
            except BaseException:
                os.close(fd)
                raise
            os.replace(tmp, final)
            fsync_dir(self.path)
        except OSError as exc:
            if exc.filename is None:  # (posix_fallocate, pwrite, fdatasync name no file)
                exc = OSError(exc.errno, f"{exc.strerror}: writing WAL segment {tmp} ({size} bytes, preallocated)")
            self._failed = exc
            raise exc from None
        except BaseException as exc:
            self._failed = exc
            raise
        if self._fd >= 0:
            os.close(self._fd)
        self._fd, self._pos = fd, len(frame)
        self._rotate_at = self.segment_bytes
        self.rotations += 1
        for old in self.path.glob("*.wal"):
            if old != final:
                old.unlink()
        self._drop_snapshot_files(self._current_snap_file(), older_only=True)

    # -- maintenance ---------------------------------------------------------------------

    @classmethod
    def replay_only(cls, path: str | os.PathLike[str], seq: int) -> WalLogStorage:
        """What segment ``seq`` of ``path`` replays to, read without changing any file (a
        torn tail stays, described in ``torn_tail``; no file is deleted), for ``verify`` and
        ``kvraft.storage.fsck_wal``. The object refuses writes."""
        log = cls.__new__(cls)
        log.path, log._seq, log._fd, log._failed = Path(path), seq, -1, OSError("opened for a check")
        log._reset_state()
        log._replay(log._segment(seq), repair=False)
        log._check_snapshot_file(read=True, drop=False)
        return log

    def verify(self) -> int:
        """Re-read the newest segment and compare it with the log in memory; return the
        number of entries. Raises ``LogCorruptionError`` on any difference."""
        if self._staged:
            self.sync()
        again = WalLogStorage.replay_only(self.path, self._seq)
        if (again._entries, again._hard, again._conf, again._snapshot.metadata) != (
            self._entries, self._hard, self._conf, self._snapshot.metadata,
        ):
            raise LogCorruptionError(0, f"{self.path}: the file does not replay to the log in memory")
        return len(self._entries) - 1

    def stats(self) -> dict[str, int]:
        """Bytes on disk, the active segment's fill and the entries held, for metrics."""
        files = 0
        for f in self.path.iterdir():
            with contextlib.suppress(FileNotFoundError):  # a rotation may delete it meanwhile
                files += f.stat().st_size
        return {
            "file_bytes": files,
            "high_water_bytes": self._pos,
            "entries": len(self._entries) - 1,
        }
