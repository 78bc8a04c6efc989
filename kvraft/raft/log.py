"""``RaftLog``: the log as the core sees it — the durable part in ``LogStorage`` plus the
``Unstable`` tail not yet persisted — and the commit and applied indexes.

Invariants (asserted): ``applied <= committed <= last_index()``; ``committed`` never
decreases; entries at or below ``committed`` are never replaced.

``persisted_last_index()`` is the last index known to be durable. It bounds two things
that must wait for the disk: entries handed out for applying (``next_committed_entries``),
and the leader's own match index (see ``core.Raft.advance``).
"""

from __future__ import annotations

from kvraft.raft.log_unstable import Unstable
from kvraft.raft.memory_storage import limit_size
from kvraft.raft.storage import CompactedError, LogStorage, UnavailableError
from kvraft.raft.types import Entry, Snapshot

__all__ = ["RaftLog"]


class RaftLog:
    def __init__(self, storage: LogStorage) -> None:
        self.storage = storage
        self.unstable = Unstable(storage.last_index() + 1)
        self.committed = storage.first_index() - 1
        self.applied = storage.first_index() - 1

    # -- indexes and terms ------------------------------------------------------------

    def first_index(self) -> int:
        first = self.unstable.maybe_first_index()
        return first if first is not None else self.storage.first_index()

    def last_index(self) -> int:
        last = self.unstable.maybe_last_index()
        return last if last is not None else self.storage.last_index()

    def persisted_last_index(self) -> int:
        """The last index whose entry is durable and still part of this log. While a
        snapshot is pending nothing after the old log is known durable: 0 (a safe floor)."""
        if self.unstable.snapshot is not None:
            return 0
        return self.unstable.offset - 1

    def term(self, index: int) -> int:
        """Term at ``index``; raises CompactedError below ``first_index() - 1`` and
        UnavailableError above ``last_index()``."""
        dummy = self.first_index() - 1
        if index < dummy:
            raise CompactedError(f"term of {index}: compacted up to {dummy}")
        if index > self.last_index():
            raise UnavailableError(f"term of {index}: last index is {self.last_index()}")
        term = self.unstable.maybe_term(index)
        if term is not None:
            return term
        return self.storage.term(index)

    def term_or_zero(self, index: int) -> int:
        try:
            return self.term(index)
        except (CompactedError, UnavailableError):
            return 0

    def last_term(self) -> int:
        return self.term(self.last_index())

    def match_term(self, index: int, term: int) -> bool:
        try:
            return self.term(index) == term
        except (CompactedError, UnavailableError):
            return False

    def is_up_to_date(self, index: int, term: int) -> bool:
        """Is a log ending at (index, term) at least as up to date as this one (§5.4.1)?"""
        last_term = self.last_term()
        return term > last_term or (term == last_term and index >= self.last_index())

    # -- reading entries --------------------------------------------------------------

    def slice(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries ``[lo, hi)``, at least one if the range is not empty, else at most
        ``max_bytes``. Raises CompactedError if ``lo < first_index()``."""
        if lo < self.first_index():
            raise CompactedError(f"entries from {lo}: first index is {self.first_index()}")
        assert hi <= self.last_index() + 1, f"slice to {hi} beyond last index {self.last_index()}"
        if lo >= hi:
            return []
        out: list[Entry] = []
        offset = self.unstable.offset
        if lo < offset:
            upper = min(hi, offset)
            out = self.storage.entries(lo, upper, max_bytes)
            if len(out) < upper - lo:
                return out  # cut short by max_bytes
        if hi > offset:
            out = out + self.unstable.slice(max(lo, offset), hi)
        return limit_size(out, max_bytes)

    def entries_from(self, lo: int, max_bytes: int | None = None) -> list[Entry]:
        if lo > self.last_index():
            return []
        return self.slice(lo, self.last_index() + 1, max_bytes)

    def unstable_entries(self) -> list[Entry]:
        return list(self.unstable.entries)

    def snapshot(self) -> Snapshot:
        if self.unstable.snapshot is not None:
            return self.unstable.snapshot
        return self.storage.snapshot()

    def next_committed_entries(self) -> list[Entry]:
        """Committed, durable entries not yet handed out for applying."""
        if self.unstable.snapshot is not None:
            return []  # the snapshot is applied first
        lo = max(self.applied + 1, self.first_index())
        hi = min(self.committed, self.persisted_last_index()) + 1
        if lo >= hi:
            return []
        return self.slice(lo, hi)

    def has_next_committed_entries(self) -> bool:
        if self.unstable.snapshot is not None:
            return False
        lo = max(self.applied + 1, self.first_index())
        return lo <= min(self.committed, self.persisted_last_index())

    # -- changing the log -------------------------------------------------------------

    def find_conflict(self, entries: tuple[Entry, ...] | list[Entry]) -> int:
        """Index of the first entry whose term differs from ours (or that we lack);
        0 when every entry is already in the log."""
        last = self.last_index()
        for entry in entries:
            if entry.index > last:  # (we lack it: no term lookup, which would raise)
                return entry.index
            if not self.match_term(entry.index, entry.term):
                return entry.index
        return 0

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """The largest ``i <= index`` whose term is ``<= term``, and that term. Used for
        fast backtracking: every entry between ``i`` and ``index`` has a higher term than
        ``term``, so none can match a log whose entry at ``index`` has term ``term``."""
        while index > 0:
            try:
                t = self.term(index)
            except (CompactedError, UnavailableError):
                return index, 0
            if t <= term:
                return index, t
            index -= 1
        return 0, 0

    def append(self, entries: list[Entry]) -> int:
        if not entries:
            return self.last_index()
        after = entries[0].index - 1
        assert after >= self.committed, (
            f"append after {after} would overwrite committed {self.committed}"
        )
        self.unstable.truncate_and_append(entries)
        return self.last_index()

    def maybe_append(
        self, index: int, log_term: int, committed: int, entries: tuple[Entry, ...]
    ) -> int | None:
        """Follower side of AppendEntries. If our entry at ``index`` has ``log_term``,
        append what is new in ``entries`` (truncating only at a real conflict, never on a
        stale or duplicate message), advance the commit index and return the index of the
        last entry the message vouches for. Otherwise None (reject)."""
        if not self.match_term(index, log_term):
            return None
        last_new = index + len(entries)
        conflict = self.find_conflict(entries)
        if conflict:
            assert conflict > self.committed, (
                f"conflict at {conflict} <= committed {self.committed}"
            )
            self.append(list(entries[conflict - index - 1 :]))
        self.commit_to(min(committed, last_new))
        return last_new

    def commit_to(self, index: int) -> None:
        if index > self.committed:
            assert index <= self.last_index(), (
                f"commit {index} beyond last index {self.last_index()}"
            )
            self.committed = index

    def maybe_commit(self, index: int, term: int) -> bool:
        """Commit up to ``index`` if the entry there is from ``term`` (the leader's current
        term: the Figure 8 rule, §5.4.2)."""
        if index > self.committed and self.term_or_zero(index) == term:
            self.commit_to(index)
            return True
        return False

    def applied_to(self, index: int) -> None:
        assert self.applied <= index <= self.committed, (
            f"applied {index} out of range [{self.applied}, {self.committed}]"
        )
        self.applied = index

    def stable_to(self, index: int, term: int) -> None:
        self.unstable.stable_to(index, term)

    def stable_snap_to(self, index: int) -> None:
        self.unstable.stable_snap_to(index)

    def restore(self, snapshot: Snapshot) -> None:
        assert snapshot.metadata.index > self.committed
        self.committed = snapshot.metadata.index
        self.unstable.restore(snapshot)
