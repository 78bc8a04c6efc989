"""The bytes of the WAL (``kvraft.storage.wal``): frames, records, snapshot files.

One source of truth for the layout, written by ``wal`` and read back by ``wal_replay``::

    frame   = length (u32 BE) | crc32(payload) (u32 BE) | payload
    payload = records, back to back (one frame per ``sync()``: a batch is atomic)

    record  kind (u8) then:
      1 APPEND   count (u32), per entry: index u64 | term u64 | type u8 | len u32 | data
      2 HARD     term u64 | vote u64 | commit u64
      3 CONF     index u64 | len u32 | encode_conf_state bytes
      4 SNAP     how u8 (0 apply, 1 create) | index u64 | term u64 | data len u64 |
                 data crc32 u32 | conf len u32 | conf bytes      (data lives in snap-*.snap)
      5 COMPACT  index u64
      6 HEAD     seq u64 | offset u64 | offset term u64 | conf index u64 | conf len u32 |
                 conf | snapshot (index u64, term u64, data len u64, data crc u32,
                 conf len u32, conf) | hard (3 x u64)
                 followed in the same frame by one APPEND of every entry in memory

    snapshot file (snap-<index:016x>.snap) = data length u64 | crc32(data) u32 | data

A zero length ends the data of a segment (the rest is preallocated zeros).
"""

from __future__ import annotations

import struct
import zlib

from kvraft.raft.types import ConfState, Entry, HardState, SnapshotMetadata
from kvraft.storage.raft_log import encode_conf_state

__all__ = [
    "APPEND",
    "COMPACT",
    "CONF",
    "ENTRY",
    "FRAME",
    "HARD",
    "HARD3",
    "HEAD",
    "K_APPEND",
    "K_COMPACT",
    "K_CONF",
    "K_HARD",
    "K_HEAD",
    "K_SNAP",
    "SNAP",
    "SNAPFILE",
    "SNAPREF",
    "SNAP_APPLY",
    "SNAP_CREATE",
    "U32",
    "encode_compact",
    "encode_conf",
    "encode_entries",
    "encode_frame",
    "encode_hard",
    "encode_head",
    "encode_snap",
    "segment_name",
    "snap_file_name",
]

FRAME = struct.Struct(">II")
U32 = struct.Struct(">I")
APPEND = struct.Struct(">BI")
ENTRY = struct.Struct(">QQBI")
HARD = struct.Struct(">BQQQ")
CONF = struct.Struct(">BQI")
SNAP = struct.Struct(">BBQQQII")
COMPACT = struct.Struct(">BQ")
HEAD = struct.Struct(">BQQQQI")
SNAPREF = struct.Struct(">QQQII")
HARD3 = struct.Struct(">QQQ")
SNAPFILE = struct.Struct(">QI")  # data length, crc32 of the data

K_APPEND, K_HARD, K_CONF, K_SNAP, K_COMPACT, K_HEAD = 1, 2, 3, 4, 5, 6
SNAP_APPLY, SNAP_CREATE = 0, 1


def segment_name(seq: int) -> str:
    return f"{seq:016x}.wal"


def snap_file_name(index: int) -> str:
    return f"snap-{index:016x}.snap"


def encode_frame(payload: bytes) -> bytes:
    return FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def encode_entries(entries: list[Entry]) -> bytes:
    pack = ENTRY.pack
    parts = [APPEND.pack(K_APPEND, len(entries))]
    for e in entries:
        parts.append(pack(e.index, e.term, e.type, len(e.data)))
        parts.append(e.data)
    return b"".join(parts)


def encode_hard(hard: HardState) -> bytes:
    return HARD.pack(K_HARD, hard.term, hard.vote, hard.commit)


def encode_conf(index: int, conf: ConfState) -> bytes:
    raw = encode_conf_state(conf)
    return CONF.pack(K_CONF, index, len(raw)) + raw


def encode_snap(how: int, meta: SnapshotMetadata, length: int, crc: int) -> bytes:
    conf = encode_conf_state(meta.conf_state)
    return SNAP.pack(K_SNAP, how, meta.index, meta.term, length, crc, len(conf)) + conf


def encode_compact(index: int) -> bytes:
    return COMPACT.pack(K_COMPACT, index)


def encode_head(
    seq: int, entries: list[Entry], conf_index: int, conf: ConfState,
    snapshot: SnapshotMetadata, snap_len: int, snap_crc: int, hard: HardState,
) -> bytes:
    """A HEAD record: ``entries[0]`` is the offset (the last compacted entry), the rest the
    retained entries (one APPEND after the head, if any)."""
    offset = entries[0]
    raw_conf = encode_conf_state(conf)
    s_conf = encode_conf_state(snapshot.conf_state)
    parts = [
        HEAD.pack(K_HEAD, seq, offset.index, offset.term, conf_index, len(raw_conf)),
        raw_conf,
        SNAPREF.pack(snapshot.index, snapshot.term, snap_len, snap_crc, len(s_conf)),
        s_conf,
        HARD3.pack(hard.term, hard.vote, hard.commit),
    ]
    if len(entries) > 1:
        parts.append(encode_entries(entries[1:]))
    return b"".join(parts)
