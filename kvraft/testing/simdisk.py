"""``SimDisk``: a ``WritableLogStorage`` that forgets what was not fsynced, as LazyFS does.

It wraps a storage (``MemoryLogStorage`` by default) and keeps two images of it:

- the **live** image, which every write changes at once and every read sees (the page
  cache: what the running process observes);
- the **durable** image, which changes only at ``sync()``, by replaying the journal of
  writes made since the previous sync, in order.

``crash()`` throws the live image away and restarts from the durable one. With
``torn=True`` a random prefix of the un-synced journal survives, the last surviving append
possibly cut short after some of its entries: what a disk that writes in order (a WAL with
per-record checksums) may leave behind after power loss. Nothing that was synced is ever
lost, and no later write survives without the earlier ones.

The wrapped storage must keep its state in attributes holding immutable values or
lists/dicts/sets of immutable values (true of ``MemoryLogStorage``): images are cloned by
copying those containers.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from typing import Any

from kvraft.raft.memory_storage import MemoryLogStorage
from kvraft.raft.storage import WritableLogStorage
from kvraft.raft.types import ConfState, Entry, HardState, Snapshot
from kvraft.testing.buggify import buggify

__all__ = ["SimDisk", "clone_storage"]


def clone_storage(storage: Any) -> Any:
    """A copy of ``storage`` that shares its immutable values but none of its containers."""
    twin = copy.copy(storage)
    for name, value in vars(twin).items():
        if isinstance(value, list | dict | set):
            setattr(twin, name, copy.copy(value))
    return twin


class SimDisk:
    """A ``WritableLogStorage`` with a volatile cache. Reads and writes as the wrapped
    storage; ``sync()`` makes writes durable; ``crash()`` loses the rest."""

    def __init__(
        self,
        storage: WritableLogStorage | None = None,
        clone: Callable[[Any], Any] = clone_storage,
    ) -> None:
        self._clone = clone
        self._live: WritableLogStorage = storage if storage is not None else MemoryLogStorage()
        self._durable: WritableLogStorage = clone(self._live)
        self._journal: list[tuple[str, tuple[Any, ...]]] = []
        self.syncs = 0
        self.writes = 0
        self.crashes = 0
        self.lost_writes = 0

    # -- read side: the live image -------------------------------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self._live.initial_state()

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        return self._live.entries(lo, hi, max_bytes)

    def term(self, index: int) -> int:
        return self._live.term(index)

    def first_index(self) -> int:
        return self._live.first_index()

    def last_index(self) -> int:
        return self._live.last_index()

    def snapshot(self) -> Snapshot:
        return self._live.snapshot()

    # -- write side: live now, durable at sync -----------------------------------------

    def append(self, entries: list[Entry]) -> None:
        if not entries:
            return
        entries = list(entries)
        self._live.append(entries)
        self._log("append", entries)

    def set_hard_state(self, hard_state: HardState) -> None:
        self._live.set_hard_state(hard_state)
        self._log("set_hard_state", hard_state)

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        self._live.apply_snapshot(snapshot)  # raises before journaling when out of date
        self._log("apply_snapshot", snapshot)

    def create_snapshot(self, index: int, conf_state: ConfState, data: bytes) -> Snapshot:
        snap = self._live.create_snapshot(index, conf_state, data)
        self._log("create_snapshot", index, conf_state, data)
        return snap

    def compact(self, compact_index: int) -> None:
        self._live.compact(compact_index)
        self._log("compact", compact_index)

    def sync(self) -> None:
        """Make every write so far durable."""
        self._replay(self._journal)
        self._journal = []
        self.syncs += 1

    def _log(self, op: str, *args: Any) -> None:
        self.writes += 1
        self._journal.append((op, args))
        if buggify("simdisk.eager_writeback", 0.05):
            # the OS may write dirty pages back at any time, in order: a sync nobody asked for
            self.sync()

    def _replay(self, ops: list[tuple[str, tuple[Any, ...]]]) -> None:
        durable = self._durable
        for op, args in ops:
            getattr(durable, op)(*args)

    # -- faults --------------------------------------------------------------------------

    @property
    def unsynced_writes(self) -> int:
        return len(self._journal)

    @property
    def durable(self) -> WritableLogStorage:
        """The image a crash would leave (do not write to it)."""
        return self._durable

    def crash(self, rng: random.Random | None = None, torn: bool = False) -> int:
        """Lose every write not synced (with ``torn``, all but a random prefix of them) and
        restart from the durable image. Returns how many writes were lost."""
        journal, self._journal = self._journal, []
        keep = 0
        if torn and rng is not None and journal:
            keep = rng.randint(0, len(journal))
            survivors = journal[:keep]
            if keep < len(journal):
                op, args = journal[keep]
                if op == "append" and len(args[0]) > 1:
                    # the next append tore: some of its entries made it
                    cut = rng.randint(0, len(args[0]) - 1)
                    if cut:
                        survivors = [*survivors, ("append", (args[0][:cut],))]
            self._replay(survivors)
        lost = len(journal) - keep
        self._live = self._durable
        self._durable = self._clone(self._live)
        self.crashes += 1
        self.lost_writes += lost
        return lost
