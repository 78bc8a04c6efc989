"""The lease applier over a real store: checkpoints persist the remaining TTL (a restart
resumes from it) and write nothing when it did not change (a lease kept alive every 10 s
is checkpointed with the same remaining TTL each time: 500 LMDB writes a second at 5,000
agents for nothing)."""

from __future__ import annotations

from kvraft.apply.feature_appliers import LeaseApplier, load_leases
from kvraft.apply.feature_ops import LeaseCheckpointOp, LeaseGrantOp
from kvraft.apply.state_machine import StateMachine
from kvraft.lease import Lessor
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
