"""``IntervalIndex``: which range watchers cover a key (a stabbing query over byte ranges).

Ranges are half-open ``[start, end)`` over bytes; ``end`` None means "every key >= start"
(etcd's ``range_end`` b"\\0"). The index is a centered interval tree rebuilt lazily: adds
and removes only mark it dirty, the next query rebuilds it in O(n log n), and queries then
cost O(log n + matches). Watch creation comes in bursts and events are frequent, so the
rebuild is amortised over many queries.

Worked example: ranges a=[b"a", b"c"), b=[b"b", None), c=[b"x", b"y")::

    stab(b"a")  -> {a}        stab(b"b") -> {a, b}      stab(b"c") -> {b}
    stab(b"x")  -> {b, c}     stab(b"y") -> {b}

PURE: no I/O. Not thread-safe; the owner serializes access.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Hashable, Iterator
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

    __slots__ = ("_items", "_root", "_dirty")

    def __init__(self) -> None:
        self._items: dict[T, tuple[bytes, bytes | None]] = {}
        self._root: _Node[T] | None = None
        self._dirty = False

    def add(self, start: bytes, end: bytes | None, value: T) -> None:
        if end is not None and end <= start:
            raise ValueError(f"empty range [{start!r}, {end!r})")
        self._items[value] = (start, end)
        self._dirty = True

    def remove(self, value: T) -> None:
        if self._items.pop(value, None) is not None:
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
        out: list[T] = []
        if self._root is not None:
            self._root.stab(key, out)
        return out
