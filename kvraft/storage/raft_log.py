"""``LmdbLogStorage``: the durable Raft log, hard state and membership, on LMDB.

Implements ``kvraft.raft.storage.WritableLogStorage`` with the same semantics as the
reference ``MemoryLogStorage`` (one contract suite runs against both).

Layout: one LMDB file (``subdir=False``) with two sub-databases::

    entries   key: index as u64 big-endian (8 bytes)      value: entry record
    state     key: b"hard" | b"conf" | b"snap" | b"offset" value: state record
              b"txnid": the LMDB txnid of the commit that wrote the tree (checked at open,
              with both meta pages: ``check_meta_pages``; docs/design/storage.md section 8)

    entry record  = crc32 (u32) | term (u64) | type (u8) | data
                    crc32 = zlib.crc32(key || term || type || data)
    state record  = crc32 (u32) | payload;  crc32 = zlib.crc32(name || payload)

    index 7, term 3, NORMAL, data b"hi" is stored as
      key   00 00 00 00 00 00 00 07
      value <crc32: 4 bytes> 00 00 00 00 00 00 00 03  00  68 69

Covering the key in the checksum catches a record that is intact but in the wrong place.
``offset`` is the dummy entry of ``MemoryLogStorage``: the index and term of the last
compacted entry (the snapshot's, after ``apply_snapshot``); ``first_index() == offset+1``.

Group commit: every write method (``append``, ``set_hard_state``, ``set_conf_state``,
``apply_snapshot``, ``create_snapshot``, ``compact``) stages its changes in ONE LMDB write
transaction, opened lazily by the first write after a ``sync()``. ``sync()`` commits it:
one durable commit (LMDB ``sync=True``: data pages fsynced, then the meta page) for
everything staged since the previous ``sync()``, however many entries. Reads see staged
changes (they go through the open write transaction). Until ``sync()`` returns nothing
staged is durable; a crash loses all of it and none of the earlier batches (LMDB commits
are atomic), so a reopened log is always a prefix of the sequence of synced batches.

Errors: ``CompactedError`` / ``UnavailableError`` / ``SnapshotOutOfDateError`` as the
contract says; a record that fails its checksum raises ``LogCorruptionError`` naming the
index. If LMDB fails while staging or committing (disk full), the staged batch is dropped,
the in-memory view is reloaded from disk and the error propagates: the caller (the node
driver) must treat it as fatal for the batch.

Threading: one thread (the driver's) calls every method, never concurrently; the LMDB
write transaction belongs to that thread. Ownership: returned lists are the caller's.
"""

from __future__ import annotations

import os
import struct
import time
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lmdb
import msgpack

from kvraft.durations import DurationHistogram
from kvraft.raft.storage import CompactedError, SnapshotOutOfDateError, UnavailableError
from kvraft.raft.types import (
    ConfState,
    Entry,
    EntryType,
    HardState,
    Snapshot,
    SnapshotMetadata,
)
from kvraft.storage.errors import LogCorruptionError
from kvraft.storage.lmdb_env import LMDB_CORRUPTION, open_env, read_meta_pages, read_via_meta

__all__ = ["DEFAULT_LOG_MAP_SIZE", "LmdbLogStorage", "check_meta_pages", "decode_conf_state", "encode_conf_state"]

DEFAULT_LOG_MAP_SIZE = 16 << 30
"""Address space reserved for the log file (the file itself grows only as used)."""

_IDX = struct.Struct(">Q")
_CRC = struct.Struct(">I")
_ENTRY_HEAD = struct.Struct(">IQB")  # crc32, term, type
_HARD = struct.Struct(">QQQ")
def encode_conf_state(cs: ConfState) -> bytes:
    """Deterministic msgpack bytes of a ConfState (sorted id lists)."""
    raw: bytes = msgpack.packb(
        [sorted(cs.voters), sorted(cs.learners), sorted(cs.voters_outgoing),
         sorted(cs.learners_next), cs.auto_leave]
    )
    return raw


