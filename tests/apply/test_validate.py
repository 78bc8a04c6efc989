"""``validate_op``: etcd's request checks (``v3rpc/key.go``), in etcd's order, so that a
request with several faults gets the error etcd gives."""

from __future__ import annotations

import pytest

from kvraft.apply.errors import EtcdError
from kvraft.apply.ops import Compare, PutOp, RangeOp, TxnOp
from kvraft.apply.validate import validate_op


def message(op: object) -> str:
    with pytest.raises(EtcdError) as info:
        validate_op(op)
    return str(info.value.message)


def test_an_empty_request_op_is_checked_in_its_turn() -> None:
    """etcd checks the compares' keys first, then each op in order; an empty RequestOp
    (``{}``) is 'key not found' where it stands. kvraft checked every empty op before
    anything else, so a txn with an empty compare key and an empty op answered 'key not
    found' where etcd answers 'key is not provided' (found by the randomized comparison)."""
    empty_compare_key = TxnOp(compare=[Compare(key=b"")], success=[RangeOp(key=b"a"), None])
    assert message(empty_compare_key) == "etcdserver: key is not provided"
    bad_op_first = TxnOp(success=[PutOp(key=b""), None])
    assert message(bad_op_first) == "etcdserver: key is not provided"
    assert message(TxnOp(success=[RangeOp(key=b"a"), None])) == "etcdserver: key not found"
    nested = TxnOp(failure=[TxnOp(success=[None]), PutOp(key=b"")])
    assert message(nested) == "etcdserver: key not found"
