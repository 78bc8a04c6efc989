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
from kvraft.apply.ops import PutOp, RangeOp, TxnOp
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
