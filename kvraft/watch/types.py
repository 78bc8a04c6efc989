"""Values of the watch layer: events, per-revision batches, watch requests and responses.

``kv`` and ``prev_kv`` are MVCC key-values (``kvraft.storage.mvcc.types.KeyValue`` or any
object with the same attributes). A DELETE event's ``kv`` carries only ``key`` and
``mod_revision`` (the deletion's revision), as etcd sends it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

__all__ = [
    "NO_DELETE",
    "NO_PUT",
    "PROGRESS_WATCH_ID",
    "EventType",
    "RevisionEvents",
    "WatchCreate",
    "WatchEvent",
    "WatchResponse",
]

NO_PUT = 0
NO_DELETE = 1
PROGRESS_WATCH_ID = -1
"""etcd's ``InvalidWatchID``: the watch_id of a stream-wide progress response."""


class EventType(enum.IntEnum):
    PUT = 0
    DELETE = 1


@dataclass(frozen=True, slots=True)
class WatchEvent:
    type: int
    kv: Any
    prev_kv: Any | None = None


@dataclass(frozen=True, slots=True)
class RevisionEvents:
    """Every event of one revision, in the order the revision made them (atomic unit)."""

    revision: int
    events: tuple[WatchEvent, ...]


@dataclass(frozen=True, slots=True)
class WatchCreate:
    """etcd's ``WatchCreateRequest``. ``range_end`` b"" = one key, b"\\0" = every key >= key;
    ``start_revision`` 0 = from the next revision; ``watch_id`` 0 = the stream picks (etcd's
    AutoWatchID); any other id, negative too, is the client's."""

    key: bytes
    range_end: bytes = b""
    start_revision: int = 0
    progress_notify: bool = False
    filters: tuple[int, ...] = ()
    prev_kv: bool = False
    watch_id: int = 0
    fragment: bool = False


@dataclass(frozen=True, slots=True)
class WatchResponse:
    """etcd's ``WatchResponse`` (less the header, which the API layer builds from
    ``revision``). ``revision`` 0 means "no revision in the header" (compaction cancel)."""

    watch_id: int
    revision: int
    events: tuple[WatchEvent, ...] = ()
    created: bool = False
    canceled: bool = False
    compact_revision: int = 0
    cancel_reason: str = ""
    fragment: bool = False
