"""The applier chain (etcd's ``applierV3`` decorators): ``Quota(Backend)`` here, wrapped by
the lease and auth appliers of ``feature_appliers`` into ``Auth(Lease(Quota(Backend)))``
through ``build_chain(store, wrap=...)``, and that by ``CorruptApplier``.

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

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kvraft.apply.errors import DataLoss, EtcdError, InvalidArgument, ResourceExhausted
from kvraft.apply.feature_ops import AuthedOp, LeaseExpireOp, LeaseGrantOp, LeaseRevokeOp
from kvraft.apply.ops import (
    AlarmOp,
    BatchOp,
    CompactOp,
    DeleteRangeOp,
    PutOp,
    RangeOp,
    SessionOp,
    TxnOp,
)
from kvraft.apply.validate import as_etcd_error
from kvraft.storage.mvcc import ops as mvcc_ops
from kvraft.storage.mvcc.errors import MVCCError
from kvraft.storage.quota import cost, put_cost
from kvraft.storage.schema import ALARM_CORRUPT, ALARM_NOSPACE

__all__ = [
    "Applier",
    "BackendApplier",
    "CompactResult",
    "CorruptApplier",
    "QuotaApplier",
    "QuotaGuard",
    "apply_each",
    "build_chain",
]

NOSPACE, CORRUPT = ALARM_NOSPACE, ALARM_CORRUPT  # etcd's AlarmType numbers, as the store keeps them
ACTIVATE, DEACTIVATE = 1, 2
NOSPACE_MESSAGE = "etcdserver: mvcc: database space exceeded"
CORRUPT_MESSAGE = "etcdserver: corrupt cluster"


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
                self.store.counts.ranges += 1  # etcd reads a key for the header's revision
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
        """etcd's applyAlarm: ACTIVATE answers the alarm (new or already there), DEACTIVATE
        the one removed (nothing if it was not raised); any type is kept, NONE included.
        The set is the store's (``MVCCStore.set_alarms``): kept on disk, in snapshots."""
        entry = (op.member_id, op.alarm)
        alarms = self.store.alarms
        if op.action == ACTIVATE:
            if entry not in alarms:
                self.store.set_alarms(alarms | {entry})
        elif op.action == DEACTIVATE:
            if entry not in alarms:
                return []
            self.store.set_alarms(alarms - {entry})
        else:
            return self.raised(op.alarm)
        return [entry]

    def raised(self, alarm: int = 0) -> list[tuple[int, int]]:
        """The alarms raised, of one type or (NONE) all, sorted."""
        return sorted(a for a in self.store.alarms if not alarm or a[1] == alarm)


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

    The size compared is the backend's space in use as last committed (pages reachable
    from the trees, not the file's high-water mark: compaction alone frees quota, see
    docs/design/storage.md section 7) plus the cost (``quota.cost``: 256 + key + value per
    put) of every write admitted since that commit. Applied writes are held in memory for
    up to ``COMMIT_INTERVAL_S`` (group commit), so the file alone lags the data by that
    much: at a few hundred puts/s of 60 kB values the file stayed at 45 kB while 1.5 MB were
    accepted over a 400 kB quota (2.4 MB in a CI run). Measuring the file (LMDB info and
    tree stats, ~0.2 ms, as much as the rest of a put's request path) happens once per
    commit (``Backend.changes``), not per write. Writes admitted just before a commit but
    applied after it are counted again only by the next measurement: the check stays
    approximate by what is in flight, as etcd's is (the current size plus an estimate of
    the request)."""

    def __init__(self, store: Any, quota_bytes: int) -> None:
        self.store = store
        self.quota_bytes = quota_bytes
        self._size = 0
        self._seen = -1
        self._admitted = 0
        """Cost of the writes admitted since the commit ``_size`` was measured after."""

    def check(self, op: Any, raise_alarm: Callable[[], None]) -> None:
        if isinstance(op, PutOp):
            added = put_cost(op)
        elif isinstance(op, BatchOp):
            ops = [o.op if type(o) is SessionOp else o for o in op.ops]  # (the coalescer's numbered puts)
            added = sum(put_cost(o) if type(o) is PutOp else cost(o) if isinstance(o, TxnOp) else 0 for o in ops)
            if not added:
                return
        elif isinstance(op, TxnOp) and mvcc_ops.txn_has_put(op):
            added = cost(op)
        else:
            return
        if self.store.nospace_alarm and not self.store.corrupt_alarm:  # (CORRUPT answers first, at apply)
            raise ResourceExhausted(NOSPACE_MESSAGE)
        if self.quota_bytes < 0:  # --quota-backend-bytes < 0: disabled, as etcd's passthroughQuota
            return
        changes = self.store.backend.changes
        if changes != self._seen:
            self._size = self.store.sizes()[1]
            self._seen, self._admitted = changes, 0
        if self._size + self._admitted > self.quota_bytes:
            raise_alarm()
            raise ResourceExhausted(NOSPACE_MESSAGE)
        self._admitted += added


_REFUSED_WHEN_CORRUPT = (PutOp, DeleteRangeOp, TxnOp, RangeOp, CompactOp, LeaseGrantOp, LeaseRevokeOp, LeaseExpireOp)


class CorruptApplier(Applier):
    """With a CORRUPT alarm raised (a member's data diverged: ``kvraft.server.corruption``),
    nothing that changes the key space or the leases applies: puts, deletes, txns,
    compactions, lease grants, revocations and expiries fail with DataLoss "etcdserver:
    corrupt cluster", before any auth check (etcd's ``applierV3Corrupt``, outermost).
    Alarms, auth changes and lease checkpoints go on, so the alarm can be disarmed once the
    member is replaced; reads are served as before (they are not applied)."""

    def __init__(self, inner: Applier, store: Any) -> None:
        self.inner = inner
        self.store = store

    def apply(self, op: Any) -> Any:
        if not self.store.corrupt_alarm:
            return self.inner.apply(op)
        request = op.op() if isinstance(op, AuthedOp) else op
        if isinstance(request, BatchOp):
            return [DataLoss(CORRUPT_MESSAGE) for _ in request.ops]
        if isinstance(request, _REFUSED_WHEN_CORRUPT):
            raise DataLoss(CORRUPT_MESSAGE)
        return self.inner.apply(op)


def build_chain(store: Any, member_id: int, wrap: Callable[[Applier], Applier] | None = None) -> Applier:
    """``Corrupt(wrap(Quota(Backend)))``: ``wrap`` adds the lease and auth appliers."""
    chain: Applier = QuotaApplier(BackendApplier(store, member_id), store)
    return CorruptApplier(wrap(chain) if wrap is not None else chain, store)
