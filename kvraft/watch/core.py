"""The watch core: watcher groups and the decisions of etcd's ``watchableStore``, as values.

A watcher is in exactly one of three places:

- **synced**: it has seen every revision up to the store's; new revisions go straight to
  it (``on_revision``).
- **unsynced**: it must catch up from history first (it asked for an old
  ``start_revision``, or it fell behind). ``sync_plan``/``sync_done`` move a bounded number
  of them per pass; one that wants a compacted revision is cancelled with
  ``compact_revision``.
- **victim**: its stream's queue was full when a batch was due. It holds that batch until
  the stream takes it (``victim_done``), then goes to unsynced (or synced if nothing
  happened meanwhile). A slow stream never blocks the caller of ``on_revision``.

Each watcher keeps ``next_rev``, the first revision it has not been given. Deliveries skip
revisions below it (no duplicates) and a watcher only leaves unsynced once history up to
the current revision has been handed over (no gaps). Every response holds whole
revisions, or is a ``fragment`` of one response (atomic per revision).

PURE: no I/O, no clock. The hub (``kvraft.watch.hub``) does the async fan-out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from kvraft.watch.interval import IntervalIndex
from kvraft.watch.types import (
    NO_DELETE,
    NO_PUT,
    EventType,
    RevisionEvents,
    WatchCreate,
    WatchEvent,
    WatchResponse,
)

__all__ = ["WatchCore", "Watcher", "WatcherGroup", "fragment_events", "responses_for"]

MAX_EVENTS_PER_CATCHUP_RESPONSE = 1000
"""Catch-up responses are cut at revision boundaries once they hold this many events."""


@dataclass(eq=False, slots=True)
class Watcher:
    """One watch. Identity (not value) equality: a watcher is a handle."""

    stream_id: int
    watch_id: int
    key: bytes
    end: bytes | None
    """Exclusive end; None = unbounded; equal to key + b"\\0" for a single-key watch."""
    next_rev: int
    prev_kv: bool = False
    no_put: bool = False
    no_delete: bool = False
    progress_notify: bool = False
    fragment: bool = False
    single: bool = False
    pending: list[WatchResponse] = field(default_factory=list)
    """A victim's undelivered responses."""

    @classmethod
    def from_request(cls, stream_id: int, watch_id: int, req: WatchCreate, next_rev: int) -> Watcher:
        if req.range_end == b"":
            end: bytes | None = req.key + b"\0"
        elif req.range_end == b"\0":
            end = None
        else:
            end = req.range_end
        return cls(
            stream_id=stream_id,
            watch_id=watch_id,
            key=req.key,
            end=end,
            next_rev=next_rev,
            prev_kv=req.prev_kv,
            no_put=NO_PUT in req.filters,
            no_delete=NO_DELETE in req.filters,
            progress_notify=req.progress_notify,
            fragment=req.fragment,
            single=req.range_end == b"",
        )

    def holds(self, key: bytes) -> bool:
        return self.key <= key and (self.end is None or key < self.end)

    def wants(self, event: WatchEvent) -> bool:
        if event.type == EventType.PUT:
            return not self.no_put
        return not self.no_delete

    def shape(self, event: WatchEvent) -> WatchEvent:
        if self.prev_kv or event.prev_kv is None:
            return event
        return WatchEvent(event.type, event.kv, None)


