"""``DurationHistogram``: a fixed-bucket histogram that the storage layers fill where the work
happens (the WAL's ``fdatasync``, the backend's commit) and the ``/metrics`` collector reads at
scrape time (``kvraft.server.metrics``).

It is deliberately not a ``prometheus_client`` object: the storage code stays free of the
metrics library, and each storage instance owns its histogram, so several members in one
process (tests) never mix their figures. One thread observes (the log writer, or the apply
thread), another reads; under the GIL each ``observe`` is a couple of list/float updates, and a
scrape that races one sees at worst a count one ahead of the sum, which Prometheus tolerates.
"""

from __future__ import annotations

import contextlib
import re
import time
from bisect import bisect_left
from collections.abc import Iterator, Sequence

__all__ = [
    "ETCD_APPLY_BUCKETS_S",
    "ETCD_DISK_BUCKETS_S",
    "ETCD_PEER_RTT_BUCKETS_S",
    "ETCD_SNAPSHOT_BUCKETS_S",
    "PROMETHEUS_DEFAULT_BUCKETS_S",
    "DurationHistogram",
    "parse_go_duration_s",
]

_GO_UNITS_S = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_GO_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|\u00b5s|ms|s|m|h)")


def parse_go_duration_s(text: str) -> float:
    """Seconds of a Go ``time.Duration`` string as etcd's duration flags take them: ``0``,
    ``500ms``, ``1m30s``, ``2h``; ``ValueError`` otherwise (negative ones included)."""
    text = text.strip()
    if text == "0":
        return 0.0
    parts = _GO_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"invalid duration {text!r} (want a Go duration such as 500ms, 30s, 5m, 1h30m)")
    return sum(float(n) * _GO_UNITS_S[u] for n, u in parts)

ETCD_DISK_BUCKETS_S: tuple[float, ...] = tuple(0.001 * 2**i for i in range(14))
"""etcd's buckets for ``etcd_disk_wal_fsync_duration_seconds`` and
``etcd_disk_backend_commit_duration_seconds``: ``prometheus.ExponentialBuckets(0.001, 2, 14)``,
1 ms to 8.192 s."""

ETCD_PEER_RTT_BUCKETS_S: tuple[float, ...] = tuple(0.0001 * 2**i for i in range(14))
"""etcd's buckets for ``etcd_network_peer_round_trip_time_seconds``:
``prometheus.ExponentialBuckets(0.0001, 2, 14)``, 0.1 ms to 0.8192 s."""

ETCD_SNAPSHOT_BUCKETS_S: tuple[float, ...] = tuple(0.1 * 2**i for i in range(10))
"""etcd's ``etcd_network_snapshot_send_total_duration_seconds`` buckets: 0.1 s doubling to 51.2 s."""
ETCD_APPLY_BUCKETS_S: tuple[float, ...] = tuple(0.0001 * 2**i for i in range(20))
"""etcd's ``etcd_server_apply_duration_seconds`` and ``etcd_server_range_duration_seconds``
buckets: 0.1 ms doubling to 52.4 s."""
PROMETHEUS_DEFAULT_BUCKETS_S: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""``prometheus.DefBuckets``: go-grpc-prometheus's for ``grpc_server_handling_seconds``."""


class DurationHistogram:
    """Counts of observations per upper bound (``le``), plus their sum, in seconds."""

    __slots__ = ("buckets", "counts", "sum")

    def __init__(self, buckets: Sequence[float] = ETCD_DISK_BUCKETS_S) -> None:
        self.buckets: tuple[float, ...] = tuple(sorted(buckets))
        self.counts: list[int] = [0] * (len(self.buckets) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.buckets, seconds)] += 1
        self.sum += seconds

    @contextlib.contextmanager
    def timer(self) -> Iterator[None]:
        """``with hist.timer():`` observes how long the block took, however it ends."""
        started = time.monotonic()
        try:
            yield
        finally:
            self.observe(time.monotonic() - started)

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, int]]:
        """``(le, cumulative count)`` pairs in Prometheus order, ending with ``+Inf``."""
        out: list[tuple[str, int]] = []
        total = 0
        for bound, n in zip((*self.buckets, float("inf")), list(self.counts), strict=True):
            total += n
            out.append(("+Inf" if bound == float("inf") else repr(bound), total))
        return out
