"""ClusterState: events build it, allocations keep every aggregate consistent."""

from __future__ import annotations

import pytest

from scheduler.model import (
    BindFailed,
    JobAdded,
    JobBound,
    JobDeleted,
    JobEvicted,
    JobFinished,
    JobUpdated,
    NodeDeleted,
    NodeUpdated,
    Placement,
    TaskAssignment,
    Tenant,
    TenantUpdated,
)
from scheduler.state import ClusterEvent, ClusterState, Phase, Reservation
from scheduler.testing import cluster, make_job, make_node, make_nodes


def check_aggregates(state: ClusterState) -> None:
    """Recompute every aggregate from the nodes and compare."""
    free_by_type: dict[str, int] = {}
    for rack in state.racks.values():
        hist: dict[str, list[int]] = {}
        cap = free = 0
        for node in rack.nodes.values():
            assert node.free_gpus == node.free_mask.bit_count()
            assert node.free_mask & ~node.full_mask == 0
            if not node.usable:
                assert not node.indexed
                continue
            counts = hist.setdefault(node.node.gpu_type, [0] * (node.node.gpus + 1))
            while len(counts) <= node.node.gpus:
                counts.append(0)
            counts[node.free_gpus] += 1
            cap += node.node.gpus
            free += node.free_gpus
            free_by_type[node.node.gpu_type] = free_by_type.get(node.node.gpu_type, 0) + node.free_gpus
            assert node.name in state.index.buckets[node.node.gpu_type][node.free_gpus]
        assert rack.capacity_gpus == cap and rack.free_gpus == free
        for kind, counts in hist.items():
            have = rack.hist[kind]
            assert have[: len(counts)] == counts and not any(have[len(counts):])
    assert {k: v for k, v in state.free_by_type.items() if v} == {k: v for k, v in free_by_type.items() if v}
    assert state.allocated_gpus == sum(state.tenant_gpus.values())
    for job_id, info in state.running.items():
        assert info.phase is Phase.RUNNING and job_id not in state.pending


def place(*parts: tuple[str, tuple[int, ...]]) -> Placement:
    return Placement(tuple(TaskAssignment(i, node, gpus) for i, (node, gpus) in enumerate(parts)))


def test_nodes_and_jobs_build_state() -> None:
    state = cluster(make_nodes(4, racks=2)).state()
    assert sorted(state.racks) == ["rack-0", "rack-1"]
    assert state.free_gpus() == 32 and state.total_gpus() == 32
    state.handle(JobAdded(make_job("a").gpus(3).obj()))
    assert "a" in state.pending
    state.allocate("a", place(("n0", (0,)), ("n0", (1,)), ("n1", (5,))), at_s=10.0)
    assert state.nodes["n0"].free_gpus == 6 and state.nodes["n1"].free_gpus == 7
    assert state.free_gpus() == 29 and state.tenant_gpus["default"] == 3
    assert state.racks["rack-0"].task_capacity(4, None) == 1 + 1
    check_aggregates(state)
    assert state.handle(JobFinished("a", 20.0)) == {ClusterEvent.RESOURCES_FREED}
    assert "a" not in state.jobs and state.free_gpus() == 32
    check_aggregates(state)


def test_allocating_a_busy_gpu_or_a_partial_gang_is_a_bug() -> None:
    state = cluster(make_nodes(1)).state()
    state.handle(JobAdded(make_job("a").gpus(2).obj()))
    state.handle(JobAdded(make_job("b").gpus(2).obj()))
    with pytest.raises(AssertionError, match="partial"):
        state.allocate("a", place(("n0", (0,))), 0.0)
    state.allocate("a", place(("n0", (0,)), ("n0", (1,))), 0.0)
    with pytest.raises(AssertionError, match="not free"):
        state.allocate("b", place(("n0", (1,)), ("n0", (2,))), 0.0)


def test_eviction_banks_attained_service_and_requeues() -> None:
    state = cluster(make_nodes(1)).state()
    state.handle(JobAdded(make_job("a").gpus(2).obj()))
    state.allocate("a", place(("n0", (0,)), ("n0", (1,))), 100.0)
    assert state.jobs["a"].attained_at(160.0) == 120.0
    epoch = state.epoch
    state.handle(JobEvicted("a", 160.0))
    info = state.jobs["a"]
    assert info.phase is Phase.PENDING and info.evictions == 1 and info.attained_gpu_s == 120.0
    assert info.pending_since_s == 160.0 and state.epoch > epoch
    check_aggregates(state)


