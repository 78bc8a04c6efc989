"""SimCluster on its own: elections, replication, crashes and partitions, no nemesis."""

from __future__ import annotations

from dataclasses import replace

from kvraft.raft.types import StateRole
from kvraft.sim.cluster import SimCluster
from kvraft.sim.plan import SimPlan
from kvraft.sim.runner import run_seed
from kvraft.sim.trace import Trace
from kvraft.testing.simnet import NetFaults


def calm_plan(seed: int = 1, members: int = 3) -> SimPlan:
    return replace(
        SimPlan.from_seed(seed),
        members=members,
        faults=(),
        net=NetFaults(),
        tick_skew_ppm=(),
        snapshot_every=0,
        pre_vote=True,
        check_quorum=True,
        max_inflight_msgs=256,
        max_size_per_msg=1 << 20,
    )


def leaders(c: SimCluster) -> list[int]:
    return [m.id for m in c.live() if m.role == StateRole.LEADER]


def test_a_calm_cluster_elects_one_leader_and_replicates() -> None:
    c = SimCluster(calm_plan(), Trace())
    c.run_until(1_000_000)
    assert len(leaders(c)) == 1
    lead = c.leader()
    assert lead is not None and lead.commit > 3  # the bootstrap entries and the leader's no-op
    assert all(m.commit == lead.commit and m.applied == lead.commit for m in c.live())
    assert c.checkers.checks > 0


def test_a_crashed_follower_restarts_from_its_disk_and_catches_up() -> None:
    c = SimCluster(calm_plan(), Trace())
    c.run_until(500_000)
    lead = c.leader()
    assert lead is not None
    follower = next(m for m in c.live() if m is not lead)
    c.crash(follower)
    assert not follower.alive
    assert c.probe()
    c.run_until(700_000)
    assert c.probe_applied(lead) and not c.probe_applied(follower)
    c.restart(follower)
    c.run_until(1_000_000)
    assert follower.alive and c.probe_applied(follower)
    assert follower.disk.crashes == 1


def test_an_isolated_leader_steps_down_and_the_majority_moves_on() -> None:
    c = SimCluster(calm_plan(members=5), Trace())
    c.run_until(500_000)
    old = c.leader()
    assert old is not None
    c.net.isolate(old.id)
    c.run_until(1_500_000)
    assert old.role != StateRole.LEADER  # check-quorum
    new = c.leader()
    assert new is not None and new.id != old.id and new.term > old.term
    c.net.heal()
    c.run_until(2_000_000)
    assert old.leader == new.id and old.term == new.term


def test_a_fault_free_run_is_linearizable_and_converges_fast() -> None:
    plan = replace(calm_plan(3), safety_us=1_000_000)
    res = run_seed(3, plan=plan)
    assert res.ok, res.message
    assert res.ops > 50 and res.unknown_ops == 0
    assert res.liveness_ticks is not None and res.liveness_ticks <= 5
