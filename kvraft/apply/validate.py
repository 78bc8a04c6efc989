"""Checks etcd makes before a request enters Raft (``v3rpc/key.go``): a bad request is
refused at once, costs no log entry and no revision."""

from __future__ import annotations

from typing import Any

from kvraft.apply.errors import InvalidArgument
from kvraft.apply.ops import CompactOp, DeleteRangeOp, PutOp, RangeOp, TxnOp

__all__ = ["validate_op"]

KEY_NOT_PROVIDED = "etcdserver: key is not provided"


def _check_range(op: RangeOp) -> None:
    if not op.key:
        raise InvalidArgument(KEY_NOT_PROVIDED)
    if op.sort_order not in (0, 1, 2) or op.sort_target not in (0, 1, 2, 3, 4):
        raise InvalidArgument("etcdserver: invalid sort option")


def _check_put(op: PutOp) -> None:
    if not op.key:
        raise InvalidArgument(KEY_NOT_PROVIDED)
    if op.ignore_value and op.value:
        raise InvalidArgument("etcdserver: value is provided")
    if op.ignore_lease and op.lease:
        raise InvalidArgument("etcdserver: lease is provided")


def _check_delete(op: DeleteRangeOp) -> None:
    if not op.key:
        raise InvalidArgument(KEY_NOT_PROVIDED)


def _in_range(key: bytes, start: bytes, end: bytes) -> bool:
    if not end:
        return key == start
    if end == b"\0":
        return key >= start
    return start <= key < end


def _intervals(txn: TxnOp, max_ops: int) -> tuple[list[tuple[bytes, bytes]], set[bytes]]:
    """etcd's ``checkIntervals``: per branch, a key may be put once and not both put and
    deleted; returns the union of both branches' deletes and puts for the enclosing level."""
    all_dels: list[tuple[bytes, bytes]] = []
    all_puts: set[bytes] = set()
    for branch in (txn.success, txn.failure):
        dels: list[tuple[bytes, bytes]] = []
        puts: set[bytes] = set()
        for op in branch:
            if isinstance(op, PutOp):
                if op.key in puts:
                    raise InvalidArgument("etcdserver: duplicate key given in txn request")
                puts.add(op.key)
            elif isinstance(op, DeleteRangeOp):
                dels.append((op.key, op.range_end))
            elif isinstance(op, TxnOp):
                nested_dels, nested_puts = _intervals(op, max_ops)
                if puts & nested_puts:
                    raise InvalidArgument("etcdserver: duplicate key given in txn request")
                puts |= nested_puts
                dels.extend(nested_dels)
        for key in puts:
            if any(_in_range(key, start, end) for start, end in dels):
                raise InvalidArgument("etcdserver: duplicate key given in txn request")
        all_dels.extend(dels)
        all_puts |= puts
    return all_dels, all_puts


def _check_txn(op: TxnOp, max_ops: int) -> None:
    if len(op.compare) > max_ops or len(op.success) > max_ops or len(op.failure) > max_ops:
        raise InvalidArgument("etcdserver: too many operations in txn request")
    for compare in op.compare:
        if not compare.key:
            raise InvalidArgument(KEY_NOT_PROVIDED)
    for branch in (op.success, op.failure):
        for item in branch:
            if item is None:
                raise InvalidArgument("etcdserver: key not found")
            if isinstance(item, TxnOp):
                _check_txn(item, max_ops)
            else:
                validate_op(item, max_ops)
    _intervals(op, max_ops)


def validate_op(op: Any, max_txn_ops: int = 128) -> None:
    if isinstance(op, RangeOp):
        _check_range(op)
    elif isinstance(op, PutOp):
        _check_put(op)
    elif isinstance(op, DeleteRangeOp):
        _check_delete(op)
    elif isinstance(op, TxnOp):
        _check_txn(op, max_txn_ops)
    elif isinstance(op, CompactOp):
        return