def test_bind_confirmation_failure_and_foreign_binding() -> None:
    state = cluster(make_nodes(2)).state()
    state.handle(JobAdded(make_job("a").gpus(1).obj()))
    ours = place(("n0", (0,)))
    state.allocate("a", ours, 1.0)
    assert state.handle(JobBound("a", ours, 1.0)) == set() and state.jobs["a"].confirmed
    state.handle(BindFailed("a", 2.0))  # e.g. the txn lost a race after all
    assert state.jobs["a"].phase is Phase.PENDING and state.free_gpus() == 16
    elsewhere = place(("n1", (7,)))
    state.handle(JobBound("a", elsewhere, 3.0))  # another scheduler instance bound it
    assert state.jobs["a"].placement == elsewhere and state.nodes["n1"].free_gpus == 7
    check_aggregates(state)


def test_node_updates_keep_allocations_and_index() -> None:
    node = make_node("n0").gpus(8).obj()
    state = cluster([node]).state()
    state.handle(JobAdded(make_job("a").gpus(2).obj()))
    state.allocate("a", place(("n0", (0,)), ("n0", (1,))), 0.0)
    assert state.handle(NodeUpdated(make_node("n0").gpus(8).unhealthy().obj())) == {ClusterEvent.NODE_CHANGED}
    assert state.free_gpus() == 0 and not state.nodes["n0"].indexed
    check_aggregates(state)
    assert state.handle(NodeUpdated(node)) == {ClusterEvent.NODE_ADDED}  # healed
    assert state.free_gpus() == 6
    state.handle(NodeUpdated(make_node("n0").gpus(8).rack("rack-9").obj()))
    assert "n0" in state.racks["rack-9"].nodes and "n0" not in state.racks["rack-0"].nodes
    check_aggregates(state)
    state.handle(NodeDeleted("n0"))
    assert state.free_gpus() == 0 and "n0" not in state.nodes


def test_updates_cannot_reshape_a_running_job() -> None:
    state = cluster(make_nodes(1)).state()
    state.handle(JobAdded(make_job("a").gpus(1).obj()))
    state.allocate("a", place(("n0", (0,))), 0.0)
    assert state.handle(JobUpdated(make_job("a").gpus(1).priority(3).obj())) == {ClusterEvent.PRIORITY_CHANGED}
    with pytest.raises(ValueError, match="shape"):
        state.handle(JobUpdated(make_job("a").gpus(2).obj()))


def test_reservations_hold_and_release() -> None:
    state = cluster(make_nodes(2)).state()
    state.handle(JobAdded(make_job("big").gpus(8).obj()))
    state.add_reservation(Reservation("big", {"n0": 8}, None, "backfill", 0.0, "n0"))
    assert state.nodes["n0"].held_gpus == 8 and state.nodes["n0"].holds == {"big": 8}
    epoch = state.epoch
    state.allocate("big", place(*[("n0", (i,)) for i in range(8)]), 5.0)  # placing drops it
    assert state.reservations == {} and state.nodes["n0"].held_gpus == 0 and state.epoch > epoch
    state.handle(JobAdded(make_job("c").gpus(1).obj()))
    state.add_reservation(Reservation("c", {"n1": 1}, None, "backfill", 0.0, "n1"))
    state.handle(JobDeleted("c"))
    assert state.nodes["n1"].holds == {}


def test_tenants_and_usage() -> None:
    state = cluster(make_nodes(1)).state()
    state.handle(TenantUpdated(Tenant("vc1", 4)))
    state.handle(JobAdded(make_job("a").gpus(3).tenant("vc1").obj()))
    state.allocate("a", place(*[("n0", (i,)) for i in range(3)]), 0.0)
    assert state.tenant_gpus == {"vc1": 3} and state.tenants["vc1"].nominal_gpus == 4


def test_free_index_is_tightest_first_and_typed() -> None:
    nodes = [make_node("a").gpus(8, "A100").obj(), make_node("b").gpus(4, "T4").obj(),
             make_node("c").gpus(8, "A100").obj()]
    state = cluster(nodes).state()
    state.handle(JobAdded(make_job("x").gpus(5).obj()))
    state.allocate("x", place(*[("c", (i,)) for i in range(5)]), 0.0)
    assert [n.name for n in state.index.candidates(2, None)] == ["c", "b", "a"]
    assert [n.name for n in state.index.candidates(2, "A100")] == ["c", "a"]
    assert [n.name for n in state.index.candidates(4, "T4")] == ["b"]
    assert state.index.max_free("A100") == 8 and state.index.max_free("T4") == 4
    assert state.largest_node_gpus("T4") == 4 and state.total_gpus("A100") == 16
