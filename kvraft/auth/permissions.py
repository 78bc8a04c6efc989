"""Range permissions and the per-user permission cache (etcd's ``unifiedRangePermissions``).

A permission covers ``[key, range_end)``: ``range_end`` b"" is the single key (stored as
``[key, key + b"\\0")``), b"\\0" is every key >= ``key`` (end None here). A user's READ and
WRITE grants from all roles are merged into sorted, disjoint intervals; a request range
is allowed iff one merged interval contains it (adjacent and overlapping grants merge, so
a range covered by a union of grants is inside one merged interval). Lookup is a bisect.

Example: grants [a, c) and [c, e) and [x, None) merge into [a, e) and [x, None);
[b, d) is allowed, [d, f) is not, [y, None) is.

PURE.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["READ", "READWRITE", "WRITE", "Permission", "RangeSet", "key_range"]

READ, WRITE, READWRITE = 0, 1, 2
"""etcd's ``authpb.Permission.Type`` numbers."""


def key_range(key: bytes, range_end: bytes) -> tuple[bytes, bytes | None]:
    if range_end == b"":
        return key, key + b"\0"
    if range_end == b"\0":
        return key, None
    return key, range_end


@dataclass(frozen=True, slots=True)
class Permission:
    perm_type: int
    key: bytes
    range_end: bytes = b""

    def reads(self) -> bool:
        return self.perm_type in (READ, READWRITE)

    def writes(self) -> bool:
        return self.perm_type in (WRITE, READWRITE)


def _end_lt(a: bytes | None, b: bytes | None) -> bool:
    if a is None:
        return False
    return b is None or a < b


class RangeSet:
    """Sorted disjoint ``[start, end)`` intervals (end None = unbounded)."""

    __slots__ = ("_ends", "_starts")

    def __init__(self, ranges: Iterable[tuple[bytes, bytes | None]] = ()) -> None:
        merged: list[tuple[bytes, bytes | None]] = []
        for start, end in sorted(ranges, key=lambda r: r[0]):
            if end is not None and end <= start:
                continue
            if merged:
                last_start, last_end = merged[-1]
                if last_end is None or start <= last_end:  # overlaps or touches
                    merged[-1] = (last_start, None if end is None or last_end is None else max(last_end, end))
                    continue
            merged.append((start, end))
        self._starts = [s for s, _ in merged]
        self._ends = [e for _, e in merged]

    def contains(self, start: bytes, end: bytes | None) -> bool:
        i = bisect_right(self._starts, start) - 1
        if i < 0:
            return False
        return not _end_lt(self._ends[i], end)

    def __len__(self) -> int:
        return len(self._starts)
