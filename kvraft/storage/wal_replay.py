"""Reading a WAL segment back: frame checks, torn tails, records, snapshot files.

``WalLogStorage`` (``kvraft.storage.wal``) uses it when it opens a directory (``repair``:
a torn tail is cut) and in its read-only ``replay_only``/``verify``, which
``kvraft.storage.fsck_wal`` runs. The layout is ``kvraft.storage.wal_format``.

Frames are read in order from the start of the segment; a zero length ends the data.

- A frame whose crc32 fails, whose length runs past the file, or whose length is zero
  with a non-zero crc, followed only by zeros, is a **torn tail**: the write of a batch
  whose ``sync()`` never returned. It is reported (offset, bytes up to the last non-zero
  byte) and, with ``repair``, cut: the file is truncated there and preallocated again, so
  later frames land on zeros. No acknowledged batch is lost: each is one frame.
- The same with data after it, or in the first frame (the head), is **corruption** inside
  the log: ``LogCorruptionError`` naming the frame's byte offset and, when readable, its
  first entry index.
- A frame that passes its crc but does not replay (an append leaving a gap, a record
  running past its frame, an unknown kind) is corruption too, with the reason.
- A segment without a head frame, or whose head names another segment, is corruption.

Records are decoded lazily (``iter_records``), so a frame is applied record by record and
the first record that does not apply is the one named.
"""

from __future__ import annotations

import contextlib
import os
import struct
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from kvraft.raft.types import ConfState, Entry, EntryType, HardState, SnapshotMetadata
from kvraft.storage.errors import LogCorruptionError
from kvraft.storage.raft_log import decode_conf_state
from kvraft.storage.wal_format import (
    APPEND,
    COMPACT,
    CONF,
    ENTRY,
    FRAME,
    HARD,
    HARD3,
    HEAD,
    K_APPEND,
    K_COMPACT,
    K_CONF,
    K_HARD,
    K_HEAD,
    K_SNAP,
    SNAP,
    SNAPFILE,
    SNAPREF,
    U32,
)

__all__ = [
    "AppendRecord",
    "CompactRecord",
    "ConfRecord",
    "HardRecord",
    "HeadRecord",
    "Record",
    "SegmentReplay",
    "SnapRecord",
    "check_snapshot_file",
    "cut_tail",
    "first_index_in",
    "iter_records",
    "read_snapshot_file",
    "replay_segment",
]


class HeadRecord(NamedTuple):
    seq: int
    offset: Entry  # the last compacted entry (index and term)
    conf_index: int
    conf: ConfState
    snapshot: SnapshotMetadata
    snap_len: int
    snap_crc: int
    hard: HardState


class AppendRecord(NamedTuple):
    entries: list[Entry]


class HardRecord(NamedTuple):
    hard: HardState


class ConfRecord(NamedTuple):
    conf_index: int
    conf: ConfState


class SnapRecord(NamedTuple):
    how: int  # SNAP_APPLY or SNAP_CREATE
    meta: SnapshotMetadata
    length: int
    crc: int


class CompactRecord(NamedTuple):
    compact_index: int


Record = HeadRecord | AppendRecord | HardRecord | ConfRecord | SnapRecord | CompactRecord


class SegmentReplay(NamedTuple):
    frames: int  # frames replayed
    torn_tail: tuple[int, int] | None  # (offset, bytes) of a torn last frame
    end: int  # where the next frame goes


class _Reader:
    """Decodes the records of one payload."""

    def __init__(self, payload: bytes | memoryview) -> None:
        self.buf = memoryview(payload)
        self.pos = 0

    def take(self, st: struct.Struct) -> tuple[Any, ...]:
        out = st.unpack_from(self.buf, self.pos)
        self.pos += st.size
        return out

    def raw(self, n: int) -> bytes:
        if self.pos + n > len(self.buf):
            raise ValueError("record runs past its frame")
        out = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return out

    def entries(self) -> list[Entry]:
        (count,) = U32.unpack_from(self.buf, self.pos + 1)
        self.pos += APPEND.size
        out = []
        unpack, size = ENTRY.unpack_from, ENTRY.size
        for _ in range(count):
            index, term, etype, n = unpack(self.buf, self.pos)
            self.pos += size
            out.append(Entry(term=term, index=index, type=EntryType(etype), data=self.raw(n)))
        return out

    def head(self) -> HeadRecord:
        _, seq, offset, offset_term, conf_index, size = self.take(HEAD)
        conf = decode_conf_state(self.raw(size))
        s_index, s_term, s_len, s_crc, s_size = self.take(SNAPREF)
        s_conf = decode_conf_state(self.raw(s_size))
        term, vote, commit = self.take(HARD3)
        return HeadRecord(
            seq=seq, offset=Entry(term=offset_term, index=offset), conf_index=conf_index, conf=conf,
            snapshot=SnapshotMetadata(index=s_index, term=s_term, conf_state=s_conf),
            snap_len=s_len, snap_crc=s_crc, hard=HardState(term=term, vote=vote, commit=commit),
        )


