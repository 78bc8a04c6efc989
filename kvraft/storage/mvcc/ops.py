"""etcd's request semantics on top of a view: range options, put flags, delete, txn.

Mirrors etcd's ``v3rpc/key.go`` (request checks, the duplicate-key rule) and
``etcdserver/txn`` (``Range``, ``Put``, ``DeleteRange``, ``Txn``, ``applyCompare``), in
the same order, so the same request fails with the same error:

1. ``check_*_request``: empty key, ignore_value with a value, ignore_lease with a lease,
   bad sort option, too many txn ops (``max_txn_ops``, etcd default 128), duplicate keys.
2. The NOSPACE alarm (``check_capped``): puts and txns containing a put are refused.
3. Txn: every compare, of the outer txn and of the nested txns on the chosen path, is
   evaluated against the store BEFORE any write; then put checks (ignore_* need the key,
   the lease must exist) and range checks (revision not future, not compacted) run on
   that same pre-txn state; only then are the operations applied, in order. One txn is
   one revision; a nested txn's result has revision 0 (etcd leaves its header empty).

Sorting: etcd sorts with Go's unstable sort and leaves the order of ties unspecified;
here ties keep key order (ascending) for both ASCEND and DESCEND, which is what etcd's
sort yields for small results. The reference model follows the same rule.

Everything here is a pure function of the view and the request. The lease check is a
callable supplied by the store's owner (the lessor, later); None means "any lease".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from kvraft.storage.mvcc.counts import OpCounts, Tally
from kvraft.storage.mvcc.errors import (
    CompactedRevisionError,
    DuplicateKeyError,
    EmptyKeyError,
    FutureRevisionError,
    InvalidSortOptionError,
    KeyNotFoundError,
    LeaseNotFoundError,
    LeaseProvidedError,
    NoSpaceError,
    TooManyOpsError,
    ValueProvidedError,
)
from kvraft.storage.mvcc.types import (
    CompareResult,
    CompareTarget,
    DeleteRangeResult,
    KeyValue,
    PutResult,
    RangeResult,
    SortOrder,
    SortTarget,
    TxnResult,
)
from kvraft.storage.mvcc.views import View

__all__ = [
    "DEFAULT_MAX_TXN_OPS",
    "LeaseCheck",
    "apply_delete_range",
    "apply_put",
    "apply_range",
    "apply_txn",
    "check_capped",
    "check_delete_request",
    "check_intervals",
    "check_put_request",
    "check_range_request",
    "check_txn_request",
    "compare_to_path",
    "is_txn_readonly",
    "is_txn_serializable",
    "mk_gte_range",
    "op_kind",
    "txn_has_put",
]

DEFAULT_MAX_TXN_OPS = 128
LeaseCheck = Callable[[int], bool] | None


def op_kind(op: Any) -> str:
    """``"range" | "put" | "delete" | "txn"`` for a request object (ours, or any object
    with etcd's field names, e.g. ``kvraft.apply.ops``)."""
    if hasattr(op, "compare"):
        return "txn"
    if hasattr(op, "ignore_value"):
        return "put"
    if hasattr(op, "sort_order"):
        return "range"
    if hasattr(op, "prev_kv") and hasattr(op, "range_end"):
        return "delete"
    raise TypeError(f"not a request op: {op!r}")


def mk_gte_range(range_end: bytes) -> bytes | None:
    """etcd request ``range_end`` -> index end: b"" is one key (None), b"\\0" is every
    key >= key (b""), anything else is the exclusive end."""
    if not range_end:
        return None
    if range_end == b"\x00":
        return b""
    return range_end


# -- 1. request checks (etcd's v3rpc/key.go) ---------------------------------------------


def check_range_request(r: Any) -> None:
    if not r.key:
        raise EmptyKeyError()
    if r.sort_order not in SortOrder._value2member_map_ or r.sort_target not in SortTarget._value2member_map_:
        raise InvalidSortOptionError()


def check_put_request(r: Any) -> None:
    if not r.key:
        raise EmptyKeyError()
    if r.ignore_value and r.value:
        raise ValueProvidedError()
    if r.ignore_lease and r.lease:
        raise LeaseProvidedError()


def check_delete_request(r: Any) -> None:
    if not r.key:
        raise EmptyKeyError()


def check_txn_request(r: Any, max_txn_ops: int = DEFAULT_MAX_TXN_OPS) -> None:
    """Op-count and per-op checks, then the duplicate-key rule on each branch."""
    _check_txn_ops(r, max_txn_ops)
    check_intervals(r.success)
    check_intervals(r.failure)


def _check_txn_ops(r: Any, max_txn_ops: int) -> None:
    opc = max(len(r.compare), len(r.success), len(r.failure))
    if opc > max_txn_ops:
        raise TooManyOpsError()
    for c in r.compare:
        if not c.key:
            raise EmptyKeyError()
    for op in (*r.success, *r.failure):
        if op is None:  # an empty RequestOp (a decoded ``{}``), in its turn among the checks
            raise KeyNotFoundError()
        kind = op_kind(op)
        if kind == "range":
            check_range_request(op)
        elif kind == "put":
            check_put_request(op)
        elif kind == "delete":
            check_delete_request(op)
        else:
            _check_txn_ops(op, max_txn_ops - opc)


Interval = tuple[bytes, bytes]  # [begin, end); end b"" = +infinity


def _hits(dels: list[Interval], key: bytes) -> bool:
    return any(b <= key and (not e or key < e) for b, e in dels)


def check_intervals(reqs: Sequence[Any]) -> tuple[set[bytes], list[Interval]]:
    """etcd's duplicate-key rule for one list of ops (``checkIntervals``): no key may be
    put twice, nor put and deleted, at this level or in nested txns; the two branches
    of one nested txn may put the same key. A delete's interval is ``[key, range_end)``,
    or the point ``key`` when range_end is empty (note: a delete with range_end
    ``"\\0"`` gives the empty interval ``[key, "\\0")`` and so conflicts with nothing,
    exactly as in etcd). Returns ``(puts, deletes)`` for the level above."""
    dels: list[Interval] = []
    for op in reqs:
        if op_kind(op) == "delete":
            dels.append((op.key, op.range_end) if op.range_end else (op.key, op.key + b"\x00"))
    puts: set[bytes] = set()
    for op in reqs:
        if op_kind(op) != "txn":
            continue
        puts_then, dels_then = check_intervals(op.success)
        puts_else, dels_else = check_intervals(op.failure)
        for k in puts_then:
            if k in puts or _hits(dels, k):
                raise DuplicateKeyError()
            puts.add(k)
        for k in puts_else:
            if (k in puts and k not in puts_then) or _hits(dels, k):
                raise DuplicateKeyError()
            puts.add(k)
        dels.extend(dels_then)
        dels.extend(dels_else)
    for op in reqs:
        if op_kind(op) == "put":
            if op.key in puts or _hits(dels, op.key):
                raise DuplicateKeyError()
            puts.add(op.key)
    return puts, dels


# -- 2. the NOSPACE alarm ------------------------------------------------------------------


def txn_has_put(r: Any) -> bool:
    """Some branch, at any depth, has a put. (etcd 3.4's quota cost counts only a txn's
    top-level puts, so a put in a nested txn gets past its NOSPACE alarm; kvraft does not
    copy that: docs/design/server.md, differences.)"""
    for op in (*r.success, *r.failure):
        kind = op_kind(op)
        if kind == "put" or (kind == "txn" and txn_has_put(op)):
            return True
    return False


def check_capped(alarm_active: bool, kind: str, op: Any) -> None:
    """With the NOSPACE alarm raised, puts and txns with a put fail; everything else
    (ranges, deletes, compaction) goes on (etcd's ``applierV3Capped``)."""
    if alarm_active and (kind == "put" or (kind == "txn" and txn_has_put(op))):
        raise NoSpaceError()


# -- 3. applying ----------------------------------------------------------------------------

_SORT_KEYS: dict[int, Callable[[KeyValue], Any]] = {
    SortTarget.KEY: lambda kv: kv.key,
    SortTarget.VERSION: lambda kv: kv.version,
    SortTarget.CREATE: lambda kv: kv.create_revision,
    SortTarget.MOD: lambda kv: kv.mod_revision,
    SortTarget.VALUE: lambda kv: kv.value,
}


def apply_range(view: View, r: Any) -> RangeResult:
    if not (r.sort_order or r.sort_target or r.keys_only or r.min_mod_revision or r.max_mod_revision
            or r.min_create_revision or r.max_create_revision):
        # the usual range (key order, no filter): what the general path below does for it,
        # without its enum comparisons and copies
        limit = r.limit
        kvs, count, header = view.range(r.key, mk_gte_range(r.range_end), rev=r.revision,
                                        limit=limit + 1 if limit > 0 else 0, count_only=r.count_only,
                                        count=not r.no_count)
        if limit > 0 and len(kvs) > limit:
            return RangeResult(tuple(kvs[:limit]), True, count, header)
        return RangeResult(tuple(kvs), False, count, header)
    limit = max(r.limit, 0)  # a negative limit is no limit, as etcd's mvcc takes it
    filtered = bool(r.min_mod_revision or r.max_mod_revision or r.min_create_revision or r.max_create_revision)
    if r.sort_order != SortOrder.NONE or filtered:
        limit = 0  # fetch everything; sort and cut afterwards
    if limit > 0:
        limit += 1  # one more, to know whether there is more
    kvs, count, header = view.range(
        r.key, mk_gte_range(r.range_end), rev=r.revision, limit=limit, count_only=r.count_only, count=not r.no_count
    )
    if filtered:
        kvs = [
            kv for kv in kvs
            if not (r.max_mod_revision and kv.mod_revision > r.max_mod_revision)
            and not (r.min_mod_revision and kv.mod_revision < r.min_mod_revision)
            and not (r.max_create_revision and kv.create_revision > r.max_create_revision)
            and not (r.min_create_revision and kv.create_revision < r.min_create_revision)
        ]
    order = r.sort_order
    if r.sort_target != SortTarget.KEY and order == SortOrder.NONE:
        order = SortOrder.ASCEND  # results come in key order; other targets default to ascend
    elif r.sort_target == SortTarget.KEY and order == SortOrder.ASCEND:
        order = SortOrder.NONE  # already in key order
    if order != SortOrder.NONE:
        kvs = sorted(kvs, key=_SORT_KEYS[r.sort_target], reverse=order == SortOrder.DESCEND)
    more = False
    if r.limit > 0 and len(kvs) > r.limit:
        kvs, more = kvs[: r.limit], True
    if r.keys_only:
        kvs = [kv._replace(value=b"") for kv in kvs]
    return RangeResult(kvs=tuple(kvs), more=more, count=count, revision=header)


def apply_put(view: Any, r: Any, lease_check: LeaseCheck, *, tally: Tally, in_txn: bool = False) -> PutResult:
    """``view`` must be a write view. Outside a txn the lease is checked first (inside,
    ``check_put`` has done it). ``tally`` counts what etcd's MVCC txn counts (``counts``)."""
    if not in_txn and r.lease and lease_check is not None and not lease_check(r.lease):
        raise LeaseNotFoundError()
    prev: KeyValue | None = None
    if r.ignore_value or r.ignore_lease or r.prev_kv:
        tally.ranges += 1
        kvs, _, _ = view.range(r.key, None)
        prev = kvs[0] if kvs else None
    if (r.ignore_value or r.ignore_lease) and prev is None:
        raise KeyNotFoundError()
    value = prev.value if r.ignore_value and prev is not None else r.value
    lease = prev.lease if r.ignore_lease and prev is not None else r.lease
    tally.puts += 1
    tally.put_bytes += len(r.key) + len(value)
    rev = view.put(r.key, value, lease)
    return PutResult(revision=rev, prev_kv=prev if r.prev_kv else None)


def apply_delete_range(view: Any, r: Any, tally: Tally) -> DeleteRangeResult:
    end = mk_gte_range(r.range_end)
    prev: list[KeyValue] = []
    tally.ranges += bool(r.prev_kv)
    tally.deletes += 1
    if r.prev_kv:
        prev, _, _ = view.range(r.key, end)
    deleted, rev = view.delete_range(r.key, end)
    return DeleteRangeResult(revision=rev, deleted=deleted, prev_kvs=tuple(prev))


def is_txn_readonly(r: Any) -> bool:
    return all(op_kind(op) == "range" for op in (*r.success, *r.failure))


def is_txn_serializable(r: Any) -> bool:
    """A read-only txn whose every range (both branches) asks for a serializable read: served
    from this member's store without a read barrier, as etcd's ``isTxnSerializable``. (etcd
    counts a txn with no ranges at all as serializable too; kvraft keeps the barrier for one:
    its compares alone are then linearizable.)"""
    ops = (*r.success, *r.failure)
    return bool(ops) and all(op_kind(op) == "range" and getattr(op, "serializable", False) for op in ops)


def _compare(c: Any, kv: KeyValue) -> bool:
    target = c.target
    a: Any
    b: Any
    if target == CompareTarget.VALUE:
        a, b = kv.value, c.value
    elif target == CompareTarget.CREATE:
        a, b = kv.create_revision, c.create_revision
    elif target == CompareTarget.MOD:
        a, b = kv.mod_revision, c.mod_revision
    elif target == CompareTarget.VERSION:
        a, b = kv.version, c.version
    elif target == CompareTarget.LEASE:
        a, b = kv.lease, c.lease
    else:  # unknown target: etcd's compareKV leaves its comparison at 0 ("equal")
        a, b = 0, 0
    result = c.result
    if result == CompareResult.EQUAL:
        return bool(a == b)
    if result == CompareResult.NOT_EQUAL:
        return bool(a != b)
    if result == CompareResult.GREATER:
        return bool(a > b)
    if result == CompareResult.LESS:
        return bool(a < b)
    return True


def _apply_compare(view: View, c: Any) -> bool:
    try:
        kvs, _, _ = view.range(c.key, mk_gte_range(c.range_end))
    except (CompactedRevisionError, FutureRevisionError):  # pragma: no cover - current rev
        return False
    if not kvs:
        # nil == empty in gRPC: a VALUE compare on a missing key always fails
        return c.target != CompareTarget.VALUE and _compare(c, KeyValue(key=c.key))
    return all(_compare(c, kv) for kv in kvs)


Path = tuple[bool, tuple[Any, ...]]
"""(succeeded, paths of the nested txns of the chosen branch, in order)."""


def compare_to_path(view: View, r: Any, tally: Tally) -> Path:
    """Evaluate the compares, stopping at the first false one, then those of the nested
    txns of the chosen branch (etcd's ``compareToPath``); ``tally`` counts one range per
    compare evaluated."""
    ok = True
    for c in r.compare:
        tally.ranges += 1
        if not _apply_compare(view, c):
            ok = False
            break
    ops = r.success if ok else r.failure
    return ok, tuple(compare_to_path(view, op, tally) for op in ops if op_kind(op) == "txn")


def _check_requests(view: View, r: Any, path: Path, check: Callable[[View, Any], None]) -> None:
    ok, children = path
    nested = iter(children)
    for op in r.success if ok else r.failure:
        if op_kind(op) == "txn":
            _check_requests(view, op, next(nested), check)
        else:
            check(view, op)


def _check_put(lease_check: LeaseCheck, tally: Tally) -> Callable[[View, Any], None]:
    """The put checks over the chosen path, in the order the ops will run: a put that
    needs its key (ignore_value/ignore_lease) sees the txn's own earlier puts and deletes.
    (etcd 3.4 checks against the state before the txn only; a key deleted earlier in the
    same txn then fails in its apply, which panics. A delete to "\\0" escapes the
    duplicate-key rule, so such a txn gets this far.) Ranges and txns are skipped.
    ``tally`` counts one range per put that needs its key, as etcd reads it each time."""
    written: dict[bytes, bool] = {}  # key -> exists, for keys the txn put or deleted
    deleted: list[tuple[bytes, bytes | None]] = []  # [key, end) of the deletes so far

    def exists(view: View, key: bytes) -> bool:
        if key in written:
            return written[key]
        if any(start <= key and (end is None or key < end) for start, end in deleted):
            return False
        kvs, _, _ = view.range(key, None)
        return bool(kvs)

    def check(view: View, op: Any) -> None:
        kind = op_kind(op)
        if kind == "delete":
            end = mk_gte_range(op.range_end)
            interval = (op.key, op.key + b"\x00" if end is None else (end or None))
            deleted.append(interval)
            for key in written:
                if interval[0] <= key and (interval[1] is None or key < interval[1]):
                    written[key] = False
            return
        if kind != "put":
            return
        if op.ignore_value or op.ignore_lease:
            tally.ranges += 1
            if not exists(view, op.key):
                raise KeyNotFoundError()
        if op.lease and lease_check is not None and not lease_check(op.lease):
            raise LeaseNotFoundError()
        written[op.key] = True

    return check


def _check_range(view: View, op: Any) -> None:
    if op_kind(op) != "range" or op.revision == 0:
        return
    if op.revision > view.rev:
        raise FutureRevisionError()
    if op.revision < view.first_rev:
        raise CompactedRevisionError()


def apply_txn(view: Any, r: Any, lease_check: LeaseCheck, *, write: bool, counts: OpCounts) -> TxnResult:
    """Evaluate and apply a txn on ``view`` (a write view when ``write``). The caller
    has run ``check_txn_request`` and ``check_capped``. ``counts`` gets what etcd's MVCC
    txns count (``counts``): the compares and checks in a read txn of their own when the
    txn writes, everything in one when it only reads."""
    checks = Tally()
    try:
        path = compare_to_path(view, r, checks)
        if write:
            _check_requests(view, r, path, _check_put(lease_check, checks))
        _check_requests(view, r, path, _check_range)
    except BaseException:
        counts.end(checks)
        raise
    ops = checks
    if write:
        counts.end(checks)
        ops = Tally()
    try:
        result = _run(view, r, path, lease_check, ops)
    finally:
        counts.end(ops)
    return result._replace(revision=view.rev + 1 if getattr(view, "changes", None) else view.rev)


def _run(view: Any, r: Any, path: Path, lease_check: LeaseCheck, tally: Tally) -> TxnResult:
    ok, children = path
    nested = iter(children)
    responses: list[Any] = []
    for op in r.success if ok else r.failure:
        kind = op_kind(op)
        if kind == "range":
            tally.ranges += 1
            responses.append(apply_range(view, op))
        elif kind == "put":
            responses.append(apply_put(view, op, lease_check, in_txn=True, tally=tally))
        elif kind == "delete":
            responses.append(apply_delete_range(view, op, tally))
        else:
            responses.append(_run(view, op, next(nested), lease_check, tally))
    return TxnResult(revision=0, succeeded=ok, responses=tuple(responses))