def decode_conf_state(raw: bytes) -> ConfState:
    v, lr, vo, ln, auto = msgpack.unpackb(raw)
    return ConfState(frozenset(v), frozenset(lr), frozenset(vo), frozenset(ln), bool(auto))


def _key_index(key: bytes, near: int) -> int:
    if len(key) != 8:
        raise LogCorruptionError(near, f"entry key of {len(key)} bytes (want 8)")
    index: int = _IDX.unpack(key)[0]
    return index


@contextmanager
def _guard(index: int) -> Iterator[None]:
    """Turn LMDB's reports of damaged pages into ``LogCorruptionError``."""
    try:
        yield
    except LMDB_CORRUPTION as exc:
        raise LogCorruptionError(index, f"lmdb: {exc}") from exc


_REFUSE = ("refusing to open it (restore this member from a snapshot, or remove it from the cluster and "
           "add it again with an empty data dir)")


def check_meta_pages(path: Path) -> None:
    """Refuse a file whose meta pages an intact LMDB file cannot have. LMDB keeps no
    checksum of its two meta pages and opens the one with the larger txnid; commit ``t``
    writes page ``t % 2``, so an intact file holds ``t`` and ``t - 1``, each on the page of
    its parity (both 0 before the first commit). A flipped txnid bit breaks that, and LMDB
    would open an older commit; except the newer page's txnid lowered by exactly 2, which
    the tree of the page LMDB passes over tells: it was written by a newer commit than the
    one LMDB opens (in an intact file that tree is the previous commit's, whose pages LMDB
    does not reuse before the next commit)."""
    metas = read_meta_pages(path)
    if metas is None or not (metas[0].valid and metas[1].valid):
        return  # a new file, or a bad magic that LMDB refuses itself
    t0, t1 = metas[0].txnid, metas[1].txnid
    if (t0, t1) == (0, 0):
        return
    if (t0 % 2, t1 % 2, abs(t0 - t1)) != (0, 1, 1):
        raise LogCorruptionError(
            0, f"{path}: LMDB's meta pages hold transactions {t0} (page 0) and {t1} (page 1), which no intact "
            f"file holds: a meta page is damaged and LMDB would open an older commit of the log, forgetting "
            f"synced entries or a vote; {_REFUSE}",
        )
    if min(t0, t1) <= 1:
        return  # txnid 1 may be a compacting copy's, which keeps the copied commit's seal
    raw = read_via_meta(path, metas[0] if t0 < t1 else metas[1], b"state", b"txnid")
    if raw is None or len(raw) != 12 or _CRC.unpack_from(raw)[0] != zlib.crc32(b"txnid" + raw[4:]):
        return  # no sealed txnid there (a file of an older version, or its first commits)
    written = _IDX.unpack_from(raw, 4)[0]
    if written > max(t0, t1):
        raise LogCorruptionError(
            0, f"{path}: LMDB would open transaction {max(t0, t1)}, but the other meta page points at a tree "
            f"written by transaction {written}: the newer meta page's txnid is damaged and LMDB would open an "
            f"older commit of the log; {_REFUSE}",
        )


def _seal(name: bytes, payload: bytes) -> bytes:
    return _CRC.pack(zlib.crc32(name + payload)) + payload


def _unseal(name: bytes, raw: bytes) -> bytes:
    if len(raw) < 4 or _CRC.unpack_from(raw)[0] != zlib.crc32(name + raw[4:]):
        raise LogCorruptionError(0, f"state record {name.decode()!r} fails its checksum")
    return bytes(raw[4:])