class WatcherGroup:
    """Watchers indexed by key: a dict for single keys, an ``IntervalIndex`` for ranges."""

    __slots__ = ("_keys", "_ranges", "_size")

    def __init__(self) -> None:
        self._keys: dict[bytes, set[Watcher]] = {}
        self._ranges: IntervalIndex[Watcher] = IntervalIndex()
        self._size = 0

    def add(self, w: Watcher) -> None:
        if w.single:
            self._keys.setdefault(w.key, set()).add(w)
        else:
            self._ranges.add(w.key, w.end, w)
        self._size += 1

    def remove(self, w: Watcher) -> bool:
        if w.single:
            bucket = self._keys.get(w.key)
            if bucket is None or w not in bucket:
                return False
            bucket.discard(w)
            if not bucket:
                del self._keys[w.key]
        else:
            if w not in self._ranges:
                return False
            self._ranges.remove(w)
        self._size -= 1
        return True

    def __contains__(self, w: object) -> bool:
        if not isinstance(w, Watcher):
            return False
        return w in self._keys.get(w.key, ()) if w.single else w in self._ranges

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[Watcher]:
        for bucket in self._keys.values():
            yield from bucket
        yield from self._ranges

    def matching(self, key: bytes) -> Iterable[Watcher]:
        yield from self._keys.get(key, ())
        if len(self._ranges):
            yield from self._ranges.stab(key)


def fragment_events(
    events: tuple[WatchEvent, ...], limit_bytes: int, size_of: Callable[[WatchEvent], int]
) -> list[tuple[WatchEvent, ...]]:
    """Split ``events`` into pieces of at most ``limit_bytes`` (a single larger event is a
    piece of its own). One piece if everything fits."""
    pieces: list[tuple[WatchEvent, ...]] = []
    current: list[WatchEvent] = []
    used = 0
    for ev in events:
        size = size_of(ev)
        if current and used + size > limit_bytes:
            pieces.append(tuple(current))
            current, used = [], 0
        current.append(ev)
        used += size
    if current or not pieces:
        pieces.append(tuple(current))
    return pieces


def responses_for(
    w: Watcher, batches: Iterable[RevisionEvents], header_revision: int, max_events: int
) -> tuple[list[WatchResponse], int]:
    """Responses carrying the events of ``batches`` that ``w`` wants, from ``w.next_rev``
    on, cut only between revisions. Returns them and the last revision covered (0 if no
    batch was at or past ``next_rev``)."""
    out: list[WatchResponse] = []
    current: list[WatchEvent] = []
    last = 0
    for batch in batches:
        if batch.revision < w.next_rev:
            continue
        last = batch.revision
        if len(current) >= max_events:
            out.append(WatchResponse(w.watch_id, header_revision, tuple(current)))
            current = []
        for ev in batch.events:
            if w.holds(ev.kv.key) and w.wants(ev):
                current.append(w.shape(ev))
    if current:
        out.append(WatchResponse(w.watch_id, header_revision, tuple(current)))
    return out, last


def reads_prev(event: WatchEvent) -> bool:
    """Whether etcd reads ``event``'s previous value for a prev_kv watcher: not for a put
    that created its key (etcd's ``IsCreateEvent``)."""
    return event.type == EventType.DELETE or event.kv.create_revision != event.kv.mod_revision


