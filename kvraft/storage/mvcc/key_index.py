"""The revisions of one key, grouped in generations (etcd's ``keyIndex``).

A generation runs from a key's creation to its deletion (tombstone). Revisions are packed
ints (``revision.pack``); ``N.s`` below means main N, sub s, and ``(t)`` a tombstone.
Walk one key through ``put(1.0) put(2.0) tombstone(3.0) put(4.0) tombstone(5.0)``::

    after put(1.0), put(2.0):        {1.0, 2.0}                       ver 2, created 1.0
    after tombstone(3.0):            {1.0, 2.0, 3.0(t)} {empty}
    after put(4.0):                  {1.0, 2.0, 3.0(t)} {4.0}
    after tombstone(5.0):            {1.0, 2.0, 3.0(t)} {4.0, 5.0(t)} {empty}

``get(at)`` finds the generation alive at ``at`` and the largest revision <= ``at`` in it:
get(2) -> 2.0 (version 2, created 1.0); get(3) -> nothing (deleted at 3); get(4) -> 4.0
(version 1, created 4.0); get(6) -> nothing.

``compact(n)`` drops every revision <= n except the largest one in the generation alive at
n, and drops whole generations that ended (tombstone) before n. The dropped revisions are
returned: they are exactly the records physical compaction deletes::

    compact(2)  {2.0, 3.0(t)} {4.0, 5.0(t)} {empty}     drops 1.0
    compact(4)  {4.0, 5.0(t)} {empty}                   drops 1.0 2.0 3.0(t)
    compact(5)  {5.0(t)} {empty}                        drops ... 4.0; keeps the tombstone
    compact(6)  {empty}  -> the key leaves the index    drops ... 5.0(t)

(a tombstone at exactly ``n`` is kept, so a key deleted at the compaction point is still
seen as deleted there; the next compaction past it removes it.)

Ownership and threading: a KeyIndex belongs to its ``TreeIndex``, which serializes all
access with its lock. Nothing here takes locks.
"""

from __future__ import annotations

from kvraft.storage.revision import main_of

__all__ = ["Generation", "KeyIndex"]


class Generation:
    """``ver``: puts in this generation so far (kept across compaction, so versions of the
    revisions left stay right); ``created``: the revision that created it; ``revs``: its
    revisions, ascending (a tombstone, if any, is last)."""

    __slots__ = ("created", "revs", "ver")

    def __init__(self, ver: int = 0, created: int = 0, revs: list[int] | None = None) -> None:
        self.ver = ver
        self.created = created
        self.revs: list[int] = [] if revs is None else revs

    def __repr__(self) -> str:
        return f"Generation(ver={self.ver}, created={self.created}, revs={self.revs})"