def iter_records(payload: bytes | memoryview, *, head: bool) -> Iterator[Record]:
    """The records of one frame's payload, decoded one at a time. ``head``: the first frame
    of a segment, which must start with a HEAD record (``LogCorruptionError`` if not).
    A record that does not decode raises ``ValueError`` (or ``struct.error``)."""
    r = _Reader(payload)
    n = len(payload)
    if head and (not payload or payload[0] != K_HEAD):
        raise LogCorruptionError(0, "segment does not start with a head record")
    while r.pos < n:
        kind = payload[r.pos]
        if kind == K_APPEND:
            yield AppendRecord(r.entries())
        elif kind == K_HARD:
            _, term, vote, commit = r.take(HARD)
            yield HardRecord(HardState(term=term, vote=vote, commit=commit))
        elif kind == K_CONF:
            _, index, size = r.take(CONF)
            yield ConfRecord(index, decode_conf_state(r.raw(size)))
        elif kind == K_SNAP:
            _, how, index, term, dlen, dcrc, size = r.take(SNAP)
            conf = decode_conf_state(r.raw(size))
            yield SnapRecord(how, SnapshotMetadata(index=index, term=term, conf_state=conf), dlen, dcrc)
        elif kind == K_COMPACT:
            yield CompactRecord(r.take(COMPACT)[1])
        elif kind == K_HEAD and head and r.pos == 0:
            yield r.head()
        else:
            raise ValueError(f"unexpected record kind {kind} at {r.pos}")


def first_index_in(payload: bytes | memoryview) -> int:
    """The first entry index a (possibly damaged) payload names, or 0."""
    with contextlib.suppress(Exception):
        r = _Reader(payload)
        kind = payload[0]
        if kind == K_HEAD:
            return int(r.take(HEAD)[2]) + 1
        if kind == K_APPEND:
            return int(ENTRY.unpack_from(payload, APPEND.size)[0])
    return 0


def replay_segment(
    segment: Path, apply: Callable[[memoryview, bool], None], *, repair: bool = True
) -> SegmentReplay:
    """Read ``segment`` frame by frame, calling ``apply(payload, is_head)`` for each good
    frame; see the module docstring for torn tails (cut unless ``repair`` is false: a
    read-only check) and corruption. An error ``apply`` raises other than
    ``LogCorruptionError`` becomes one naming the frame."""
    data = segment.read_bytes()
    view = memoryview(data)  # (frames are views of it, not copies: entries copy their own data)
    pos, first = 0, True
    frames, torn_tail = 0, None
    while pos + FRAME.size <= len(data):
        length, crc = FRAME.unpack_from(data, pos)
        if length == 0 and crc == 0:
            break
        end = pos + FRAME.size + length
        payload = view[pos + FRAME.size : end]
        if end > len(data) or zlib.crc32(payload) != crc or length == 0:
            after = len(data[max(end, pos + FRAME.size) :].strip(b"\0"))
            if first or after:
                why = " (the head)" if first else f"; {after} bytes of data follow it: damage inside the log"
                raise LogCorruptionError(first_index_in(payload), f"{segment.name}: frame at byte {pos} "
                                         f"fails its checksum{why}, not a torn write")
            torn_tail = (pos, len(data[pos:].rstrip(b"\0")))
            if repair:
                cut_tail(segment, pos, len(data))
            break
        try:
            apply(payload, first)
        except LogCorruptionError:
            raise
        except Exception as exc:
            raise LogCorruptionError(
                first_index_in(payload),
                f"{segment.name}: frame at byte {pos} passes its checksum but does not replay: "
                f"{type(exc).__name__}: {exc}",
            ) from exc
        first = False
        pos = end
        frames += 1
    if first:
        raise LogCorruptionError(0, f"{segment.name}: no head frame")
    return SegmentReplay(frames=frames, torn_tail=torn_tail, end=pos)


def cut_tail(segment: Path, pos: int, size: int) -> None:
    """Zero a torn tail (a batch never acknowledged) so later frames land on zeros."""
    fd = os.open(segment, os.O_RDWR)
    try:
        os.ftruncate(fd, pos)
        os.posix_fallocate(fd, pos, max(size - pos, 1))
        os.fsync(fd)
    finally:
        os.close(fd)


def read_snapshot_file(path: Path, length: int, crc: int) -> bytes:
    """The data of the snapshot file ``path``, checked against the ``length`` and ``crc``
    its SNAP record holds; ``LogCorruptionError`` if it is missing, truncated or differs."""
    check_snapshot_file(path, length, crc)
    try:
        body = path.read_bytes()[SNAPFILE.size :]
    except FileNotFoundError:
        raise LogCorruptionError(0, f"snapshot file {path.name} is missing") from None
    if len(body) != length or zlib.crc32(body) != crc:
        raise LogCorruptionError(0, f"snapshot file {path.name} fails its checksum")
    return body


def check_snapshot_file(path: Path, length: int, crc: int) -> None:
    """``read_snapshot_file``'s checks but the crc of the body: the file is there, its header
    names ``length`` and ``crc`` and it holds ``length`` bytes after it (what a start checks
    without reading a store-sized file)."""
    try:
        with path.open("rb") as f:
            head = f.read(SNAPFILE.size)
            size = os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        raise LogCorruptionError(0, f"snapshot file {path.name} is missing") from None
    if len(head) < SNAPFILE.size:
        raise LogCorruptionError(0, f"snapshot file {path.name} is truncated")
    if SNAPFILE.unpack_from(head) != (length, crc) or size != SNAPFILE.size + length:
        raise LogCorruptionError(0, f"snapshot file {path.name} fails its checksum")
