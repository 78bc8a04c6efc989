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
