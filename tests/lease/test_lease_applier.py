"""The lease applier over a real store: checkpoints persist the remaining TTL (a restart
resumes from it) and write nothing when it did not change (a lease kept alive every 10 s
is checkpointed with the same remaining TTL each time: 500 LMDB writes a second at 5,000
agents for nothing)."""

from __future__ import annotations

import pytest

from kvraft.apply.errors import ResourceExhausted
from kvraft.apply.feature_appliers import LeaseApplier, load_leases
from kvraft.apply.feature_ops import LeaseCheckpointOp, LeaseGrantOp
from kvraft.apply.state_machine import StateMachine
from kvraft.lease import Lessor
from kvraft.lease.lessor import LeaseTTLTooLarge
from kvraft.server.membership import Membership


def test_checkpoints_persist_only_a_changed_remaining_ttl(tmp_path) -> None:
    sm = StateMachine(tmp_path, quota_bytes=1 << 30, member_id=1, max_txn_ops=128, membership=Membership())
    try:
        lessor = Lessor(min_ttl_s=1)
        applier = LeaseApplier(sm.chain, sm.store, lessor, lambda: 0.0)
        writes: list[int] = []
        persist = applier._persist
        applier._persist = lambda lease_id: (writes.append(lease_id), persist(lease_id))  # type: ignore[method-assign]

        def apply(op: object) -> None:
            with sm.store.batch():
                applier.apply(op)

        apply(LeaseGrantOp(5, 40))
        apply(LeaseCheckpointOp([[5, 40]]))
        assert writes == [5, 5]
        for _ in range(3):  # kept alive: the same remaining TTL each time
            apply(LeaseCheckpointOp([[5, 40]]))
        assert writes == [5, 5]
        apply(LeaseCheckpointOp([[5, 31], [99, 7]]))  # 99: revoked meanwhile, ignored
        assert writes == [5, 5, 5]
        sm.commit()
        assert load_leases(sm.store) == [(5, 40, 31)]
        restarted = Lessor(min_ttl_s=1)
        restarted.restore(load_leases(sm.store), 100.0)
        assert restarted.remaining(5, 100.0) == 31
    finally:
        sm.close()


def test_a_negative_lease_id_is_granted_persisted_and_restored(tmp_path) -> None:
    """etcd takes any int64 lease ID (``{"ID": "-7"}`` is granted as -7) and keys its lease
    bucket by the ID's 64-bit pattern. The grant used to raise OverflowError in the apply
    (``to_bytes`` of a negative int), which stopped every member that applied it."""
    sm = StateMachine(tmp_path, quota_bytes=1 << 30, member_id=1, max_txn_ops=128, membership=Membership())
    try:
        lessor = Lessor(min_ttl_s=1)
        applier = LeaseApplier(sm.chain, sm.store, lessor, lambda: 0.0)
        with sm.store.batch():
            result = applier.apply(LeaseGrantOp(-7, 40))
        assert result.id == -7
        with sm.store.batch():
            applier.apply(LeaseGrantOp(-(2**63), 40))
        sm.commit()
        assert sorted(lease_id for lease_id, _, _ in load_leases(sm.store)) == [-(2**63), -7]
    finally:
        sm.close()


def test_ttl_too_large_is_refused_before_an_existing_id() -> None:
    """etcd's lessor checks the TTL before the ID: a too-large TTL for an existing lease is
    'too large lease TTL', not 'lease already exists'."""
    lessor = Lessor(min_ttl_s=1)
    lessor.grant(5, 40, 0.0)
    with pytest.raises(LeaseTTLTooLarge):
        lessor.grant(5, 9_000_000_001, 0.0)


def test_no_grant_while_the_nospace_alarm_is_raised(tmp_path) -> None:
    """etcd's capped applier refuses every lease grant while NOSPACE is raised, before the
    TTL or the ID is looked at; kvraft granted (found by the randomized etcd comparison)."""
    sm = StateMachine(tmp_path, quota_bytes=1 << 30, member_id=1, max_txn_ops=128, membership=Membership())
    try:
        lessor = Lessor(min_ttl_s=1)
        applier = LeaseApplier(sm.chain, sm.store, lessor, lambda: 0.0)
        with sm.store.batch():
            applier.apply(LeaseGrantOp(5, 40))
        sm.store.set_nospace_alarm(True)
        for op in (LeaseGrantOp(6, 40), LeaseGrantOp(5, 40), LeaseGrantOp(7, 9_000_000_001)):
            with pytest.raises(ResourceExhausted, match="database space exceeded"), sm.store.batch():
                applier.apply(op)
        assert sorted(lessor.leases) == [5]
        sm.store.set_nospace_alarm(False)
        with sm.store.batch():
            applier.apply(LeaseGrantOp(6, 40))
        assert sorted(lessor.leases) == [5, 6]
    finally:
        sm.close()
