"""Reading kvraft snapshot files (what ``kvctl snapshot save`` writes from a kvraft member):
the framed, checksummed stream of ``kvraft.storage.snapshot``, read by its parser
(``read_frames``).

::

    frame   = length (u32 BE) | crc32(payload) (u32 BE) | payload (msgpack)
    first   {"magic": "kvraft-snapshot", "version": 1, "buckets": [...], "revision": r, ...}
    then    [bucket, [key, value, key, value, ...]]
    last    {"end": true, "records": n, "sha256": hex digest of every byte before it}

``is_kvraft_snapshot`` tells such a file from an etcd (bbolt) one by its first frame.
``verify_snapshot`` reads the whole file, checking every frame's CRC, the record count
and the trailer's SHA-256, and returns what ``snapshot status`` prints: a hash (CRC-32
over every bucket name, key and value in stream order, so two snapshots of the same data
hash alike), the revision, the number of records over all buckets (as etcd counts keys in
every bucket) and the file size. A truncated or damaged file raises ``SnapshotFileError``.
"""

from __future__ import annotations

import hashlib
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from kvraft.storage.snapshot import MAGIC, SnapshotFrameError, read_frames

__all__ = ["MAGIC", "SnapshotFileError", "SnapshotFileStatus", "is_kvraft_snapshot", "verify_snapshot"]

_HEAD = struct.Struct(">II")
_READ_BYTES = 1 << 20


class SnapshotFileError(Exception):
    """The file is not a complete, intact kvraft snapshot."""


@dataclass(frozen=True)
class SnapshotFileStatus:
    hash: int
    revision: int
    total_key: int
    total_size: int
    consistent_index: tuple[int, int]
    buckets: tuple[bytes, ...]


def _frames(handle: BinaryIO) -> Iterator[tuple[bytes, Any]]:
    """(raw frame bytes, decoded payload) for each frame, by ``kvraft.storage.snapshot``'s
    parser; its errors are worded for the command line."""
    try:
        yield from read_frames(iter(lambda: handle.read(_READ_BYTES), b""))
    except SnapshotFrameError as exc:
        if exc.reason == "checksum":
            text = "snapshot frame fails its checksum (the file is damaged)"
        elif exc.reason == "decode":
            text = f"snapshot frame does not decode: {exc.cause}"
        else:
            text = f"snapshot truncated: {exc.stray} stray bytes at the end"
        raise SnapshotFileError(text) from None


def _header(payload: Any) -> dict[str, Any] | None:
    if isinstance(payload, dict) and payload.get("magic") == MAGIC:
        return payload
    return None


def is_kvraft_snapshot(path: str) -> bool:
    """Whether the file starts with a kvraft snapshot header frame."""
    with open(path, "rb") as handle:
        head = handle.read(_HEAD.size)
        if len(head) < _HEAD.size:
            return False
        length, _crc = _HEAD.unpack(head)
        if length > 1 << 20:
            return False
        first = head + handle.read(length)
    try:
        _raw, payload = next(read_frames([first]))
    except (SnapshotFrameError, StopIteration):
        return False
    return _header(payload) is not None


def verify_snapshot(path: str) -> SnapshotFileStatus:
    """Read and check the whole file (see the module docstring)."""
    digest = hashlib.sha256()
    crc = records = 0
    head: dict[str, Any] | None = None
    with open(path, "rb") as handle:
        for raw, payload in _frames(handle):
            if head is None:
                head = _header(payload)
                if head is None or head.get("version") != 1:
                    raise SnapshotFileError("not a kvraft snapshot (bad header)")
            elif isinstance(payload, dict):
                if payload.get("sha256") != digest.hexdigest() or payload.get("records") != records:
                    raise SnapshotFileError("snapshot fails its whole-file checksum")
                ci = head.get("consistent_index") or [0, 0]
                return SnapshotFileStatus(
                    crc & 0xFFFFFFFF, int(head["revision"]), records, os.fstat(handle.fileno()).st_size,
                    (int(ci[0]), int(ci[1])), tuple(head.get("buckets") or ()),
                )
            else:
                try:
                    name, flat = payload
                except (TypeError, ValueError):
                    raise SnapshotFileError("snapshot record frame is malformed") from None
                crc = zlib.crc32(name, crc)
                for item in flat:
                    crc = zlib.crc32(item, crc)
                records += len(flat) // 2
            digest.update(raw)
    if head is None:
        raise SnapshotFileError("not a kvraft snapshot (empty file)")
    raise SnapshotFileError("snapshot truncated: no end frame")
