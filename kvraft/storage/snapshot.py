"""Point-in-time snapshots of the whole state machine, streamed in chunks, and restore.

A snapshot is every bucket of the backend as seen by ONE LMDB read transaction, so it is
consistent (one revision, one consistent index) while writers carry on. The stream::

    frame   = length (u32 BE) | crc32(payload) (u32 BE) | payload (msgpack)
    first   {"magic": "kvraft-snapshot", "version": 1, "buckets": [...], "revision": r,
             "consistent_index": [index, term]}
    then    [bucket, [key, value, key, value, ...]]   (each bucket's records in key order)
    last    {"end": true, "records": n, "sha256": hex digest of every byte before it}

``SnapshotStream`` yields one frame per chunk (``chunk_bytes`` of records, about); a
receiver may split or join the bytes any way (``read_frames`` re-frames them: the one
parser of the format, also used by ``kvctl snapshot status``).
Every frame is checked as it arrives; the whole stream is checked against the trailer's
sha256 before anything is installed: a truncated or damaged stream raises
``SnapshotCorruptionError`` and leaves the live store untouched.

Restore builds a new backend generation beside the live one (``Backend.next_generation_
path``, or a path of the caller's) and returns its path; ``MVCCStore.restore`` installs it and
rebuilds the index. A follower builds a received snapshot's store as it arrives and keeps it
as ``snapshot-<index>.lmdb`` (``prepared_name``) until it is installed
(``MVCCStore.install_prepared``; ``kvraft.server.snapshot_receive``).

Threading: a stream may be consumed from any thread (one at a time); it holds its read
transaction until exhausted or ``close()``d. Writers are never blocked by it.

``SnapshotFile`` is the other form, for a member on the same platform (since session 54): the
same read transaction's state as LMDB's own compacting copy of the file (``copyfd``, in a
thread, through a pipe), then a trailer (``FILE_MAGIC``, the file's length and sha256). A
receiver writes its bytes as they come (``restore_file``) instead of decoding records and
inserting them again; etcd sends its bbolt file the same way. LMDB files are not portable
across byte orders, word sizes or page sizes, so it goes only where they match
(``kvraft.server.wire.FEATURE_SNAPSHOT_FILE``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lmdb
import msgpack

from kvraft.storage.backend import Backend
from kvraft.storage.errors import SnapshotCorruptionError
from kvraft.storage.schema import (
    BUCKET_META,
    META_CONSISTENT_INDEX,
    META_CURRENT_REV,
    decode_consistent_index,
    decode_int,
    encode_consistent_index,
)

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "FILE_MAGIC",
    "FILE_TRAILER_BYTES",
    "MAGIC",
    "VERSION",
    "RestoreReport",
    "SnapshotFile",
    "SnapshotFrameError",
    "SnapshotStream",
    "read_frames",
    "drop_prepared",
    "mark_consistent_index",
    "prepared_index",
    "prepared_name",
    "restore_file",
    "restore_generation",
]

DEFAULT_CHUNK_BYTES = 1 << 20
MAGIC = "kvraft-snapshot"
VERSION = 1
_HEAD = struct.Struct(">II")


FILE_MAGIC = b"KVRAFTDB"
_FILE_TRAILER = struct.Struct(">8sQ32s")
FILE_TRAILER_BYTES = _FILE_TRAILER.size
"""``SnapshotFile``'s trailer: ``FILE_MAGIC``, the file's length (u64 BE), its sha256."""
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


def _frame(payload: bytes) -> bytes:
    return _HEAD.pack(len(payload), zlib.crc32(payload)) + payload


class _Pinned:
    """A read transaction held on the backend from here to ``close``; ``on_close`` gets the
    seconds it was held."""

    def __init__(self, backend: Backend, on_close: Callable[[float], None] | None) -> None:
        self._opened = time.monotonic()
        self._on_close = on_close
        self._stack = contextlib.ExitStack()
        read = self._stack.enter_context(backend.read())
        self._env, self._txn, self._dbis = read.env, read.txn, read.dbis

    def close(self) -> None:
        self._stack.close()
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close(time.monotonic() - self._opened)


class SnapshotStream(_Pinned):
    """Iterate to get the chunks; see the module docstring."""

    def __init__(self, backend: Backend, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                 on_close: Callable[[float], None] | None = None) -> None:
        """``on_close`` gets the seconds from here to the first ``close``."""
        super().__init__(backend, on_close)
        self._chunk_bytes = chunk_bytes
        meta = self._dbis[BUCKET_META]
        raw = self._txn.get(META_CURRENT_REV, db=meta)
        self.revision = decode_int(META_CURRENT_REV, raw) if raw is not None else 1
        self.consistent_index = decode_consistent_index(self._txn.get(META_CONSISTENT_INDEX, db=meta))
        self.size_estimate = backend.sizes()[1]
        self.records = 0
        self.bytes = 0
        self.sha256: str | None = None  # set once the stream is exhausted

    def __iter__(self) -> Iterator[bytes]:
        try:
            digest = hashlib.sha256()
            head = {"magic": MAGIC, "version": VERSION, "buckets": list(self._dbis),
                    "revision": self.revision, "consistent_index": list(self.consistent_index)}
            for frame in self._frames(head):
                digest.update(frame)
                self.bytes += len(frame)
                yield frame
            self.sha256 = digest.hexdigest()
            tail = _frame(msgpack.packb({"end": True, "records": self.records, "sha256": self.sha256}))
            self.bytes += len(tail)
            yield tail
        finally:
            self.close()

    def _frames(self, head: dict[str, Any]) -> Iterator[bytes]:
        yield _frame(msgpack.packb(head))
        for name, dbi in self._dbis.items():
            flat: list[bytes] = []
            size = 0
            for key, value in self._txn.cursor(db=dbi):
                flat.append(key)
                flat.append(value)
                size += len(key) + len(value) + 8
                if size >= self._chunk_bytes:
                    self.records += len(flat) // 2
                    yield _frame(msgpack.packb([name, flat]))
                    flat, size = [], 0
            if flat:
                self.records += len(flat) // 2
                yield _frame(msgpack.packb([name, flat]))


class SnapshotFile(_Pinned):
    """The store as one read transaction sees it, as a compacted copy of its LMDB file, in
    pieces of about ``piece_bytes``, then the trailer (module docstring). Iterate it once,
    from any thread; LMDB copies in a thread of its own meanwhile (without the GIL), and the
    read transaction is held until the copy is over and the iteration ends or ``close``."""

    def __init__(self, backend: Backend, piece_bytes: int = DEFAULT_CHUNK_BYTES,
                 on_close: Callable[[float], None] | None = None) -> None:
        super().__init__(backend, on_close)
        self._piece_bytes = piece_bytes
        self.bytes = 0
        self.sha256: str | None = None  # set once the copy is over

    def __iter__(self) -> Iterator[bytes]:
        rfd, wfd = os.pipe()
        with contextlib.suppress(OSError):  # (a larger pipe: fewer wake-ups; the default 64 KiB works too)
            fcntl.fcntl(wfd, _F_SETPIPE_SZ, 1 << 20)
        failed: list[BaseException] = []

        def copy() -> None:
            try:
                self._env.copyfd(wfd, compact=True, txn=self._txn)
            except BaseException as exc:  # noqa: BLE001 - raised to the reader below
                failed.append(exc)
            finally:
                os.close(wfd)

        thread = threading.Thread(target=copy, name="snapshot-file-copy", daemon=True)
        thread.start()
        reader = os.fdopen(rfd, "rb", buffering=0)
        try:
            digest = hashlib.sha256()
            while True:
                piece = bytearray(self._piece_bytes)
                view, got = memoryview(piece), 0
                while got < len(piece) and (n := reader.readinto(view[got:])):
                    got += n
                del view
                if not got:
                    break
                del piece[got:]
                digest.update(piece)
                self.bytes += got
                yield bytes(piece)
            thread.join()  # (EOF: the copy has ended)
            if failed:
                raise OSError(f"copying the store for a snapshot failed: {failed[0]!r}") from failed[0]
            self.sha256 = digest.hexdigest()
            yield _FILE_TRAILER.pack(FILE_MAGIC, self.bytes, digest.digest())
        finally:
            reader.close()  # (a copy still writing gets EPIPE and ends)
            thread.join()
            self.close()


@dataclass(frozen=True)
class RestoreReport:
    path: Path
    records: int
    bytes: int
    revision: int
    consistent_index: tuple[int, int]
    sha256: str


class SnapshotFrameError(SnapshotCorruptionError):
    """A frame of a snapshot stream is damaged: ``reason`` is ``"checksum"`` (the payload
    fails its crc32), ``"decode"`` (it is not msgpack; ``cause`` is the decoder's message) or
    ``"truncated"`` (the stream ends ``stray`` bytes into a frame); ``frame`` counts from 0,
    ``offset`` is its first byte in the stream."""

    def __init__(self, reason: str, frame: int, offset: int, *, stray: int = 0, cause: str = "") -> None:
        detail = {
            "checksum": "fails its checksum",
            "decode": f"does not decode: {cause}",
            "truncated": f"truncated: the stream ends {stray} bytes into it",
        }[reason]
        super().__init__(f"snapshot frame {frame} at byte {offset} {detail}")
        self.reason, self.frame, self.offset = reason, frame, offset
        self.stray, self.cause = stray, cause


def read_frames(chunks: Iterable[bytes | memoryview]) -> Iterator[tuple[bytes, Any]]:
    """``(frame bytes, decoded payload)`` for each frame of a snapshot stream cut anywhere
    into ``chunks``. Each frame's crc32 is checked and its msgpack payload decoded before it
    is yielded; a damaged frame, or bytes left over at the end, raise ``SnapshotFrameError``.
    What the frames say (header, records, trailer) is the caller's to check."""
    buf = bytearray()
    frame = offset = 0
    for chunk in chunks:
        buf += chunk
        while len(buf) >= _HEAD.size:
            length, crc = _HEAD.unpack_from(buf)
            end = _HEAD.size + length
            if len(buf) < end:
                break
            payload = bytes(buf[_HEAD.size:end])
            if zlib.crc32(payload) != crc:
                raise SnapshotFrameError("checksum", frame, offset)
            try:
                decoded = msgpack.unpackb(payload)
            except (ValueError, msgpack.UnpackException) as exc:
                raise SnapshotFrameError("decode", frame, offset, cause=str(exc)) from None
            yield bytes(buf[:end]), decoded
            del buf[:end]
            frame += 1
            offset += end
    if buf:
        raise SnapshotFrameError("truncated", frame, offset, stray=len(buf))


def restore_generation(backend: Backend, chunks: Iterable[bytes | memoryview], path: Path | None = None) -> RestoreReport:
    """Build the next generation file (at ``path``, by default ``next_generation_path``) from a
    snapshot stream and verify it; the caller installs it. On any failure the scratch file is
    removed and the error raised."""
    path = path or backend.next_generation_path()
    env, dbis = backend.open_scratch(path)
    try:
        report = _restore(env, dbis, path, chunks)
        env.sync(True)
        return report
    except BaseException:
        env.close()
        for p in (path, Path(str(path) + "-lock")):
            p.unlink(missing_ok=True)
        raise
    finally:
        with contextlib.suppress(Exception):
            env.close()


def _restore(env: Any, dbis: dict[bytes, Any], path: Path, chunks: Iterable[bytes | memoryview]) -> RestoreReport:
    digest = hashlib.sha256()
    head: dict[str, Any] | None = None
    records = nbytes = 0
    for frame, payload in read_frames(chunks):
        if head is None:
            if not isinstance(payload, dict) or payload.get("magic") != MAGIC or payload.get("version") != VERSION:
                raise SnapshotCorruptionError("not a kvraft snapshot (bad header)")
            missing = [b for b in payload["buckets"] if b not in dbis]
            if missing:
                raise SnapshotCorruptionError(f"snapshot has unknown buckets {missing!r}")
            head = payload
        elif isinstance(payload, dict):
            if payload.get("sha256") != digest.hexdigest() or payload.get("records") != records:
                raise SnapshotCorruptionError("snapshot fails its whole-stream checksum")
            return RestoreReport(path, records, nbytes + len(frame), head["revision"],
                                 (head["consistent_index"][0], head["consistent_index"][1]), digest.hexdigest())
        else:
            name, flat = payload
            pairs = list(zip(flat[0::2], flat[1::2], strict=True))
            with env.begin(write=True) as txn:
                _consumed, added = txn.cursor(db=dbis[name]).putmulti(pairs, append=True)
            if added != len(pairs):
                raise SnapshotCorruptionError(f"bucket {name!r}: records out of order")
            records += len(pairs)
        digest.update(frame)
        nbytes += len(frame)
    raise SnapshotCorruptionError("snapshot truncated: no end frame")


def restore_file(backend: Backend, chunks: Iterable[bytes | memoryview], path: Path) -> RestoreReport:
    """Write a ``SnapshotFile``'s bytes to ``path`` as they come, check them against its
    trailer, sync the file, and check that it opens as a store with this backend's buckets.
    On any failure the file is removed and the error raised (``SnapshotCorruptionError`` for
    bytes that do not check out)."""
    try:
        digest = hashlib.sha256()
        written, tail = 0, b""
        with open(path, "wb") as out:
            for chunk in chunks:
                view = memoryview(chunk)
                if len(tail) + len(view) <= FILE_TRAILER_BYTES:
                    tail += bytes(view)
                    continue
                body: list[bytes | memoryview]
                if len(view) >= FILE_TRAILER_BYTES:  # (what comes before the last bytes is file)
                    body, rest = [tail, view[:-FILE_TRAILER_BYTES]], bytes(view[-FILE_TRAILER_BYTES:])
                else:
                    joined = tail + bytes(view)
                    body, rest = [joined[:-FILE_TRAILER_BYTES]], joined[-FILE_TRAILER_BYTES:]
                for part in body:
                    out.write(part)
                    digest.update(part)
                    written += len(part)
                tail = rest
            if len(tail) < FILE_TRAILER_BYTES:
                raise SnapshotCorruptionError(f"snapshot file truncated: {written + len(tail)} bytes and no trailer")
            magic, length, sha = _FILE_TRAILER.unpack(tail)
            if magic != FILE_MAGIC or length != written or sha != digest.digest():
                raise SnapshotCorruptionError(
                    f"snapshot file fails its check ({written} bytes; the trailer says {length} and its sha256)")
            out.flush()
            os.fsync(out.fileno())
        return _file_report(backend, path, written, digest.hexdigest())
    except BaseException:
        for p in (path, Path(str(path) + "-lock")):
            p.unlink(missing_ok=True)
        raise


def _file_report(backend: Backend, path: Path, size: int, sha256: str) -> RestoreReport:
    """What a received file holds (its revision, consistent index, records), opened as a
    store; one that does not open, or lacks a bucket, is refused."""
    try:
        env = lmdb.open(str(path), subdir=False, readonly=True, lock=False, max_dbs=len(backend.buckets) + 1)
    except lmdb.Error as exc:
        raise SnapshotCorruptionError(f"the snapshot file is not a store: {exc}") from None
    try:
        with env.begin() as txn:
            dbis = {}
            for name in backend.buckets:
                try:
                    dbis[name] = env.open_db(name, txn=txn, create=False)
                except lmdb.Error:
                    raise SnapshotCorruptionError(f"the snapshot file has no bucket {name!r}") from None
            meta = dbis[BUCKET_META]
            raw = txn.get(META_CURRENT_REV, db=meta)
            revision = decode_int(META_CURRENT_REV, raw) if raw is not None else 1
            consistent_index = decode_consistent_index(txn.get(META_CONSISTENT_INDEX, db=meta))
            records = sum(txn.stat(dbi)["entries"] for dbi in dbis.values())
    finally:
        env.close()
    return RestoreReport(path, records, size, revision, consistent_index, sha256)


_PREPARED = re.compile(r"snapshot-([0-9a-f]{16})\.lmdb")


def prepared_name(index: int) -> str:
    """The file name of a received snapshot's store at Raft ``index``, in the store's directory."""
    return f"snapshot-{index:016x}.lmdb"


def prepared_index(name: str) -> int | None:
    """The index in a ``prepared_name``; None for any other name (one a peer sent, checked)."""
    m = _PREPARED.fullmatch(name)
    return int(m.group(1), 16) if m else None


def drop_prepared(directory: Path, through: int | None = None) -> list[Path]:
    """Delete the received snapshots' stores (and their lock files) at indexes up to
    ``through`` (None: all of them); the paths deleted."""
    dropped = []
    for p in directory.iterdir():
        index = prepared_index(p.name.removesuffix("-lock"))
        if index is not None and (through is None or index <= through):
            p.unlink(missing_ok=True)
            dropped.append(p)
    return dropped


def mark_consistent_index(backend: Backend, path: Path, index: int, term: int) -> None:
    """Record ``(index, term)`` as the consistent index of the generation file at ``path``
    (not live), durably: a received snapshot's store is installed at the snapshot's index,
    so a crash right after the switch finds a store that is not behind its log."""
    env, dbis = backend.open_scratch(path)
    try:
        with env.begin(write=True) as txn:
            txn.put(META_CONSISTENT_INDEX, encode_consistent_index(index, term), db=dbis[BUCKET_META])
        env.sync(True)
    finally:
        env.close()
