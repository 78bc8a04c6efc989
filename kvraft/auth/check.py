"""Which permission each KV request needs (etcd's ``isOpPermitted`` and friends).

Ops are matched by shape (class name), so this module needs nothing from the apply layer
above it: Range needs READ on its range; Put needs WRITE on its key (and READ with
``prev_kv``); DeleteRange WRITE on its range (READ too with ``prev_kv``); Txn READ on
every compare's range and whatever every op in both branches needs (as etcd, both
branches are checked whichever runs); Compaction any authenticated user. PURE.
"""

from __future__ import annotations

from typing import Any

from kvraft.auth.store import AuthState

__all__ = ["check_request"]


def check_request(state: AuthState, username: str, revision: int, op: Any) -> None:
    """Raise an ``AuthError`` unless ``username`` (whose token vouched for auth revision
    ``revision``; 0 = current) may run ``op``."""
    if state.check_user(username, revision):
        return
    _check(state, username, revision, op)


def _check(state: AuthState, user: str, rev: int, op: Any) -> None:
    kind = type(op).__name__
    if kind in ("RangeOp", "RangeRequest"):
        state.check_range(user, rev, op.key, op.range_end, write=False)
    elif kind in ("PutOp", "PutRequest"):
        state.check_range(user, rev, op.key, b"", write=True)
        if op.prev_kv:
            state.check_range(user, rev, op.key, b"", write=False)
    elif kind in ("DeleteRangeOp", "DeleteRangeRequest"):
        state.check_range(user, rev, op.key, op.range_end, write=True)
        if op.prev_kv:
            state.check_range(user, rev, op.key, op.range_end, write=False)
    elif kind in ("TxnOp", "TxnRequest"):
        for c in op.compare:
            state.check_range(user, rev, c.key, c.range_end, write=False)
        for sub in (*op.success, *op.failure):
            _check(state, user, rev, sub)
    elif kind == "CompactOp":
        return
    else:
        state.check_admin(user, rev)
