"""``CompactionGate``: readers in, compaction waits (a writer-preferring RW lock).

Read views hold the gate shared for their lifetime; the compaction of the key index
(and the move of the compaction point) holds it exclusively. So a read that began at a
revision that was valid never fails half-way with "compacted" because a compaction ran
meanwhile: the compaction waits for it (etcd holds its store lock the same way). Once a
compaction is waiting, new readers queue behind it, so it is never starved; a thread that
already holds the gate shared may take it again (nested views never deadlock).

Rules: never start a compaction while holding a read view on the same thread; never
write while holding a read view (the compaction may hold the writer and wait for you).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["CompactionGate"]


class CompactionGate:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._readers = 0
        self._exclusive = False
        self._waiting = 0
        self._mine = threading.local()

    @property
    def readers(self) -> int:
        """Read views open now (etcd's ``etcd_mvcc_db_open_read_transactions``)."""
        return self._readers

    def acquire_shared(self) -> None:
        mine = self._mine
        depth = getattr(mine, "depth", 0)
        if depth == 0:
            with self._lock:  # (the condition's lock, taken without its Python wrapper)
                while self._exclusive or self._waiting:
                    self._cond.wait()
                self._readers += 1
        mine.depth = depth + 1

    def release_shared(self) -> None:
        mine = self._mine
        depth = mine.depth = mine.depth - 1
        if depth == 0:
            with self._lock:
                self._readers -= 1
                if self._readers == 0 and self._waiting:  # only a compaction waits on readers
                    self._cond.notify_all()

    @contextmanager
    def shared(self) -> Iterator[None]:
        self.acquire_shared()
        try:
            yield
        finally:
            self.release_shared()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._waiting += 1
            while self._exclusive or self._readers:
                self._cond.wait()
            self._waiting -= 1
            self._exclusive = True
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()
