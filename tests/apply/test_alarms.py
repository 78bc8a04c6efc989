"""Alarms as etcd's alarm store keeps them: one entry per (member, type); NOSPACE caps
writes until the last NOSPACE entry is deactivated (found by the randomized etcd
comparison: kvraft kept one flag, so any member's DEACTIVATE cleared every member's alarm,
an ACTIVATE of type NONE was dropped, and GET listed one member only)."""

from __future__ import annotations

import pytest

from kvraft.apply.errors import ResourceExhausted
from kvraft.apply.ops import AlarmOp, PutOp
from kvraft.apply.state_machine import StateMachine
from kvraft.server.membership import Membership

GET, ACTIVATE, DEACTIVATE = 0, 1, 2
NONE, NOSPACE = 0, 1


def test_alarms_are_kept_per_member_and_type(tmp_path) -> None:
    sm = StateMachine(tmp_path, quota_bytes=1 << 30, member_id=1, max_txn_ops=128, membership=Membership())
    try:
        def apply(op: object) -> object:
            with sm.store.batch():
                return sm.chain.apply(op)

        assert apply(AlarmOp(ACTIVATE, 5, NOSPACE)) == [(5, NOSPACE)]
        assert apply(AlarmOp(ACTIVATE, 5, NOSPACE)) == [(5, NOSPACE)]  # already raised: answered again
        assert apply(AlarmOp(ACTIVATE, 6, NOSPACE)) == [(6, NOSPACE)]
        assert apply(AlarmOp(ACTIVATE, 6, NONE)) == [(6, NONE)]
        assert sm.alarms() == [(5, NOSPACE), (6, NONE), (6, NOSPACE)]
        assert sm.alarms(NOSPACE) == [(5, NOSPACE), (6, NOSPACE)]
        assert apply(AlarmOp(DEACTIVATE, 5, NOSPACE)) == [(5, NOSPACE)]
        assert apply(AlarmOp(DEACTIVATE, 5, NOSPACE)) == []  # not raised: nothing
        with pytest.raises(ResourceExhausted):  # member 6's NOSPACE still caps writes
            apply(PutOp(b"k", b"v"))
        assert apply(AlarmOp(DEACTIVATE, 6, NOSPACE)) == [(6, NOSPACE)]
        apply(PutOp(b"k", b"v"))
        assert sm.alarms() == [(6, NONE)]
        assert not sm.store.nospace_alarm
    finally:
        sm.close()


CORRUPT = 2


def _machine(path) -> StateMachine:
    return StateMachine(path, quota_bytes=1 << 30, member_id=1, max_txn_ops=128, membership=Membership())


def test_alarms_survive_a_restart_with_who_raised_them(tmp_path) -> None:
    """etcd keeps its alarms in the backend's alarm bucket; kvraft kept a NOSPACE flag only,
    so a restart forgot the member and every other alarm."""
    sm = _machine(tmp_path)
    with sm.store.batch():
        sm.chain.apply(AlarmOp(ACTIVATE, 7, NOSPACE))
        sm.chain.apply(AlarmOp(ACTIVATE, 9, CORRUPT))
        sm.chain.apply(AlarmOp(ACTIVATE, 9, NONE))
    sm.close()
    sm = _machine(tmp_path)
    try:
        assert sm.alarms() == [(7, NOSPACE), (9, NONE), (9, CORRUPT)]
        assert sm.store.nospace_alarm and sm.store.corrupt_alarm
        with sm.store.batch():
            sm.chain.apply(AlarmOp(DEACTIVATE, 9, CORRUPT))
    finally:
        sm.close()
    sm = _machine(tmp_path)
    try:
        assert sm.alarms() == [(7, NOSPACE), (9, NONE)]
        assert not sm.store.corrupt_alarm
    finally:
        sm.close()


def test_a_store_with_the_old_nospace_flag_reads_it_as_member_0s_alarm(tmp_path) -> None:
    from kvraft.storage.schema import BUCKET_META, META_NOSPACE_ALARM, encode_meta

    sm = _machine(tmp_path)
    with sm.store.backend.batch() as batch:  # what a store written before the alarm bucket holds
        batch.txn.put(META_NOSPACE_ALARM, encode_meta(META_NOSPACE_ALARM, b"\x01"), db=batch.dbis[BUCKET_META])
    sm.close()
    sm = _machine(tmp_path)
    try:
        assert sm.alarms() == [(0, NOSPACE)]
        with sm.store.batch():
            assert sm.chain.apply(AlarmOp(DEACTIVATE, 0, NOSPACE)) == [(0, NOSPACE)]
    finally:
        sm.close()
    sm = _machine(tmp_path)  # the flag went with the alarm: it does not come back
    try:
        assert sm.alarms() == []
    finally:
        sm.close()


def test_an_alarm_change_rolls_back_with_its_batch(tmp_path) -> None:
    sm = _machine(tmp_path)
    try:
        with pytest.raises(RuntimeError), sm.store.batch():
            sm.chain.apply(AlarmOp(ACTIVATE, 3, CORRUPT))
            raise RuntimeError("the commit fails")
        assert sm.alarms() == [] and not sm.store.corrupt_alarm
    finally:
        sm.close()


def test_with_a_corrupt_alarm_writes_fail_with_data_loss_and_the_alarm_can_be_disarmed(tmp_path) -> None:
    """etcd's applierV3Corrupt: every put, delete, txn, compaction, lease grant and revoke
    fails with "etcdserver: corrupt cluster" (gRPC DataLoss); alarms still apply."""
    from kvraft.apply.errors import DataLoss
    from kvraft.apply.feature_appliers import LeaseApplier
    from kvraft.apply.feature_ops import LeaseExpireOp, LeaseGrantOp, LeaseRevokeOp
    from kvraft.apply.ops import BatchOp, CompactOp, DeleteRangeOp, TxnOp
    from kvraft.lease import Lessor

    sm = _machine(tmp_path)
    try:
        lessor = Lessor(min_ttl_s=1)
        sm.wrap_chain(lambda chain: LeaseApplier(chain, sm.store, lessor, lambda: 0.0))

        def apply(op: object) -> object:
            with sm.store.batch():
                return sm.chain.apply(op)

        apply(PutOp(b"k", b"v"))
        apply(LeaseGrantOp(5, 40))
        assert apply(AlarmOp(ACTIVATE, 4, CORRUPT)) == [(4, CORRUPT)]
        refused = [
            PutOp(b"k", b"w"), DeleteRangeOp(b"k"), TxnOp([], [PutOp(b"k", b"w")], []), CompactOp(2),
            LeaseGrantOp(6, 40), LeaseRevokeOp(5), LeaseExpireOp(5),
        ]
        for op in refused:
            with pytest.raises(DataLoss, match="^etcdserver: corrupt cluster$"):
                apply(op)
        results = apply(BatchOp([PutOp(b"a", b"1"), PutOp(b"b", b"2")]))
        assert [type(r) for r in results] == [DataLoss, DataLoss]
        assert sm.store.range(b"k").kvs[0].value == b"v" and sm.store.rev == 2
        assert sorted(lessor.leases) == [5]
        assert apply(AlarmOp(DEACTIVATE, 4, CORRUPT)) == [(4, CORRUPT)]
        apply(PutOp(b"k", b"w"))
        apply(LeaseGrantOp(6, 40))
        assert sm.store.range(b"k").kvs[0].value == b"w" and sorted(lessor.leases) == [5, 6]
    finally:
        sm.close()
