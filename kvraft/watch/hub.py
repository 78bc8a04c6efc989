"""The watch hub: async fan-out of new revisions to watch streams, and catch-up from history.

Threading: everything runs on the member's event loop. ``notify`` is called by the apply
stage after each revision is applied and never awaits or blocks: a stream whose bounded
queue is full turns the watcher into a victim (``WatchCore``), and the hub's sync task
later hands the victim its batch and catches it up from MVCC history. Other watchers and
the apply loop never wait for a slow reader.

Ordering: each stream has one queue. Control responses (created, canceled, progress) are
always admitted; event responses count against ``queue_len_max``. A response batch is
admitted whole or not at all, so a revision is never half-queued.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from kvraft.aio import cancel_and_wait, wait_event
from kvraft.watch.core import WatchCore, Watcher, fragment_events
from kvraft.watch.types import (
    PROGRESS_WATCH_ID,
    RevisionEvents,
    WatchCreate,
    WatchEvent,
    WatchResponse,
)

__all__ = ["HistoryReader", "HubStats", "WatchHub", "WatchStream"]

log = logging.getLogger("kvraft.watch")

DUPLICATE_ID_REASON = "mvcc: duplicate watch ID provided on the WatchStream"
EMPTY_RANGE_REASON = "mvcc: watcher range is empty"


class HistoryReader(Protocol):
    """MVCC history for catch-up. ``history(lo, hi)`` returns, ascending, every revision in
    ``[lo, hi]`` that has events (prev_kv filled for events that had a previous value).
    It raises ``kvraft.storage`` compaction errors only if ``lo`` is compacted; callers
    check ``compact_revision`` first."""

    def history(self, min_revision: int, max_revision: int) -> list[RevisionEvents]: ...

    def compact_revision(self) -> int: ...


def event_size(ev: WatchEvent) -> int:
    size = 64 + len(ev.kv.key) + len(getattr(ev.kv, "value", b""))
    if ev.prev_kv is not None:
        size += 48 + len(ev.prev_kv.key) + len(ev.prev_kv.value)
    return size


@dataclass(frozen=True, slots=True)
class HubStats:
    streams: int
    synced: int
    unsynced: int
    victims: int
    victims_total: int
    current_revision: int
    responses_sent: int
    prev_kv_reads: int = 0
    events_sent: int = 0
    events_pending: int = 0


class WatchStream:
    """One client stream (one HTTP request or WebSocket). Create with ``WatchHub.open``."""

    def __init__(self, hub: WatchHub, stream_id: int, queue_len_max: int) -> None:
        self.hub = hub
        self.stream_id = stream_id
        self.queue_len_max = queue_len_max
        self.watchers: dict[int, Watcher] = {}
        self._queue: deque[tuple[WatchResponse, bool]] = deque()
        self._events_queued = 0
        self.events_in_queue = 0
        """Events in the queued responses (etcd_debugging_mvcc_pending_events_total)."""
        self._ready = asyncio.Event()
        self._next_id = 0
        self.progress_pending = False
        self.closed = False

    # -- requests -------------------------------------------------------------------------
    def create(self, req: WatchCreate) -> int:
        """Register a watch; its ``created`` response is queued before any of its events."""
        core = self.hub.core
        watch_id = req.watch_id
        refused = ""
        key = req.key or b"\0"  # etcd: the empty key is the smallest key
        if req.range_end not in (b"", b"\0") and key >= req.range_end:
            refused = EMPTY_RANGE_REASON
        elif watch_id != 0 and watch_id in self.watchers:
            refused = DUPLICATE_ID_REASON
        if refused:
            # etcd answers a refused create with watch id -1, whatever id was asked for
            self.put_control(
                WatchResponse(PROGRESS_WATCH_ID, core.current_revision, created=True, canceled=True,
                              cancel_reason=refused)
            )
            return PROGRESS_WATCH_ID
        if watch_id == 0:  # etcd's AutoWatchID; any other id, negative too, is the client's
            while self._next_id in self.watchers:
                self._next_id += 1
            watch_id = self._next_id
            self._next_id += 1
        w = Watcher.from_request(self.stream_id, watch_id, req, req.start_revision)
        self.watchers[watch_id] = w
        self.hub.prev_kv_watchers += w.prev_kv
        self.put_control(WatchResponse(watch_id, core.current_revision, created=True))
        core.add(w)
        if not core.is_synced(w):
            self.hub.wake()
        return watch_id

    def cancel(self, watch_id: int) -> bool:
        w = self.watchers.pop(watch_id, None)
        if w is None:
            return False
        self.hub.prev_kv_watchers -= w.prev_kv
        self.hub.core.cancel(w)
        self.put_control(WatchResponse(watch_id, self.hub.core.current_revision, canceled=True))
        return True

    def request_progress(self) -> None:
        """Stream-wide progress (watch_id -1), sent once every watcher here is synced."""
        self.progress_pending = True
        self.hub.try_progress(self)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for w in self.watchers.values():
            self.hub.core.cancel(w)
            self.hub.prev_kv_watchers -= w.prev_kv
        self.watchers.clear()
        self.hub.streams.pop(self.stream_id, None)
        self._ready.set()

    # -- queue ----------------------------------------------------------------------------
    def put_control(self, response: WatchResponse) -> None:
        self._queue.append((response, False))
        self._ready.set()

    def offer(self, responses: list[WatchResponse]) -> bool:
        """Queue event responses whole, or refuse them all if the queue is full."""
        if self.closed:
            return True  # nobody will read them; the watcher is gone with the stream
        if self._events_queued and self._events_queued + len(responses) > self.queue_len_max:
            return False
        for r in responses:
            self._queue.append((r, True))
            self.events_in_queue += len(r.events)
        self._events_queued += len(responses)
        self._ready.set()
        return True

    def queued(self) -> int:
        return len(self._queue)

    async def recv(self) -> WatchResponse | None:
        """The next response, or None once the stream is closed."""
        while not self._queue:
            if self.closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        return self.recv_nowait()

    async def wait_ready(self) -> None:
        """Return once a response is queued or the stream closed (consumes nothing, so it
        is safe to cancel, e.g. under ``asyncio.wait_for``)."""
        while not self._queue and not self.closed:
            self._ready.clear()
            await self._ready.wait()

    async def wait_ready_for(self, timeout_s: float) -> bool:
        """``wait_ready`` for at most ``timeout_s``; True if a response is queued or the
        stream closed. A timer sets the stream's own event: no task, timeout future or
        cancellation per wait as ``asyncio.wait_for`` makes (a leader whose 5,000 idle
        watch streams each waited a second at a time spent ~10% of its CPU in that
        machinery, cluster-load profile)."""
        if not self._queue and not self.closed:
            self._ready.clear()
            timer = asyncio.get_running_loop().call_later(timeout_s, self._ready.set)
            try:
                await self._ready.wait()
            finally:
                timer.cancel()
        return bool(self._queue) or self.closed

    def recv_nowait(self) -> WatchResponse | None:
        """The next queued response, or None if nothing is queued."""
        if not self._queue:
            return None
        response, counted = self._queue.popleft()
        if counted:
            self._events_queued -= 1
            self.events_in_queue -= len(response.events)
            self.hub.events_sent += len(response.events)
            if self._events_queued < self.queue_len_max // 2 and self.hub.core.victims:
                self.hub.wake()
        self.hub.responses_sent += 1
        return response


class WatchHub:
    """Fan-out of applied revisions to every stream of this member."""

    def __init__(
        self,
        history: HistoryReader,
        current_revision: int,
        compact_revision: int = 0,
        *,
        queue_len_max: int = 128,
        sync_interval_s: float = 0.1,
        progress_interval_s: float = 600.0,
        max_watchers_per_sync: int = 512,
        fragment_bytes: int = 1536 * 1024,
        size_of: Callable[[WatchEvent], int] = event_size,
    ) -> None:
        self.history = history
        self.core = WatchCore(current_revision, compact_revision)
        self.queue_len_max = queue_len_max
        self.sync_interval_s = sync_interval_s
        self.progress_interval_s = progress_interval_s
        self.max_watchers_per_sync = max_watchers_per_sync
        self.fragment_bytes = fragment_bytes
        self.size_of = size_of
        self.streams: dict[int, WatchStream] = {}
        self.responses_sent = 0
        self.events_sent = 0
        """Events handed to clients (etcd_debugging_mvcc_events_total)."""
        self.prev_kv_watchers = 0
        """How many watchers want prev_kv (the MVCC adapter skips the reads when none)."""
        self._next_stream = 1
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._sync_loop(), name="watch-sync"),
            loop.create_task(self._progress_loop(), name="watch-progress"),
        ]

    async def stop(self) -> None:
        await cancel_and_wait(*self._tasks)
        self._tasks = []
        for s in list(self.streams.values()):
            s.close()

    def open(self) -> WatchStream:
        stream = WatchStream(self, self._next_stream, self.queue_len_max)
        self._next_stream += 1
        self.streams[stream.stream_id] = stream
        return stream

    def wake(self) -> None:
        self._wake.set()

    def statistics(self) -> HubStats:
        c = self.core
        return HubStats(len(self.streams), len(c.synced), len(c.unsynced), len(c.victims),
                        c.victims_total, c.current_revision, self.responses_sent, c.prev_kv_reads,
                        self.events_sent, sum(s.events_in_queue for s in self.streams.values()))

    # -- the apply stage's entry points ----------------------------------------------------
    def notify(self, batch: RevisionEvents) -> None:
        """Revision ``batch.revision`` was applied. Never blocks."""
        for w, events in self.core.on_revision(batch).items():
            responses = self._shape(w, tuple(events), batch.revision)
            stream = self.streams.get(w.stream_id)
            if stream is None or stream.offer(responses):
                self.core.delivered(w, batch.revision)
            else:
                self.core.make_victim(w, responses, batch.revision)
                self._wake.set()

    def advance(self, revision: int) -> None:
        """The store reached ``revision`` without events (e.g. restored from a snapshot)."""
        if revision > self.core.current_revision:
            self.core.current_revision = revision
            for stream in self.streams.values():
                for w in stream.watchers.values():
                    if self.core.synced.remove(w):
                        self.core.unsynced.add(w)
            self._wake.set()

    def compact(self, revision: int) -> None:
        self.core.compact(revision)
        self._wake.set()

    # -- internals ------------------------------------------------------------------------
    def _shape(self, w: Watcher, events: tuple[WatchEvent, ...], revision: int) -> list[WatchResponse]:
        if not w.fragment:
            return [WatchResponse(w.watch_id, revision, events)]
        pieces = fragment_events(events, self.fragment_bytes, self.size_of)
        return [
            WatchResponse(w.watch_id, revision, piece, fragment=i < len(pieces) - 1)
            for i, piece in enumerate(pieces)
        ]

    def try_progress(self, stream: WatchStream) -> None:
        if not stream.progress_pending:
            return
        if all(self.core.is_synced(w) for w in stream.watchers.values()):
            stream.progress_pending = False
            stream.put_control(WatchResponse(PROGRESS_WATCH_ID, self.core.current_revision))

    def sync_once(self) -> int:
        """One pass: hand victims their batches, catch up some unsynced watchers, send
        pending progress responses. Returns how many watchers moved."""
        moved = 0
        core = self.core
        core.compact(self.history.compact_revision())
        for w in list(core.victims):
            stream = self.streams.get(w.stream_id)
            if stream is None or stream.offer(w.pending):
                core.victim_done(w)
                moved += 1
        chosen, compacted, low = core.sync_plan(self.max_watchers_per_sync)
        for w in compacted:
            stream = self.streams.get(w.stream_id)
            if stream is not None and stream.watchers.pop(w.watch_id, None) is not None:
                self.prev_kv_watchers -= w.prev_kv
                stream.put_control(core.compacted_response(w))
            moved += 1
        if chosen:
            batches = self.history.history(low, core.current_revision)
            for w in chosen:
                stream = self.streams.get(w.stream_id)
                responses = core.catch_up(w, batches)
                if w.fragment:
                    responses = [p for r in responses for p in self._shape(w, r.events, r.revision)]
                if stream is None or stream.offer(responses):
                    core.sync_done(w)
                    moved += 1
        for stream in list(self.streams.values()):
            self.try_progress(stream)
        return moved

    async def _sync_loop(self) -> None:
        while True:
            await wait_event(self._wake, self.sync_interval_s)
            self._wake.clear()
            try:
                moved = self.sync_once()
            except Exception:  # a failing history read must not kill the hub
                log.exception("watch sync pass failed")
                moved = 0
            if moved and (self.core.unsynced or self.core.victims):
                self._wake.set()
            await asyncio.sleep(0)

    async def _progress_loop(self) -> None:
        while True:
            await asyncio.sleep(self.progress_interval_s)
            self.send_progress()

    def send_progress(self) -> None:
        """etcd's periodic progress notify: an empty response to each idle synced watcher
        that asked for it."""
        rev = self.core.current_revision
        for stream in list(self.streams.values()):
            if stream.queued():
                continue
            for w in stream.watchers.values():
                if w.progress_notify and self.core.is_synced(w):
                    stream.offer([WatchResponse(w.watch_id, rev)])


