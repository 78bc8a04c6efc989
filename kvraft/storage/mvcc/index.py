"""The in-memory key index: every key's revisions, in key order (etcd's ``treeIndex``).

A ``dict`` maps key -> ``KeyIndex``; a ``SortedList`` of the keys serves ranges. The index
is not persisted: ``MVCCStore`` rebuilds it from the ``key`` bucket when it opens.

Range ends follow etcd's index (after the API layer's ``"\\0"`` rewrite): ``end is None``
is the single key, ``end == b""`` is every key >= ``key``, otherwise ``[key, end)``.

Threading: one writer thread calls the mutating methods; reader threads call the query
methods concurrently. Every method takes the index lock; long range scans release it
every ``CHUNK`` keys and resume after the last key seen, so a full scan never stalls the
writer. A scan therefore does not see one frozen index, which is fine for MVCC: readers
ask for a revision at or below the last committed one, and the writer only appends newer
revisions. Compaction is the exception (it drops old revisions); readers detect it by
checking the store's compaction point after the scan (see ``views.ReadView``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator

from sortedcontainers import SortedList

from kvraft.storage.mvcc.key_index import KeyIndex

__all__ = ["CHUNK", "TreeIndex"]

CHUNK = 512
"""Keys visited per lock hold in range scans and compaction."""

Hit = tuple[bytes, int, int, int]
"""(key, modified revision, created revision, version), revisions packed."""


class TreeIndex:
    """Key -> KeyIndex, ordered; see the module docstring."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._map: dict[bytes, KeyIndex] = {}
        self._keys: SortedList = SortedList()
        self._compactable: set[bytes] = set()  # keys that a compaction may change

    def __len__(self) -> int:
        return len(self._map)

    # -- writer --------------------------------------------------------------------------

    def put(self, key: bytes, rev: int) -> None:
        with self._lock:
            ki = self._map.get(key)
            if ki is None:
                ki = KeyIndex(key)
                self._map[key] = ki
                self._keys.add(key)
            ki.put(rev)
            if ki.is_compactable():
                self._compactable.add(key)

    def put_returning(
        self, key: bytes, rev: int
    ) -> tuple[tuple[int, int, int] | None, tuple[int, int, int, int] | None]:
        """``put``, returning what ``get(key, main of rev)`` and ``shape(key)`` said just
        before it (one lock hold: the hot path of every write)."""
        with self._lock:
            ki = self._map.get(key)
            if ki is None:
                ki = KeyIndex(key)
                self._map[key] = ki
                self._keys.add(key)
                ki.put(rev)
                return None, None
            gens = ki.generations
            if gens:
                # ``rev`` is newer than every revision held, so what ``get`` finds at it is
                # the last generation's newest revision, or nothing when that generation is
                # empty (the key is deleted): no search (the hot path of every put)
                g = gens[-1]
                revs = g.revs
                shape = (len(gens), len(revs), g.ver, g.created)
                if revs:
                    got: tuple[int, int, int] | None = (revs[-1], g.created, g.ver)
                    assert rev > revs[-1], (key, rev)
                    revs.append(rev)
                    g.ver += 1
                    self._compactable.add(key)  # two revisions or more: compactable
                    return got, shape
            else:
                shape = (0, 0, 0, 0)
            ki.put(rev)
            if ki.is_compactable():
                self._compactable.add(key)
            return None, shape

    def tombstone(self, key: bytes, rev: int) -> bool:
        with self._lock:
            ki = self._map.get(key)
            if ki is None or not ki.tombstone(rev):
                return False
            self._compactable.add(key)
            return True

    def shape(self, key: bytes) -> tuple[int, int, int, int] | None:
        """Undo information for ``truncate`` (None: the key is not in the index)."""
        with self._lock:
            ki = self._map.get(key)
            return None if ki is None else ki.copy_shape()

    def truncate(self, key: bytes, shape: tuple[int, int, int, int] | None) -> None:
        """Undo the puts/tombstones on ``key`` made after ``shape(key)``."""
        with self._lock:
            ki = self._map.get(key)
            if ki is None:
                return
            if shape is None or shape[0] == 0:
                del self._map[key]
                self._keys.remove(key)
                self._compactable.discard(key)
            else:
                ki.truncate(shape)

    def load(self, items: Iterable[KeyIndex]) -> None:
        """Bulk insert rebuilt KeyIndexes (keys must be new)."""
        with self._lock:
            for ki in items:
                self._map[ki.key] = ki
                if ki.is_compactable():
                    self._compactable.add(ki.key)
            self._keys = SortedList(self._map)

    def compaction_keys(self) -> list[bytes]:
        """The keys a compaction must visit, sorted: those changed since they were last
        settled (``KeyIndex.is_compactable``). A key that becomes compactable later only
        gained revisions newer than any compaction point already chosen, so a compaction
        may work from this snapshot."""
        with self._lock:
            return sorted(self._compactable)

    def compact_keys(self, keys: list[bytes], at: int, dropped: list[tuple[int, bool]]) -> None:
        """Compact these keys at main revision ``at`` (one lock hold), appending the
        dropped revisions to ``dropped`` as ``(rev, is_tombstone)``."""
        with self._lock:
            for key in keys:
                ki = self._map.get(key)
                if ki is None:
                    continue
                ki.compact(at, dropped)
                if ki.is_empty():
                    del self._map[key]
                    self._keys.remove(key)
                    self._compactable.discard(key)
                elif not ki.is_compactable():
                    self._compactable.discard(key)

    def compact(self, at: int) -> list[tuple[int, bool]]:
        """Compact every key at ``at`` (CHUNK keys per lock hold); the dropped revisions,
        sorted."""
        dropped: list[tuple[int, bool]] = []
        todo = self.compaction_keys()
        for i in range(0, len(todo), CHUNK):
            self.compact_keys(todo[i : i + CHUNK], at, dropped)
        dropped.sort()
        return dropped

    # -- readers -------------------------------------------------------------------------

    def get(self, key: bytes, at: int) -> tuple[int, int, int] | None:
        """``(modified, created, version)`` of ``key`` at main revision ``at``."""
        with self._lock:
            ki = self._map.get(key)
            return None if ki is None else ki.get(at)

    def _scan(self, key: bytes, end: bytes, at: int) -> Iterator[list[Hit]]:
        """Keys of ``[key, end)`` (``end`` b"": unbounded) alive at ``at``, with their
        revisions, a chunk at a time: the lock is held while a chunk is resolved (the
        writer may be appending to the same generations), never across a ``yield``."""
        if end and end <= key:
            return
        lo, inclusive = key, True
        while True:
            with self._lock:
                seen = 0
                hits: list[Hit] = []
                last = lo
                for k in self._keys.irange(lo, end or None, inclusive=(inclusive, False)):
                    got = self._map[k].get(at)
                    if got is not None:
                        hits.append((k, *got))
                    last = k
                    seen += 1
                    if seen == CHUNK:
                        break
            if hits:
                yield hits
            if seen < CHUNK:
                return
            lo, inclusive = last, False

    def range(
        self, key: bytes, end: bytes | None, at: int, limit: int = 0, count: bool = True
    ) -> tuple[list[Hit], int]:
        """Keys alive at ``at`` in the range, in key order: up to ``limit`` hits (0: all)
        and the total number alive; without ``count`` the scan stops at ``limit`` and the
        total is 0 (a streamed range's later pages: counting the rest made each page cost
        the whole remaining range)."""
        if end is None:
            got = self.get(key, at)
            return ([(key, *got)], 1 if count else 0) if got is not None else ([], 0)
        hits: list[Hit] = []
        total = 0
        for chunk in self._scan(key, end, at):
            total += len(chunk)
            if not limit:
                hits.extend(chunk)
            elif len(hits) < limit:
                hits.extend(chunk[: limit - len(hits)])
            elif not count:
                break
        return hits, total if count else 0

    def count(self, key: bytes, end: bytes | None, at: int) -> int:
        if end is None:
            return 0 if self.get(key, at) is None else 1
        return sum(len(chunk) for chunk in self._scan(key, end, at))

    def keys_alive(self, at: int) -> Iterator[tuple[bytes, int]]:
        """Every key alive at ``at`` with its visible revision, in key order."""
        for chunk in self._scan(b"", b"", at):
            for k, modified, _created, _version in chunk:
                yield k, modified
