"""Watch: pure watcher groups and interval index (``core``), async fan-out (``hub``)."""

from kvraft.watch.core import WatchCore, Watcher, WatcherGroup, fragment_events
from kvraft.watch.hub import HistoryReader, HubStats, WatchHub, WatchStream
from kvraft.watch.interval import IntervalIndex
from kvraft.watch.types import (
    NO_DELETE,
    NO_PUT,
    PROGRESS_WATCH_ID,
    EventType,
    RevisionEvents,
    WatchCreate,
    WatchEvent,
    WatchResponse,
)

__all__ = [
    "NO_DELETE",
    "NO_PUT",
    "PROGRESS_WATCH_ID",
    "EventType",
    "HistoryReader",
    "HubStats",
    "IntervalIndex",
    "RevisionEvents",
    "WatchCore",
    "WatchCreate",
    "WatchEvent",
    "WatchHub",
    "WatchResponse",
    "WatchStream",
    "Watcher",
    "WatcherGroup",
    "fragment_events",
]