class KeyIndex:
    """All revisions of ``key`` that the store still holds."""

    __slots__ = ("generations", "key")

    def __init__(self, key: bytes) -> None:
        self.key = key
        self.generations: list[Generation] = []

    def __repr__(self) -> str:
        return f"KeyIndex({self.key!r}, {self.generations})"

    # -- changes -------------------------------------------------------------------------

    def put(self, rev: int) -> None:
        """Append a put at ``rev`` (must be newer than every revision held)."""
        gens = self.generations
        if not gens or not gens[-1].revs:
            # a new generation, built at its exact size (most keys never get a second
            # revision: an over-allocated list would cost them 24 bytes each)
            g = Generation(1, rev, [rev])
            if gens:
                gens[-1] = g
            else:
                self.generations = [g]
            return
        g = gens[-1]
        assert rev > g.revs[-1], (self.key, rev)
        g.revs.append(rev)
        g.ver += 1

    def tombstone(self, rev: int) -> bool:
        """Append a delete at ``rev`` and start an empty generation. False (and no change)
        when the key is not alive (its last generation is empty)."""
        if not self.generations or not self.generations[-1].revs:
            return False
        self.put(rev)
        self.generations.append(Generation())
        return True

    def restore(self, created: int, modified: int, ver: int) -> None:
        """First record seen while rebuilding the index: a put at ``modified`` whose
        record says ``created`` and ``ver`` (history before it may be compacted away)."""
        assert not self.generations
        self.generations.append(Generation(ver=ver, created=created, revs=[modified]))

    def restore_tombstone(self, rev: int) -> None:
        """First record seen while rebuilding is a tombstone (its creation compacted)."""
        self.restore(0, rev, 1)
        self.generations.append(Generation())

    # -- queries -------------------------------------------------------------------------

    def is_empty(self) -> bool:
        return len(self.generations) == 1 and not self.generations[0].revs

    def is_compactable(self) -> bool:
        """False only for the settled shape (one generation, one put): compaction at any
        revision leaves such a key unchanged, so it need not be visited."""
        gens = self.generations
        return not (len(gens) == 1 and len(gens[0].revs) == 1)

    def modified(self) -> int:
        """The newest revision held (0 if none)."""
        for g in reversed(self.generations):
            if g.revs:
                return g.revs[-1]
        return 0

    def _find_generation(self, at: int) -> Generation | None:
        gens = self.generations
        last = len(gens) - 1
        for i in range(last, -1, -1):
            g = gens[i]
            if not g.revs:
                continue
            if i != last and main_of(g.revs[-1]) <= at:
                return None  # deleted at or before ``at``
            if main_of(g.revs[0]) <= at:
                return g
        return None

    def get(self, at: int) -> tuple[int, int, int] | None:
        """``(modified, created, version)`` of the key as of main revision ``at``, or None
        if it did not exist then (never created, or deleted)."""
        g = self._find_generation(at)
        if g is None:
            return None
        revs = g.revs
        for n in range(len(revs) - 1, -1, -1):
            if main_of(revs[n]) <= at:
                return revs[n], g.created, g.ver - (len(revs) - n - 1)
        return None

    def _do_compact(self, at: int) -> tuple[int, int]:
        """``(generation index, revision index)`` of what compaction at ``at`` keeps: the
        first generation alive at or after ``at``, and in it the largest revision <= at
        (-1 if none)."""
        gens = self.generations
        gi = 0
        while gi < len(gens) - 1 and main_of(gens[gi].revs[-1]) < at:
            gi += 1
        revs = gens[gi].revs
        for n in range(len(revs) - 1, -1, -1):
            if main_of(revs[n]) <= at:
                return gi, n
        return gi, -1

    def compact(self, at: int, dropped: list[tuple[int, bool]]) -> None:
        """Drop what compaction at ``at`` removes (see the module docstring), appending
        each dropped revision to ``dropped`` as ``(rev, is_tombstone)``."""
        gi, ri = self._do_compact(at)
        for g in self.generations[:gi]:
            dropped.extend((r, False) for r in g.revs[:-1])
            dropped.append((g.revs[-1], True))  # a finished generation ends in a tombstone
        g = self.generations[gi]
        if ri > 0:
            dropped.extend((r, False) for r in g.revs[:ri])
            g.revs = g.revs[ri:]
        if gi:
            self.generations = self.generations[gi:]

    def copy_shape(self) -> tuple[int, int, int, int]:
        """What ``truncate`` needs to undo appends: generation count, and the last
        generation's revision count, version and creation revision."""
        if not self.generations:
            return (0, 0, 0, 0)
        g = self.generations[-1]
        return (len(self.generations), len(g.revs), g.ver, g.created)

    def truncate(self, shape: tuple[int, int, int, int]) -> None:
        """Undo every ``put``/``tombstone`` made since ``copy_shape`` returned ``shape``."""
        n, nrevs, ver, created = shape
        del self.generations[n:]
        if n:
            g = self.generations[-1]
            del g.revs[nrevs:]
            g.ver, g.created = ver, created
