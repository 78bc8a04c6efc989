"""The applier chain (etcd's ``applierV3`` decorators): ``Quota(Backend)`` here, wrapped by
the lease and auth appliers of ``feature_appliers`` into ``Auth(Lease(Quota(Backend)))``
through ``build_chain(store, wrap=...)``.

Every applier has ``apply(op) -> result`` and raises ``EtcdError`` for expected failures;
a ``BatchOp``'s result is a list with each op's result or ``EtcdError`` (one op refused
does not stop the others).
Applying must be deterministic: every member applies the same entries in the same order
and must reach the same state, so nothing here may look at member-local facts (clock,
file sizes). That is why the quota is enforced in two places, as etcd does: before
proposing (``QuotaGuard``, member-local: it proposes a NOSPACE alarm) and at apply time
only through the replicated alarm (``QuotaApplier``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kvraft.apply.errors import EtcdError, InvalidArgument, ResourceExhausted
from kvraft.apply.ops import AlarmOp, BatchOp, CompactOp, DeleteRangeOp, PutOp, RangeOp, TxnOp
from kvraft.apply.validate import as_etcd_error
from kvraft.storage.mvcc import ops as mvcc_ops
from kvraft.storage.mvcc.errors import MVCCError

__all__ = ["Applier", "BackendApplier", "CompactResult", "QuotaApplier", "QuotaGuard", "apply_each", "build_chain"]

NOSPACE = 1
ACTIVATE, DEACTIVATE = 1, 2
NOSPACE_MESSAGE = "etcdserver: mvcc: database space exceeded"


@dataclass(slots=True)
class CompactResult:
    revision: int
    job: Any = None


class Applier:
    def apply(self, op: Any) -> Any:
        raise NotImplementedError


class BackendApplier(Applier):
    """Runs ops against the MVCC store."""

    def __init__(self, store: Any, member_id: int) -> None:
        self.store = store
        self.member_id = member_id
        self.raised_by = 0

    def apply(self, op: Any) -> Any:
        try:
            if isinstance(op, PutOp):
                return self.store.put_request(op)
            if isinstance(op, DeleteRangeOp):
                return self.store.delete_range_request(op)
            if isinstance(op, TxnOp):
                return self.store.txn_request(op)
            if isinstance(op, RangeOp):
                return self.store.range_request(op)
            if isinstance(op, CompactOp):
                job = self.store.compact(op.revision)
                return CompactResult(self.store.rev, job)
            if isinstance(op, AlarmOp):
                return self._alarm(op)
            if isinstance(op, BatchOp):
                return self._batch(op)
        except MVCCError as exc:
            raise as_etcd_error(exc) from None
        raise TypeError(f"cannot apply {op!r}")

    def _batch(self, op: BatchOp) -> list[Any]:
        """Runs of plain puts go to the store in one call (``put_many``); anything else
        one op at a time, in order."""
        results: list[Any] = []
        puts: list[PutOp] = []
        for item in op.ops:
            if type(item) is PutOp:
                puts.append(item)
                continue
            if puts:
                results.extend(self._puts(puts))
                puts = []
            results.append(_one(self, item))
        if puts:
            results.extend(self._puts(puts))
        return results

    def _puts(self, puts: list[PutOp]) -> list[Any]:
        return [as_etcd_error(r) if isinstance(r, MVCCError) else r for r in self.store.put_many(puts)]

    def _alarm(self, op: AlarmOp) -> list[tuple[int, int]]:
        if op.alarm == NOSPACE and op.action in (ACTIVATE, DEACTIVATE):
            self.store.set_nospace_alarm(op.action == ACTIVATE)
            self.raised_by = op.member_id if op.action == ACTIVATE else 0
        return [(self.raised_by, NOSPACE)] if self.store.nospace_alarm else []


def _one(applier: Applier, op: Any) -> Any:
    """``applier.apply(op)``, or the ``EtcdError`` it raised."""
    if isinstance(op, BatchOp):
        return InvalidArgument("etcdserver: a batch cannot hold a batch")
    try:
        return applier.apply(op)
    except EtcdError as exc:
        return exc


def apply_each(applier: Applier, op: BatchOp) -> list[Any]:
    """A batch applied one op at a time through ``applier`` (the per-op path, for the
    appliers that must look at every op)."""
    return [_one(applier, item) for item in op.ops]


class QuotaApplier(Applier):
    """With the (replicated) NOSPACE alarm raised, writes that add data fail; ranges,
    deletes, compaction and alarm changes go on (etcd's ``applierV3Capped``)."""

    def __init__(self, inner: Applier, store: Any) -> None:
        self.inner = inner
        self.store = store

    def apply(self, op: Any) -> Any:
        if self.store.nospace_alarm and isinstance(op, BatchOp):
            return apply_each(self, op)
        if self.store.nospace_alarm and isinstance(op, (PutOp, TxnOp)):
            kind = "put" if isinstance(op, PutOp) else "txn"
            try:
                mvcc_ops.check_capped(True, kind, op)
            except MVCCError as exc:
                raise as_etcd_error(exc) from None
        return self.inner.apply(op)


class QuotaGuard:
    """Before proposing a write: if the backend is over quota, refuse it and ask for the
    NOSPACE alarm to be raised (``raise_alarm``), as etcd's ``quotaKVServer`` does.

    Measuring the backend (``store.sizes()``: LMDB info and tree stats) costs ~0.2 ms, as
    much as the rest of a put's request path, so the size is re-measured only when
    ``REFRESH_S`` has passed or ``REFRESH_BYTES`` of keys and values were admitted since
    the last measurement. The check stays approximate by at most that much, as etcd's is
    (it compares the current size plus an estimate of the request)."""

    REFRESH_S = 0.01
    REFRESH_BYTES = 64 * 1024

    def __init__(self, store: Any, quota_bytes: int) -> None:
        self.store = store
        self.quota_bytes = quota_bytes
        self._size = 0
        self._measured_at = float("-inf")
        self._admitted = 0

    def check(self, op: Any, raise_alarm: Callable[[], None]) -> None:
        if isinstance(op, PutOp):
            added = len(op.key) + len(op.value or b"")
        elif isinstance(op, BatchOp):
            added = sum(len(o.key) + len(o.value or b"") for o in op.ops if isinstance(o, PutOp))
            if not added and not any(isinstance(o, TxnOp) and mvcc_ops.txn_has_put(o) for o in op.ops):
                return
        elif isinstance(op, TxnOp) and mvcc_ops.txn_has_put(op):
            added = self.REFRESH_BYTES  # not worth sizing: measure again
        else:
            return
        if self.store.nospace_alarm:
            raise ResourceExhausted(NOSPACE_MESSAGE)
        now = time.monotonic()
        if now - self._measured_at >= self.REFRESH_S or self._admitted >= self.REFRESH_BYTES:
            self._size = self.store.sizes()[0]
            self._measured_at, self._admitted = now, 0
        if self._size > self.quota_bytes:
            raise_alarm()
            raise ResourceExhausted(NOSPACE_MESSAGE)
        self._admitted += added


def build_chain(store: Any, member_id: int, wrap: Callable[[Applier], Applier] | None = None) -> Applier:
    chain: Applier = QuotaApplier(BackendApplier(store, member_id), store)
    return wrap(chain) if wrap is not None else chain
