"""An in-memory MVCC history for watch tests: puts and deletes with prev_kv and compaction."""

from __future__ import annotations

from dataclasses import dataclass

from kvraft.watch import EventType, RevisionEvents, WatchEvent


@dataclass(frozen=True)
class KV:
    key: bytes
    create_revision: int = 0
    mod_revision: int = 0
    version: int = 0
    value: bytes = b""
    lease: int = 0


class FakeHistory:
    def __init__(self) -> None:
        self.revision = 1
        self.compacted = 0
        self.live: dict[bytes, KV] = {}
        self.batches: list[RevisionEvents] = []

    def write(self, ops: list[tuple[str, bytes, bytes]]) -> RevisionEvents:
        """One revision: ops are ("put", key, value) or ("del", key, b"")."""
        rev = self.revision + 1
        events = []
        seen: set[bytes] = set()
        for op, key, value in ops:
            if key in seen:  # a txn may not write one key twice
                continue
            seen.add(key)
            prev = self.live.get(key)
            if op == "put":
                kv = KV(key, prev.create_revision if prev else rev, rev, (prev.version if prev else 0) + 1, value)
                self.live[key] = kv
                events.append(WatchEvent(EventType.PUT, kv, prev))
            elif prev is not None:
                del self.live[key]
                events.append(WatchEvent(EventType.DELETE, KV(key, mod_revision=rev), prev))
        batch = RevisionEvents(rev, tuple(events))
        if events:
            self.revision = rev
            self.batches.append(batch)
        return batch

    def compact(self, revision: int) -> None:
        self.compacted = max(self.compacted, revision)

    def compact_revision(self) -> int:
        return self.compacted

    def history(self, min_revision: int, max_revision: int) -> list[RevisionEvents]:
        assert min_revision >= self.compacted, (min_revision, self.compacted)
        return [b for b in self.batches if min_revision <= b.revision <= max_revision]
