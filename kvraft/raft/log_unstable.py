"""The unstable part of the Raft log: entries (and at most one snapshot) that the core has
accepted but the driver has not yet reported persisted through ``advance()``.

Worked example::

    storage holds 1..10, unstable = {offset: 11, entries: []}
    leader appends 11, 12            -> entries [11, 12], offset 11
    a new leader overwrites from 12  -> entries [11, 12'], offset 11
    a new leader overwrites from 9   -> entries [9'], offset 9 (storage's 9..10 are stale
                                        and will be truncated when 9' is appended there)
    advance() after 9' is persisted  -> entries [], offset 10

``offset`` is always the index of ``entries[0]`` (or where it would go), and equals
``snapshot.metadata.index + 1`` while a snapshot is pending.
"""

from __future__ import annotations

from kvraft.raft.types import Entry, Snapshot

__all__ = ["Unstable"]


class Unstable:
    def __init__(self, offset: int) -> None:
        self.snapshot: Snapshot | None = None
        self.entries: list[Entry] = []
        self.offset = offset

    def maybe_first_index(self) -> int | None:
        """The first log index if a pending snapshot defines it."""
        if self.snapshot is not None:
            return self.snapshot.metadata.index + 1
        return None

    def maybe_last_index(self) -> int | None:
        if self.entries:
            return self.offset + len(self.entries) - 1
        if self.snapshot is not None:
            return self.snapshot.metadata.index
        return None

    def maybe_term(self, index: int) -> int | None:
        if index < self.offset:
            if self.snapshot is not None and self.snapshot.metadata.index == index:
                return self.snapshot.metadata.term
            return None
        last = self.maybe_last_index()
        if last is None or index > last:
            return None
        return self.entries[index - self.offset].term

    def stable_to(self, index: int, term: int) -> None:
        """Entries up to ``index`` (whose term was ``term`` when handed out) are persisted.
        Ignored when that entry has since been replaced (the term no longer matches)."""
        if index < self.offset or self.maybe_term(index) != term:
            return
        del self.entries[: index + 1 - self.offset]
        self.offset = index + 1

    def stable_snap_to(self, index: int) -> None:
        if self.snapshot is not None and self.snapshot.metadata.index == index:
            self.snapshot = None

    def restore(self, snapshot: Snapshot) -> None:
        self.offset = snapshot.metadata.index + 1
        self.entries = []
        self.snapshot = snapshot

    def truncate_and_append(self, entries: list[Entry]) -> None:
        after = entries[0].index
        if after == self.offset + len(self.entries):
            self.entries.extend(entries)
        elif after <= self.offset:
            # Replaces everything unstable (and, logically, stored entries from ``after``).
            self.offset = after
            self.entries = list(entries)
        else:
            del self.entries[after - self.offset :]
            self.entries.extend(entries)

    def slice(self, lo: int, hi: int) -> list[Entry]:
        """Entries ``[lo, hi)``; the range must lie within the unstable entries."""
        upper = self.offset + len(self.entries)
        assert self.offset <= lo <= hi <= upper, (
            f"unstable slice [{lo}, {hi}) out of [{self.offset}, {upper})"
        )
        return self.entries[lo - self.offset : hi - self.offset]
