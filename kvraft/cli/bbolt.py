"""Read-only reader for etcd's bbolt snapshot files, enough for ``snapshot status``.

Layout (go.etcd.io/bbolt): every page starts with a 16-byte header (``id`` u64, ``flags``
u16, ``count`` u16, ``overflow`` u32). Pages 0 and 1 hold the two meta copies (magic
``0xED0CDAED``, page size, root bucket, high-water page id ``pgid``, ``txid``, FNV-64a
checksum); the valid one with the larger ``txid`` wins. Branch elements are (``pos``,
``ksize``, ``pgid``), leaf elements (``flags``, ``pos``, ``ksize``, ``vsize``), 16 bytes
each, with ``pos`` relative to the element. A bucket's value is its header (root page id,
sequence) followed, when the root id is 0, by an inline page.

``snapshot_status`` computes what etcdctl prints: CRC-32C over every bucket name, key and
value in order; the main revision of the last key in bucket ``key``; the key count; and
``pgid * page_size`` as the size. All little-endian, as bbolt writes on amd64/arm64.
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["BoltError", "SnapshotStatus", "crc32c", "snapshot_status"]

_fast_crc32c: Callable[..., int] | None
try:
    from crc32c import crc32c as _fast_crc32c
except ImportError:  # pragma: no cover - the dependency is pinned; this keeps the reader usable
    _fast_crc32c = None

_MAGIC = 0xED0CDAED
_BRANCH, _LEAF, _META = 0x01, 0x02, 0x04
_BUCKET_LEAF = 0x01
_PAGE_HEADER = struct.Struct("<QHHI")
_META_FIELDS = struct.Struct("<IIIIQQQQQQ")  # magic version page_size flags root seq freelist pgid txid checksum


class BoltError(Exception):
    """The file is not a readable bbolt database."""


def _crc_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc_table()


def crc32c(data: bytes, crc: int = 0) -> int:
    """CRC-32C (Castagnoli), continuing from ``crc`` (the ``crc32c`` package's hardware or C
    code when installed, else this table loop, about 1.5 MB/s)."""
    if _fast_crc32c is not None:
        return int(_fast_crc32c(data, value=crc))
    crc ^= 0xFFFFFFFF
    table = _TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _fnv64a(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


@dataclass(frozen=True)
class SnapshotStatus:
    hash: int
    revision: int
    total_key: int
    total_size: int


class _Bolt:
    def __init__(self, data: Any) -> None:  # bytes or a read-only mmap
        self.data = data
        metas: list[tuple[int, ...]] = []
        for offset in (0, None):
            if offset is None:
                if not metas:
                    break
                offset = metas[0][2]
            meta = self._meta_at(offset)
            if meta is not None:
                metas.append(meta)
        if not metas:
            # meta 0 unreadable: try the common page sizes for meta 1
            for size in (4096, 8192, 16384, 65536):
                meta = self._meta_at(size)
                if meta is not None:
                    metas.append(meta)
                    break
        if not metas:
            raise BoltError("invalid database (no valid meta page)")
        best = max(metas, key=lambda m: m[8])
        self.page_size = best[2]
        self.root = best[4]
        self.pgid = best[7]

    def _meta_at(self, offset: int) -> tuple[int, ...] | None:
        start = offset + _PAGE_HEADER.size
        if len(self.data) < start + _META_FIELDS.size:
            return None
        _pid, flags, _count, _overflow = _PAGE_HEADER.unpack_from(self.data, offset)
        fields = _META_FIELDS.unpack_from(self.data, start)
        if not flags & _META or fields[0] != _MAGIC or fields[1] != 2:
            return None
        if _fnv64a(self.data[start : start + _META_FIELDS.size - 8]) != fields[9]:
            return None
        return fields

    def _page(self, pgid: int) -> tuple[bytes, int]:
        offset = pgid * self.page_size
        if offset + _PAGE_HEADER.size > len(self.data):
            raise BoltError(f"page {pgid} is past the end of the file")
        _pid, _flags, _count, overflow = _PAGE_HEADER.unpack_from(self.data, offset)
        return self.data[offset : offset + (overflow + 1) * self.page_size], 0

    def walk(self, root: int, inline: bytes | None = None) -> Iterator[tuple[bytes, bytes, int]]:
        """(key, value, flags) of every leaf element under ``root`` (or in ``inline``)."""
        page = inline if inline is not None else self._page(root)[0]
        _pid, flags, count, _overflow = _PAGE_HEADER.unpack_from(page, 0)
        base = _PAGE_HEADER.size
        if flags & _BRANCH:
            for i in range(count):
                elem = base + 16 * i
                _pos, _ksize, child = struct.unpack_from("<IIQ", page, elem)
                yield from self.walk(child)
        elif flags & _LEAF:
            for i in range(count):
                elem = base + 16 * i
                eflags, pos, ksize, vsize = struct.unpack_from("<IIII", page, elem)
                key = page[elem + pos : elem + pos + ksize]
                value = page[elem + pos + ksize : elem + pos + ksize + vsize]
                yield key, value, eflags
        elif count:
            raise BoltError(f"unexpected page flags {flags:#x}")

    def bucket(self, value: bytes) -> Iterator[tuple[bytes, bytes, int]]:
        root, _sequence = struct.unpack_from("<QQ", value, 0)
        if root == 0:
            return self.walk(0, inline=value[16:])
        return self.walk(root)


def snapshot_status(path: str) -> SnapshotStatus:
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            raise BoltError("invalid database (no valid meta page)")
        data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)  # pages are read as walked
    try:
        return _status(_Bolt(data))
    finally:
        data.close()


def _status(bolt: _Bolt) -> SnapshotStatus:
    crc, revision, total = 0, 0, 0
    for name, value, flags in bolt.walk(bolt.root):
        if not flags & _BUCKET_LEAF:
            raise BoltError(f"cannot get hash of bucket {name.decode(errors='replace')}")
        crc = crc32c(name, crc)
        for key, val, _eflags in bolt.bucket(value):
            crc = crc32c(val, crc32c(key, crc))
            if name == b"key" and len(key) >= 8:
                revision = struct.unpack_from(">Q", key, 0)[0]
            total += 1
    return SnapshotStatus(crc, revision, total, bolt.pgid * bolt.page_size)
