"""``IntervalIndex``: which range watchers cover a key (a stabbing query over byte ranges).

Ranges are half-open ``[start, end)`` over bytes; ``end`` None means "every key >= start"
(etcd's ``range_end`` b"\\0"). The index is a centered interval tree rebuilt lazily, plus
two small side tables: ranges added since the last rebuild (``pending``, scanned by every
query) and values removed since (``removed``, filtered out of the tree's answers). The tree
is rebuilt, in O(n log n), only when either table outgrows ``max(64, sqrt(n))`` (pending)
or ``max(64, n / 4)`` (removed); queries cost O(log n + matches + pending). Before the side
tables every add or remove marked the whole tree dirty and the next query rebuilt it: with
5,000 agents each adding a watch (100 a second) and watchers moving between the synced
and unsynced groups, the leader rebuilt a 5,000-node tree on nearly every revision (20 %
of its CPU in the cluster-load profile, docs/benchmarks.md).

Worked example: ranges a=[b"a", b"c"), b=[b"b", None), c=[b"x", b"y")::

    stab(b"a")  -> {a}        stab(b"b") -> {a, b}      stab(b"c") -> {b}
    stab(b"x")  -> {b, c}     stab(b"y") -> {b}

PURE: no I/O. Not thread-safe; the owner serializes access.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Hashable, Iterator
from math import isqrt
from typing import Generic, TypeVar

__all__ = ["IntervalIndex"]

T = TypeVar("T", bound=Hashable)


def _end_key(end: bytes | None) -> tuple[int, bytes]:
    # None (unbounded) sorts after every byte string.
    return (1, b"") if end is None else (0, end)


class _Node(Generic[T]):
    __slots__ = ("by_end", "by_start", "center", "left", "right", "starts")

    def __init__(self, items: list[tuple[bytes, bytes | None, T]]) -> None:
        starts_sorted = sorted(items, key=lambda it: it[0])
        self.center = starts_sorted[len(starts_sorted) // 2][0]
        here, left, right = [], [], []
        for it in items:
            start, end = it[0], it[1]
            if end is not None and end <= self.center:
                left.append(it)
            elif start > self.center:
                right.append(it)
            else:
                here.append(it)
        self.by_start = sorted(here, key=lambda it: it[0])
        self.starts = [it[0] for it in self.by_start]
        self.by_end = sorted(here, key=lambda it: _end_key(it[1]), reverse=True)
        self.left: _Node[T] | None = _Node(left) if left else None
        self.right: _Node[T] | None = _Node(right) if right else None

    def stab(self, key: bytes, out: list[T]) -> None:
        node: _Node[T] | None = self
        while node is not None:
            if key < node.center:
                # every interval here contains center > key: it holds key iff start <= key
                for it in node.by_start[: bisect_right(node.starts, key)]:
                    out.append(it[2])
                node = node.left
            else:
                # every interval here starts <= center <= key: it holds key iff end > key
                for it in node.by_end:
                    if it[1] is not None and it[1] <= key:
                        break
                    out.append(it[2])
                node = node.right


class IntervalIndex(Generic[T]):
    """A multiset of ``(start, end, value)``; ``stab(key)`` lists values whose range holds key."""

    __slots__ = ("_dirty", "_items", "_pending", "_removed", "_root")

    def __init__(self) -> None:
        self._items: dict[T, tuple[bytes, bytes | None]] = {}
        self._root: _Node[T] | None = None
        self._dirty = False
        self._pending: dict[T, tuple[bytes, bytes | None]] = {}
        """Added (or re-added) since the last rebuild: not in the tree."""
        self._removed: set[T] = set()
        """In the tree but removed (or re-added, then also in pending) since the rebuild."""

    def add(self, start: bytes, end: bytes | None, value: T) -> None:
        if end is not None and end <= start:
            raise ValueError(f"empty range [{start!r}, {end!r})")
        if value in self._items and value not in self._pending:
            self._removed.add(value)  # the tree's copy is stale
        self._items[value] = (start, end)
        self._pending[value] = (start, end)
        if len(self._pending) > max(64, isqrt(len(self._items))):
            self._dirty = True

    def remove(self, value: T) -> None:
        if self._items.pop(value, None) is None:
            return
        if self._pending.pop(value, None) is not None and value not in self._removed:
            return  # never made it into the tree
        self._removed.add(value)
        if len(self._removed) > max(64, len(self._items) // 4):
            self._dirty = True

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, value: object) -> bool:
        return value in self._items

    def __iter__(self) -> Iterator[T]:
        return iter(self._items)

    def stab(self, key: bytes) -> list[T]:
        if self._dirty:
            items = [(s, e, v) for v, (s, e) in self._items.items()]
            self._root = _Node(items) if items else None
            self._dirty = False
            self._pending.clear()
            self._removed.clear()
        out: list[T] = []
        if self._root is not None:
            self._root.stab(key, out)
            if self._removed:
                removed = self._removed
                out = [v for v in out if v not in removed]
        for value, (start, end) in self._pending.items():
            if start <= key and (end is None or key < end):
                out.append(value)
        return out
