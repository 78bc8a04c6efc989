"""The backend quota and the cost of requests (etcd's ``storage/quota.go``).

``BackendQuota.available(request)``: would this request still fit? The size compared is
the space IN USE (pages reachable from the trees), not the file's high-water mark as in
etcd: LMDB reuses freed pages, so after a compaction the freed space counts as free at
once, and a defragmentation shrinks the file too. (etcd compares the bbolt file size, so
its users must compact, defragment and then disarm.)

The NOSPACE alarm is a replicated decision, as in etcd: a member whose quota is exhausted
proposes the alarm; applying it calls ``MVCCStore.set_nospace_alarm(True)``, after which
every member refuses puts and txns with puts (``NoSpaceError``, code 8, "etcdserver:
mvcc: database space exceeded") while ranges, deletes, compaction and defragmentation go
on. Disarming (``set_nospace_alarm(False)``) is an explicit operator action.

Costs: a put costs ``256 + len(key) + len(value)`` bytes; a txn the larger of its
branches' sums (nested txns included); a lease grant 64; everything else 0.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kvraft.storage.mvcc.ops import op_kind

__all__ = [
    "DEFAULT_QUOTA_BYTES",
    "KV_OVERHEAD_BYTES",
    "LEASE_OVERHEAD_BYTES",
    "MAX_QUOTA_BYTES",
    "BackendQuota",
    "cost",
    "put_cost",
]

DEFAULT_QUOTA_BYTES = 2 << 30
MAX_QUOTA_BYTES = 8 << 30
KV_OVERHEAD_BYTES = 256
LEASE_OVERHEAD_BYTES = 64


def put_cost(op: Any) -> int:
    """A put's cost (``key`` and ``value`` attributes, ``value`` may be None), without
    ``op_kind``'s dispatch: the server's quota guard calls it on every put."""
    return KV_OVERHEAD_BYTES + len(op.key) + len(op.value or b"")


def _cost_op(op: Any) -> int:
    kind = op_kind(op)
    if kind == "put":
        return put_cost(op)
    if kind == "txn":
        return max(sum(_cost_op(o) for o in op.success), sum(_cost_op(o) for o in op.failure))
    return 0


def cost(request: Any) -> int:
    """Bytes a request may add to the backend (etcd's ``Cost``); ``"lease_grant"`` may be
    passed for a lease grant."""
    if request == "lease_grant":
        return LEASE_OVERHEAD_BYTES
    return _cost_op(request)


class BackendQuota:
    """``quota_bytes``: 0 = etcd's default (2 GiB); negative = no quota."""

    def __init__(self, size_in_use: Callable[[], int], quota_bytes: int = 0) -> None:
        self._size_in_use = size_in_use
        self.quota_bytes = DEFAULT_QUOTA_BYTES if quota_bytes == 0 else quota_bytes

    @property
    def enabled(self) -> bool:
        return self.quota_bytes > 0

    def available(self, request: Any) -> bool:
        if not self.enabled:
            return True
        c = cost(request)
        return c == 0 or self._size_in_use() + c < self.quota_bytes

    def remaining(self) -> int:
        return self.quota_bytes - self._size_in_use() if self.enabled else 1 << 62
