"""Checks etcd makes before a request enters Raft (``v3rpc/key.go``): a bad request is
refused at once, costs no log entry and no revision. The rules themselves live with the
MVCC store (``kvraft.storage.mvcc.ops``, an empty ``RequestOp`` included: it is None
there); this turns the store's errors into ``EtcdError``."""

from __future__ import annotations

from typing import Any

from kvraft.apply.errors import EtcdError, error_from_code
from kvraft.apply.ops import DeleteRangeOp, PutOp, RangeOp, TxnOp
from kvraft.storage.mvcc import ops as mvcc_ops
from kvraft.storage.mvcc.errors import MVCCError

__all__ = ["as_etcd_error", "validate_op"]


def as_etcd_error(exc: MVCCError) -> EtcdError:
    return error_from_code(exc.code, exc.message)


def validate_op(op: Any, max_txn_ops: int = 128) -> None:
    try:
        if isinstance(op, RangeOp):
            mvcc_ops.check_range_request(op)
        elif isinstance(op, PutOp):
            mvcc_ops.check_put_request(op)
        elif isinstance(op, DeleteRangeOp):
            mvcc_ops.check_delete_request(op)
        elif isinstance(op, TxnOp):
            mvcc_ops.check_txn_request(op, max_txn_ops)
    except MVCCError as exc:
        raise as_etcd_error(exc) from None