class WatchCore:
    """Synced / unsynced / victim bookkeeping for every watcher of one member."""

    def __init__(self, current_revision: int, compact_revision: int = 0) -> None:
        self.current_revision = current_revision
        self.compact_revision = compact_revision
        self.synced = WatcherGroup()
        self.unsynced = WatcherGroup()
        self.victims: list[Watcher] = []
        self.victims_total = 0
        """How many times a watcher became a victim (a stream's queue was full)."""
        self.prev_kv_reads = 0
        """Events shaped for prev_kv watchers that etcd reads the previous value of (a delete,
        a put that did not create its key): etcd counts each read as an MVCC range."""

    # -- membership -----------------------------------------------------------------------
    def add(self, w: Watcher) -> None:
        """Place a new watcher. ``next_rev`` 0 (or past the store) means "from now on". A
        negative one is below every revision, as etcd reads it: "from now on" while nothing
        was compacted, else cancelled as compacted by the next sync pass (etcd compares it
        with its compacted revision, -1 until a compaction)."""
        if w.next_rev < 0 and self.compact_revision > 0:
            self.unsynced.add(w)
        elif w.next_rev <= 0 or w.next_rev > self.current_revision:
            w.next_rev = max(w.next_rev, self.current_revision + 1)
            self.synced.add(w)
        else:
            self.unsynced.add(w)

    def cancel(self, w: Watcher) -> bool:
        if self.synced.remove(w) or self.unsynced.remove(w):
            return True
        if w in self.victims:
            self.victims.remove(w)
            return True
        return False

    def is_synced(self, w: Watcher) -> bool:
        return w in self.synced

    def __len__(self) -> int:
        return len(self.synced) + len(self.unsynced) + len(self.victims)

    # -- new revisions --------------------------------------------------------------------
    def on_revision(self, batch: RevisionEvents) -> dict[Watcher, list[WatchEvent]]:
        """Record ``batch`` as the newest revision and return, for each synced watcher it
        concerns, the (filtered, shaped) events to deliver. The caller delivers each list
        as one response with header revision ``batch.revision`` and then calls
        ``delivered`` or ``make_victim``."""
        if batch.revision <= self.current_revision:
            raise ValueError(f"revision {batch.revision} after {self.current_revision}")
        self.current_revision = batch.revision
        out: dict[Watcher, list[WatchEvent]] = {}
        for ev in batch.events:
            for w in self.synced.matching(ev.kv.key):
                if w.next_rev <= batch.revision and w.wants(ev):
                    out.setdefault(w, []).append(w.shape(ev))
                    if w.prev_kv and reads_prev(ev):
                        self.prev_kv_reads += 1
        return out

    def delivered(self, w: Watcher, revision: int) -> None:
        w.next_rev = revision + 1

    def make_victim(self, w: Watcher, responses: list[WatchResponse], revision: int) -> None:
        """``w``'s stream could not take ``responses`` (covering up to ``revision``): park it."""
        self.synced.remove(w) or self.unsynced.remove(w)
        w.pending = list(responses)
        w.next_rev = revision + 1
        self.victims.append(w)
        self.victims_total += 1

    def victim_done(self, w: Watcher) -> None:
        """The stream took ``w.pending``: back to synced, or unsynced if it missed revisions."""
        self.victims.remove(w)
        w.pending = []
        if w.next_rev > self.current_revision:
            self.synced.add(w)
        else:
            self.unsynced.add(w)

    # -- catching up ------------------------------------------------------------------------
    def compact(self, revision: int) -> None:
        self.compact_revision = max(self.compact_revision, revision)

    def sync_plan(self, max_watchers: int) -> tuple[list[Watcher], list[Watcher], int]:
        """Pick up to ``max_watchers`` unsynced watchers. Returns (to catch up, compacted,
        lowest revision to read). Compacted watchers are removed here: answer each with
        ``compacted_response``."""
        chosen: list[Watcher] = []
        compacted: list[Watcher] = []
        for w in self.unsynced:
            if len(chosen) + len(compacted) >= max_watchers:
                break
            (compacted if w.next_rev < self.compact_revision else chosen).append(w)
        for w in compacted:
            self.unsynced.remove(w)
        low = min((w.next_rev for w in chosen), default=0)
        return chosen, compacted, low

    def compacted_response(self, w: Watcher) -> WatchResponse:
        return WatchResponse(w.watch_id, 0, canceled=True, compact_revision=self.compact_revision)

    def catch_up(
        self, w: Watcher, batches: list[RevisionEvents], max_events: int = MAX_EVENTS_PER_CATCHUP_RESPONSE
    ) -> list[WatchResponse]:
        """Responses bringing ``w`` from ``next_rev`` to the current revision; ``batches``
        must hold every revision in between that has events for anyone."""
        responses, _ = responses_for(w, batches, self.current_revision, max_events)
        if w.prev_kv:
            self.prev_kv_reads += sum(reads_prev(ev) for r in responses for ev in r.events)
        return responses

    def sync_done(self, w: Watcher) -> None:
        """``w`` received its catch-up responses: it is synced with the current revision."""
        if self.unsynced.remove(w):
            w.next_rev = self.current_revision + 1
            self.synced.add(w)
