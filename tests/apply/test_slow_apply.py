"""etcd's "apply request took too long": an op whose apply, or a read whose store work,
takes longer than ``WARN_APPLY_S`` (100 ms) is counted in ``slow_applies``
(``etcd_server_slow_apply_total``) and logged with how long it took and which request it was
(values by size only); faster ones are not."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest

from kvraft.apply.chain import Applier
from kvraft.apply.errors import EtcdError
from kvraft.apply.feature_ops import AuthedOp, AuthOp, LeaseGrantOp, LeaseRevokeOp
from kvraft.apply.ops import (
    BatchOp,
    CompactOp,
    DeleteRangeOp,
    PutOp,
    RangeOp,
    SessionOp,
    TxnOp,
    op_name,
    op_to_wire,
)
from kvraft.apply.state_machine import WARN_APPLY_S, StateMachine
from kvraft.server.membership import Membership


class Slow(Applier):
    """Sleeps past the threshold before applying a put to b"slow"."""

    def __init__(self, inner: Applier) -> None:
        self.inner = inner

    def apply(self, op: Any) -> Any:
        if isinstance(op, PutOp) and op.key == b"slow":
            time.sleep(WARN_APPLY_S * 1.5)
        return self.inner.apply(op)


def machine(path: Path) -> StateMachine:
    sm = StateMachine(path, quota_bytes=1 << 30, member_id=1, max_txn_ops=128, membership=Membership())
    sm.wrap_chain(Slow)
    return sm


def warnings(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [r.fields for r in caplog.records if r.getMessage() == "apply request took too long"]  # type: ignore[attr-defined]


def test_a_slow_apply_is_counted_and_logged_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sm = machine(tmp_path)
    caplog.set_level(logging.WARNING, "kvraft.apply.state_machine")
    try:
        sm.apply_ops([(1, PutOp(b"fast", b"v")), (2, PutOp(b"slow", b"secret")), (3, PutOp(b"fast", b"w"))], 2, 1)
        assert sm.slow_applies == 1
        [fields] = warnings(caplog)
        assert fields["request"] == 'put key:"slow" value_size:6' and "secret" not in str(fields)
        assert fields["expected-duration"] == "100ms" and fields["prefix"] == ""
        assert float(fields["took"].removesuffix("ms")) >= WARN_APPLY_S * 1000
    finally:
        sm.close()


def test_slow_reads_are_counted_with_etcds_prefixes(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    sm = machine(tmp_path)
    caplog.set_level(logging.WARNING, "kvraft.apply.state_machine")
    try:
        sm.apply_ops([(1, PutOp(b"k", b"v"))], 2, 1)
        sm.range(RangeOp(b"k"))
        assert sm.slow_applies == 0
        real = sm.store.range_request

        def slow_range(op: Any) -> Any:
            time.sleep(WARN_APPLY_S * 1.5)
            return real(op)

        monkeypatch.setattr(sm.store, "range_request", slow_range)
        assert sm.range(RangeOp(b"k")).kvs[0].value == b"v"
        real_txn = sm.store.txn_request
        monkeypatch.setattr(sm.store, "txn_request", lambda op: (time.sleep(WARN_APPLY_S * 1.5), real_txn(op))[1])
        sm.txn_read_only(TxnOp(success=[RangeOp(b"k")]))
        assert sm.slow_applies == 2
        assert [f["prefix"] for f in warnings(caplog)] == ["read-only range ", "read-only txn "]
        assert [f["request"] for f in warnings(caplog)] == ['range key:"k"', "txn compare:0 success:1 failure:0"]
    finally:
        sm.close()


@pytest.mark.parametrize(("op", "name"), [
    (PutOp(b"k", b"v"), "Put"),
    (RangeOp(key=b"k"), "Range"),
    (DeleteRangeOp(key=b"k"), "DeleteRange"),
    (TxnOp([], [], []), "Txn"),
    (CompactOp(5), "Compaction"),
    (LeaseGrantOp(60, 7), "LeaseGrant"),
    (LeaseRevokeOp(7), "LeaseRevoke"),
    (AuthOp("user_add", ["alice"]), "AuthUserAdd"),
    (AuthOp("enable", []), "AuthEnable"),
    (AuthedOp("alice", 3, op_to_wire(PutOp(b"k", b"v"))), "Put"),
    (AuthedOp("alice", 3, op_to_wire(TxnOp([], [], []))), "Txn"),
    (SessionOp(client=1, seq=2, op=DeleteRangeOp(key=b"k")), "DeleteRange"),
    (BatchOp([PutOp(b"k", b"v")]), "Batch"),
])  # fmt: skip
def test_ops_are_named_as_etcds_apply_metric_names_them(op: Any, name: str) -> None:
    assert op_name(op) == name


def test_each_apply_and_read_is_timed_by_op_and_outcome(tmp_path: Path) -> None:
    """``etcd_server_apply_duration_seconds{op,success}``: a failed op is one that ended in an
    error, but a compacted revision counts as a success (etcd's rule);
    ``etcd_server_range_duration_seconds{success}`` times the reads served."""
    sm = machine(tmp_path)
    try:
        sm.apply_ops([(1, PutOp(b"a", b"1")), (2, PutOp(b"a", b"2")), (3, CompactOp(3))], 2, 1)
        sm.apply_ops([(4, RangeOp(key=b"a", revision=2)),  # compacted: still a success
                      (5, RangeOp(key=b"a", revision=99)),  # a future revision: a failure
                      (6, SessionOp(client=1, seq=1, op=PutOp(b"b", b"1")))], 3, 1)
        counts = {key: hist.count for key, hist in sm.apply_seconds.items()}
        assert counts == {("Put", True): 3, ("Compaction", True): 1, ("Range", True): 1, ("Range", False): 1}
        sm.range(RangeOp(key=b"a"))
        with pytest.raises(EtcdError):
            sm.range(RangeOp(key=b"a", revision=99))
        assert (sm.range_seconds[True].count, sm.range_seconds[False].count) == (1, 1)
    finally:
        sm.close()
