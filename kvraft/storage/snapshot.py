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
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import struct
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from kvraft.storage.backend import Backend
from kvraft.storage.errors import SnapshotCorruptionError
from kvraft.storage.schema import (
    BUCKET_META,
    META_CONSISTENT_INDEX,
    META_CURRENT_REV,
    decode_int,
    decode_meta,
    encode_consistent_index,
)

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "MAGIC",
    "VERSION",
    "RestoreReport",
    "SnapshotFrameError",
    "SnapshotStream",
    "read_frames",
    "drop_prepared",
    "mark_consistent_index",
    "prepared_index",
    "prepared_name",
    "restore_generation",
]

DEFAULT_CHUNK_BYTES = 1 << 20
MAGIC = "kvraft-snapshot"
VERSION = 1
_HEAD = struct.Struct(">II")


def _frame(payload: bytes) -> bytes:
    return _HEAD.pack(len(payload), zlib.crc32(payload)) + payload


class SnapshotStream:
    """Iterate to get the chunks; see the module docstring."""

    def __init__(self, backend: Backend, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                 on_close: Callable[[float], None] | None = None) -> None:
        """``on_close`` gets the seconds from here to the first ``close``."""
        self._chunk_bytes = chunk_bytes
        self._opened = time.monotonic()
        self._on_close = on_close
        self._stack = contextlib.ExitStack()
        read = self._stack.enter_context(backend.read())
        self._txn, self._dbis = read.txn, read.dbis
        meta = self._dbis[BUCKET_META]
        raw = self._txn.get(META_CURRENT_REV, db=meta)
        self.revision = decode_int(META_CURRENT_REV, raw) if raw is not None else 1
        raw = self._txn.get(META_CONSISTENT_INDEX, db=meta)
        ci = decode_meta(META_CONSISTENT_INDEX, raw) if raw is not None else bytes(16)
        self.consistent_index = (int.from_bytes(ci[:8], "big"), int.from_bytes(ci[8:], "big"))
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

    def close(self) -> None:
        self._stack.close()
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close(time.monotonic() - self._opened)


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
