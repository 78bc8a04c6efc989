"""Revisions and their byte encoding: the keys of the MVCC ``key`` bucket.

A revision is ``(main, sub)``: ``main`` is the store-wide counter bumped once per
modifying request (one txn = one main revision), ``sub`` numbers the changes inside it
(0, 1, ...). Encoded exactly as etcd's ``revision.go``, so byte order is revision order::

    main (u64 big-endian) | b"_" | sub (u64 big-endian) [| b"t" if a tombstone]

    revision 5.2          00 00 00 00 00 00 00 05  5f  00 00 00 00 00 00 00 02
    tombstone at 7.0      00 00 00 00 00 00 00 07  5f  00 00 00 00 00 00 00 00  74

17 bytes, or 18 for a tombstone (a delete). Inside the process a revision is often one
``int``, ``pack(main, sub) = main << 32 | sub``: ordering and equality are those of the
pair as long as ``sub < 2**32`` (asserted), and it costs one small object, not a tuple.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

__all__ = [
    "MARKED_REV_BYTES_LEN",
    "REV_BYTES_LEN",
    "TOMBSTONE_MARK",
    "Revision",
    "bytes_to_rev",
    "main_of",
    "pack",
    "rev_to_bytes",
    "unpack",
]

REV_BYTES_LEN = 17
MARKED_REV_BYTES_LEN = 18
TOMBSTONE_MARK = b"t"
_REV = struct.Struct(">QcQ")
_SUB_LIMIT = 1 << 32


class Revision(NamedTuple):
    main: int
    sub: int = 0


def rev_to_bytes(main: int, sub: int = 0, tombstone: bool = False) -> bytes:
    raw = _REV.pack(main, b"_", sub)
    return raw + TOMBSTONE_MARK if tombstone else raw


def bytes_to_rev(raw: bytes) -> tuple[int, int, bool]:
    """``(main, sub, is_tombstone)``; ValueError if ``raw`` is not a revision key."""
    n = len(raw)
    if n not in (REV_BYTES_LEN, MARKED_REV_BYTES_LEN) or raw[8:9] != b"_":
        raise ValueError(f"not a revision key: {bytes(raw)!r}")
    main, _, sub = _REV.unpack_from(raw)
    if n == MARKED_REV_BYTES_LEN and raw[17:18] != TOMBSTONE_MARK:
        raise ValueError(f"bad revision mark: {bytes(raw)!r}")
    return main, sub, n == MARKED_REV_BYTES_LEN


def pack(main: int, sub: int) -> int:
    assert 0 <= sub < _SUB_LIMIT, sub
    return main << 32 | sub


def unpack(packed: int) -> Revision:
    return Revision(packed >> 32, packed & (_SUB_LIMIT - 1))


def main_of(packed: int) -> int:
    return packed >> 32