class LmdbLogStorage:
    """Durable ``WritableLogStorage``; see the module docstring for layout and commits."""

    def __init__(self, path: str | os.PathLike[str], *, map_size: int = DEFAULT_LOG_MAP_SIZE) -> None:
        self.path = Path(path)
        check_meta_pages(self.path)
        try:
            self._env = open_env(self.path, map_size=map_size, max_dbs=2, max_readers=16)
            self._open_dbs()
        except LMDB_CORRUPTION as exc:
            raise LogCorruptionError(0, f"{self.path}: lmdb: {exc}") from exc
        self._txn: Any = None  # the staged write transaction, if any
        self.fsync_seconds = DurationHistogram()  # the durable commit: etcd_disk_wal_fsync_duration_seconds
        self._load()

    def _open_dbs(self) -> None:
        """The two sub-databases. A new file gets them and its first sealed txnid in one
        commit (older versions made two commits, one per database, and sealed nothing). In
        a file past those commits a missing one means LMDB opened a tree it should not
        have: refused, before a create could write to the damaged file."""
        env = self._env
        if env.info()["last_txnid"] <= 2:
            with env.begin(write=True) as txn:
                self._entries_db = env.open_db(b"entries", txn=txn)
                self._state_db = env.open_db(b"state", txn=txn)
                if not txn.stat(self._state_db)["entries"]:
                    txn.put(b"txnid", _seal(b"txnid", _IDX.pack(txn.id())), db=self._state_db)
            return
        try:
            self._entries_db = env.open_db(b"entries", create=False)
            self._state_db = env.open_db(b"state", create=False)
        except lmdb.NotFoundError:
            raise LogCorruptionError(
                0, f"{self.path}: LMDB opened transaction {env.info()['last_txnid']}, whose tree lacks the log's "
                f"databases: a damaged meta page made LMDB open another commit of the log; {_REFUSE}",
            ) from None

    # -- lifecycle -----------------------------------------------------------------------

    @classmethod
    def bootstrap(
        cls, path: str | os.PathLike[str], voters: Iterable[int], learners: Iterable[int] = (),
        **kwargs: Any,
    ) -> LmdbLogStorage:
        """A durable log for a founding member, identical to
        ``MemoryLogStorage.bootstrap(voters, learners)`` (synced before returning)."""
        from kvraft.raft.memory_storage import MemoryLogStorage

        mem = MemoryLogStorage.bootstrap(voters, learners)
        log = cls(path, **kwargs)
        if log.last_index() or not log._hard.is_empty():
            log.close()
            raise ValueError(f"{path}: not an empty log, refusing to bootstrap")
        hard, conf = mem.initial_state()
        log._put_state(b"snap", log._encode_snapshot(mem.snapshot()))
        log._snapshot = mem.snapshot()
        log.set_conf_state(conf, 0)
        log.append(mem.entries(mem.first_index(), mem.last_index() + 1))
        log.set_hard_state(hard)
        log.sync()
        return log

    def close(self, *, sync: bool = True) -> None:
        """Commit what is staged (unless ``sync=False``: drop it, as a crash would) and
        close the file. The object is unusable afterwards."""
        if self._txn is not None:
            if sync:
                self.sync()
            else:
                self._txn.abort()
                self._txn = None
        self._env.close()

    def __enter__(self) -> LmdbLogStorage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _load(self) -> None:
        with _guard(0), self._env.begin() as txn:
            raw = txn.get(b"offset", db=self._state_db)
            if raw is None:
                self._offset, self._offset_term = 0, 0
            else:
                self._offset, self._offset_term = struct.unpack(">QQ", _unseal(b"offset", raw))
            raw = txn.get(b"hard", db=self._state_db)
            self._hard = HardState(*_HARD.unpack(_unseal(b"hard", raw))) if raw else HardState()
            raw = txn.get(b"snap", db=self._state_db)
            self._snapshot = self._decode_snapshot(_unseal(b"snap", raw)) if raw else Snapshot()
            raw = txn.get(b"conf", db=self._state_db)
            if raw is None:
                self._conf_index, self._conf = 0, self._snapshot.metadata.conf_state
            else:
                idx, cs = msgpack.unpackb(_unseal(b"conf", raw))
                self._conf_index, self._conf = idx, decode_conf_state(cs)
            self._check_txnid(txn)
            cur = txn.cursor(db=self._entries_db)
            self._last = _key_index(cur.key(), 0) if cur.last() else self._offset
            if self._last < self._offset:
                self._last = self._offset
            self._last_term = self._read_term(txn, self._last)

    def _check_txnid(self, txn: Any) -> None:
        """The tree LMDB opened must be the one its meta page's commit wrote: every commit
        seals its own txnid in it (files of older versions: from their first commit by
        this one on; before that, only a rollback to the empty tree is told apart). A copy
        made with LMDB's compaction (``mdb_copy -c``) restarts at txnid 1 with the tree of
        the copied commit: accepted (damage would have to set both meta pages to 0 and 1)."""
        raw = txn.get(b"txnid", db=self._state_db)
        if raw is not None:
            written = _IDX.unpack(_unseal(b"txnid", raw))[0]
        elif txn.id() > 2 and not txn.stat(self._state_db)["entries"] and not txn.stat(self._entries_db)["entries"]:
            written = 0  # the empty tree of a file's creation
        else:
            return
        if written != txn.id() and not (txn.id() == 1 and written > 1):  # a compacting copy starts at txn 1
            raise LogCorruptionError(
                0, f"{self.path}: LMDB opened transaction {txn.id()}, but the tree it reads was written by "
                f"transaction {written or 'creating the file'}: a damaged meta page made LMDB open another commit "
                f"of the log; {_REFUSE}",
            )

    # -- staging -------------------------------------------------------------------------

    def _wtxn(self) -> Any:
        if self._txn is None:
            self._txn = self._env.begin(write=True)
        return self._txn

    @contextmanager
    def _staging(self) -> Iterator[Any]:
        """The staged transaction; on an LMDB failure drop the batch and reload."""
        try:
            yield self._wtxn()
        except lmdb.Error:
            self._drop_batch()
            raise

    def _drop_batch(self) -> None:
        if self._txn is not None:
            self._txn.abort()
            self._txn = None
        self._load()

    @contextmanager
    def _reader(self, index: int = 0) -> Iterator[Any]:
        with _guard(index):
            if self._txn is not None:
                yield self._txn
            else:
                with self._env.begin() as txn:
                    yield txn

    def _put_state(self, name: bytes, payload: bytes) -> None:
        with self._staging() as txn:
            txn.put(name, _seal(name, payload), db=self._state_db)

    def sync(self) -> None:
        """Commit the staged batch: one durable LMDB commit for all of it."""
        if self._txn is None:
            return
        txn, self._txn = self._txn, None
        started = time.perf_counter()
        try:
            # the commit's own txnid, sealed in its tree: a meta page pointing at another
            # commit's tree is caught on open (``_load``)
            txn.put(b"txnid", _seal(b"txnid", _IDX.pack(txn.id())), db=self._state_db)
            txn.commit()
        except lmdb.Error:
            txn.abort()  # a no-op after a failed commit; needed after a failed put
            self._load()
            raise
        self.fsync_seconds.observe(time.perf_counter() - started)

    # -- records -------------------------------------------------------------------------

    def _decode_entry(self, index: int, key: bytes, raw: bytes) -> Entry:
        if len(raw) < _ENTRY_HEAD.size:
            raise LogCorruptionError(index, f"record of {len(raw)} bytes is too short")
        crc, term, etype = _ENTRY_HEAD.unpack_from(raw)
        if crc != zlib.crc32(key + raw[4:]):
            raise LogCorruptionError(index, "checksum mismatch")
        try:
            kind = EntryType(etype)
        except ValueError:
            raise LogCorruptionError(index, f"unknown entry type {etype}") from None
        return Entry(term=term, index=index, type=kind, data=bytes(raw[_ENTRY_HEAD.size:]))

    def _read_term(self, txn: Any, index: int) -> int:
        if index == self._offset:
            return self._offset_term
        key = _IDX.pack(index)
        raw = txn.get(key, db=self._entries_db)
        if raw is None:
            raise LogCorruptionError(index, "entry missing inside [first_index, last_index]")
        return self._decode_entry(index, key, raw).term

    @staticmethod
    def _encode_snapshot(snap: Snapshot) -> bytes:
        m = snap.metadata
        raw: bytes = msgpack.packb([m.index, m.term, encode_conf_state(m.conf_state), snap.data])
        return raw

    @staticmethod
    def _decode_snapshot(payload: bytes) -> Snapshot:
        index, term, cs, data = msgpack.unpackb(payload)
        meta = SnapshotMetadata(index=index, term=term, conf_state=decode_conf_state(cs))
        return Snapshot(metadata=meta, data=data)

    # -- read side (LogStorage) ------------------------------------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self._hard, self._conf

    def first_index(self) -> int:
        return self._offset + 1

    def last_index(self) -> int:
        return self._last

    def snapshot(self) -> Snapshot:
        return self._snapshot

    def snapshot_data(self) -> bytes:
        """The current snapshot's data (``WalLogStorage.snapshot_data``; this older log keeps
        it in memory)."""
        return self._snapshot.data

    def term(self, index: int) -> int:
        if index < self._offset:
            raise CompactedError(f"term of {index}: compacted up to {self._offset}")
        if index > self._last:
            raise UnavailableError(f"term of {index}: last index is {self._last}")
        if index == self._last:
            return self._last_term
        with self._reader(index) as txn:
            return self._read_term(txn, index)

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        if lo <= self._offset:
            raise CompactedError(f"entries from {lo}: compacted up to {self._offset}")
        if hi > self._last + 1:
            raise UnavailableError(f"entries up to {hi - 1}: last index is {self._last}")
        out: list[Entry] = []
        if lo >= hi:
            return out
        total = 0
        expect = lo
        with self._reader(lo) as txn:
            cur = txn.cursor(db=self._entries_db)
            if cur.set_key(_IDX.pack(lo)):
                for key, raw in cur:
                    index = _key_index(key, expect)
                    if index != expect:
                        break
                    entry = self._decode_entry(index, key, raw)
                    total += entry.size()
                    if out and max_bytes is not None and total > max_bytes:
                        return out
                    out.append(entry)
                    expect += 1
                    if expect >= hi:
                        return out
        raise LogCorruptionError(expect, "entry missing inside [first_index, last_index]")

    # -- write side (WritableLogStorage) ------------------------------------------------

    def append(self, entries: list[Entry]) -> None:
        if not entries:
            return
        for prev, cur in zip(entries, entries[1:], strict=False):
            if cur.index != prev.index + 1:
                raise ValueError(f"entries not contiguous: {prev.index} then {cur.index}")
        first = entries[0].index
        if first > self._last + 1:
            raise ValueError(f"append at {first} leaves a gap after {self._last}")
        if entries[-1].index <= self._offset:
            return  # entirely covered by the compacted prefix
        if first <= self._offset:
            entries = entries[self._offset + 1 - first :]
            first = self._offset + 1
        with self._staging() as txn:
            db = self._entries_db
            for index in range(first, self._last + 1):  # truncate the conflicting suffix
                txn.delete(_IDX.pack(index), db=db)
            pack, head = _IDX.pack, _ENTRY_HEAD
            items = []
            for e in entries:
                key = pack(e.index)
                body = struct.pack(">QB", e.term, int(e.type)) + e.data
                items.append((key, head.pack(zlib.crc32(key + body), e.term, int(e.type)) + e.data))
            cur = txn.cursor(db=db)
            cur.putmulti(items, append=True)
        self._last = entries[-1].index
        self._last_term = entries[-1].term

    def set_hard_state(self, hard_state: HardState) -> None:
        self._put_state(b"hard", _HARD.pack(hard_state.term, hard_state.vote, hard_state.commit))
        self._hard = hard_state

    def set_conf_state(self, conf_state: ConfState, index: int) -> None:
        """Record the membership in force as of log ``index`` (the conf entry applied
        there). ``initial_state()`` returns the newest of this and the snapshots'."""
        self._put_state(b"conf", msgpack.packb([index, encode_conf_state(conf_state)]))
        self._conf_index, self._conf = index, conf_state

    def _set_offset(self, index: int, term: int) -> None:
        self._put_state(b"offset", struct.pack(">QQ", index, term))
        self._offset, self._offset_term = index, term

    def _install(self, snap: Snapshot) -> None:
        self._put_state(b"snap", self._encode_snapshot(snap))
        self._snapshot = snap
        if snap.metadata.index >= self._conf_index:
            self.set_conf_state(snap.metadata.conf_state, snap.metadata.index)

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        meta = snapshot.metadata
        if meta.index <= self._snapshot.metadata.index:
            raise SnapshotOutOfDateError(
                f"snapshot at {meta.index} is not newer than {self._snapshot.metadata.index}"
            )
        keep = self._offset < meta.index <= self._last and self.term(meta.index) == meta.term
        with self._staging() as txn:
            upto = meta.index if keep else self._last
            for index in range(self._offset + 1, upto + 1):
                txn.delete(_IDX.pack(index), db=self._entries_db)
        if not keep:
            self._last, self._last_term = meta.index, meta.term
        self._set_offset(meta.index, meta.term)
        self._install(snapshot)

    def create_snapshot(self, index: int, conf_state: ConfState, data: bytes) -> Snapshot:
        if index <= self._snapshot.metadata.index:
            raise SnapshotOutOfDateError(
                f"snapshot at {index} is not newer than {self._snapshot.metadata.index}"
            )
        if index > self._last:
            raise UnavailableError(f"snapshot at {index}: last index is {self._last}")
        meta = SnapshotMetadata(index=index, term=self.term(index), conf_state=conf_state)
        snap = Snapshot(metadata=meta, data=data)
        self._install(snap)
        return snap

    def compact(self, compact_index: int) -> None:
        if compact_index <= self._offset:
            return
        if compact_index > self._snapshot.metadata.index:
            raise ValueError(
                f"compact to {compact_index}: not covered by the snapshot at "
                f"{self._snapshot.metadata.index}"
            )
        term = self.term(compact_index)
        with self._staging() as txn:
            for index in range(self._offset + 1, compact_index + 1):
                txn.delete(_IDX.pack(index), db=self._entries_db)
        self._set_offset(compact_index, term)

    # -- maintenance ---------------------------------------------------------------------

    def verify(self) -> int:
        """Read and check every record; return the number of entries checked. Raises
        ``LogCorruptionError`` (naming the index) on the first bad one."""
        self.initial_state()
        n = 0
        with self._reader(self._offset + 1) as txn:
            for name in (b"offset", b"hard", b"conf", b"snap", b"txnid"):
                raw = txn.get(name, db=self._state_db)
                if raw is not None:
                    _unseal(name, raw)
            expect = self._offset + 1
            for key, raw in txn.cursor(db=self._entries_db):
                index = _key_index(key, expect)
                if index != expect:
                    raise LogCorruptionError(expect, f"entry missing (next stored is {index})")
                self._decode_entry(index, key, raw)
                expect += 1
                n += 1
        if expect != self._last + 1:
            raise LogCorruptionError(expect, f"log ends before last index {self._last}")
        return n

    def stats(self) -> dict[str, int]:
        """File size and pages in use, for metrics."""
        info, stat = self._env.info(), self._env.stat()
        return {
            "file_bytes": self.path.stat().st_size,
            "high_water_bytes": (info["last_pgno"] + 1) * stat["psize"],
            "entries": self._last - self._offset,
        }
