"""etcd 3.4's MVCC operation counters (``etcd_mvcc_{range,put,delete,txn}_total`` and their
``etcd_debugging_mvcc_*`` twins, ``etcd_debugging_mvcc_total_put_size_in_bytes``).

etcd counts inside its MVCC transactions (``mvcc/metrics_txn.go``): every ``Range``,
``Put`` and ``DeleteRange`` call on an MVCC txn adds one, and when the txn ends it counts
as a *txn* only if it made more than one such call. So the figures follow etcd's apply
code, not the requests:

- a range is one range; a failed one (compacted, future revision) counts too;
- a put is one put, plus one range when it needs the old value (``prev_kv``,
  ``ignore_value``, ``ignore_lease``), which makes it a txn; a put refused for its lease
  counts nothing (the lease is looked up before the MVCC txn opens);
- a delete is one delete, plus one range with ``prev_kv``;
- a txn is two MVCC txns when it writes: a read txn for the compares (one range each,
  stopping at the first false, on the chosen path) and the checks of the puts that need
  their key (one range each), then a write txn for the ops; a read-only txn is one;
- a lease revocation is one delete per attached key, in one txn;
- a compaction reads one key for its header's revision (one range).

``etcd_debugging_mvcc_total_put_size_in_bytes`` adds the key and the value written by each
put (for ``ignore_value``, the old value).
"""

from __future__ import annotations

from kvraft.durations import DurationHistogram

__all__ = ["OpCounts", "StoreTimings", "Tally"]


class Tally:
    """What one MVCC txn did, until it ends (``OpCounts.end``)."""

    __slots__ = ("deletes", "put_bytes", "puts", "ranges")

    def __init__(self) -> None:
        self.ranges = 0
        self.puts = 0
        self.deletes = 0
        self.put_bytes = 0


class OpCounts:
    """A store's running totals since the process started (as etcd's counters)."""

    __slots__ = ("deletes", "put_bytes", "puts", "ranges", "txns")

    def __init__(self) -> None:
        self.ranges = 0
        self.puts = 0
        self.deletes = 0
        self.txns = 0
        self.put_bytes = 0

    def end(self, tally: Tally) -> None:
        """One MVCC txn ended having done what ``tally`` holds."""
        if tally.ranges + tally.puts + tally.deletes > 1:
            self.txns += 1
        self.ranges += tally.ranges
        self.puts += tally.puts
        self.deletes += tally.deletes
        self.put_bytes += tally.put_bytes


def _doubling(first: float, count: int) -> tuple[float, ...]:
    return tuple(first * 2**i for i in range(count))


class StoreTimings:
    """etcd's timings of a store's maintenance, in etcd's buckets (``etcd_disk_backend_*``,
    ``etcd_debugging_mvcc_*compaction*``): snapshots from open to close, defragmentations,
    each step of a compaction (milliseconds, as etcd) and the records it deleted."""

    def __init__(self) -> None:
        self.snapshot_seconds = DurationHistogram(_doubling(0.01, 17))
        self.defrag_seconds = DurationHistogram(_doubling(0.1, 13))
        self.defrag_inflight = 0
        self.index_compaction_pause_ms = DurationHistogram(_doubling(0.5, 14))
        self.db_compaction_pause_ms = DurationHistogram(_doubling(1.0, 13))
        self.db_compaction_total_ms = DurationHistogram(_doubling(100.0, 14))
        self.db_compaction_keys = 0
        self.db_compaction_last = 0.0
        """Unix time the last compaction finished (0 since this process opened the store)."""

