"""Gang and Topology: table-driven PreFilter cases with the exact pending reasons, Permit,
queueing hints, domain and node scores."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from scheduler.framework.status import Code
from scheduler.model import Job, Level, Mode, Placement, TaskAssignment
from scheduler.plugins.gang.plugin import Gang
from scheduler.plugins.topology.plugin import TopologyArgs, TopologyPlugin
from scheduler.state import ClusterEvent
from scheduler.testing import ClusterBuilder, cluster, cycle_state, make_job, make_nodes


def busy_cluster(busy: dict[str, int]) -> ClusterBuilder:
    """Two racks of four 8-GPU nodes (n0-n3 in rack-0, n4-n7 in rack-1), some GPUs busy."""
    builder = cluster(make_nodes(8, racks=2))
    for node, gpus in busy.items():
        builder.running(make_job(f"busy-{node}").gpus(gpus), {node: gpus})
    return builder


@dataclass(frozen=True)
class PreCase:
    name: str
    job: Job
    busy: dict[str, int]
    want_code: Code
    want_message: str = ""
    want_levels: tuple[Level, ...] = ()
    args: TopologyArgs = TopologyArgs()


FULL_RACK0 = {"n0": 8, "n1": 8, "n2": 8, "n3": 8}
CASES = [
    PreCase("small fits a node", make_job("j").gpus(4).obj(), {}, Code.SUCCESS, want_levels=(Level.NODE,)),
    PreCase("large needs a rack", make_job("j").gpus(16).obj(), {}, Code.SUCCESS, want_levels=(Level.RACK,)),
    PreCase("no free node", make_job("j").gpus(8).obj(), {f"n{i}": 2 for i in range(8)}, Code.UNSCHEDULABLE,
            "needs 8 GPUs in one node; the largest free node has 6"),
    PreCase("no free rack", make_job("j").gpus(16).obj(), {**FULL_RACK0, "n4": 8, "n5": 4, "n6": 4, "n7": 4},
            Code.UNSCHEDULABLE, "needs 16 GPUs in one rack; the largest free rack has 12"),
    PreCase("rack too small", make_job("j").gpus(40).obj(), {}, Code.INFEASIBLE,
            "needs 40 GPUs in one rack; the largest has 32"),
    PreCase("node required, too big", make_job("j").gpus(16).node_required().obj(), {}, Code.INFEASIBLE,
            "needs 16 GPUs in one node; the largest node has 8"),
    PreCase("preferred falls back", make_job("j").gpus(4).topology(Level.NODE, Mode.PREFERRED).obj(), {},
            Code.SUCCESS, want_levels=(Level.NODE, Level.RACK, Level.SPINE, Level.CLUSTER)),
    PreCase("explicit rack for a small job", make_job("j").gpus(4).rack_required().obj(), {}, Code.SUCCESS,
            want_levels=(Level.NODE, Level.RACK)),
    PreCase("preferred default mode", make_job("j").gpus(16).obj(), {}, Code.SUCCESS,
            want_levels=(Level.RACK, Level.SPINE, Level.CLUSTER), args=TopologyArgs(mode="preferred")),
    PreCase("island required", make_job("j").gpus(4).topology(Level.ISLAND).obj(), {}, Code.SUCCESS,
            want_levels=(Level.ISLAND,)),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_topology_pre_filter(case: PreCase) -> None:
    state = busy_cluster(case.busy).state()
    info = make_job("x").info()
    info.job = case.job
    cs = cycle_state(state, info)
    status = TopologyPlugin(case.args).pre_filter(cs, info)
    assert status.code is case.want_code, status
    assert status.message == case.want_message
    if case.want_levels:
        assert cs.levels == case.want_levels


GANG_CASES = [
    PreCase("fits in total", make_job("j").gpus(16).obj(), {}, Code.SUCCESS),
    PreCase("too few free", make_job("j").gpus(16).obj(), {**FULL_RACK0, "n4": 8, "n5": 4, "n6": 4, "n7": 4},
            Code.UNSCHEDULABLE, "needs 16 GPUs; 12 free in the cluster"),
    PreCase("bigger than the cluster", make_job("j").gpus(65).obj(), {}, Code.INFEASIBLE,
            "needs 65 GPUs; the cluster has 64"),
    PreCase("task bigger than a node", make_job("j").gang(1, 16).obj(), {}, Code.INFEASIBLE,
            "a task needs 16 GPUs; the largest node has 8"),
]


@pytest.mark.parametrize("case", GANG_CASES, ids=lambda c: c.name)
def test_gang_pre_filter(case: PreCase) -> None:
    state = busy_cluster(case.busy).state()
    info = make_job("x").info()
    info.job = case.job
    status = Gang().pre_filter(cycle_state(state, info), info)
    assert (status.code, status.message) == (case.want_code, case.want_message)


def test_gang_permit_refuses_partial_or_double_placements() -> None:
    state = busy_cluster({}).state()
    info = make_job("j").gpus(2).info()
    cs = cycle_state(state, info)
    whole = Placement((TaskAssignment(0, "n0", (0,)), TaskAssignment(1, "n0", (1,))))
    assert Gang().permit(cs, info, whole).ok
    with pytest.raises(AssertionError, match="partial"):
        Gang().permit(cs, info, Placement((TaskAssignment(0, "n0", (0,)),)))
    with pytest.raises(AssertionError, match="twice"):
        Gang().permit(cs, info, Placement((TaskAssignment(0, "n0", (0,)), TaskAssignment(1, "n0", (0,)))))


def test_queueing_hints_skip_events_that_cannot_help() -> None:
    state = busy_cluster({**FULL_RACK0, "n4": 8, "n5": 8, "n6": 8}).state()  # 8 GPUs free on n7
    freed = {ClusterEvent.RESOURCES_FREED}
    small, big = make_job("s").gpus(8).info(), make_job("b").gpus(16).info()
    assert Gang().queueing_hint(state, small, freed)
    assert not Gang().queueing_hint(state, big, freed)
    assert Gang().queueing_hint(state, big, {ClusterEvent.PRIORITY_CHANGED})  # preemption may help
    topo = TopologyPlugin(TopologyArgs())
    assert topo.queueing_hint(state, small, freed) and not topo.queueing_hint(state, big, freed)


def test_domain_score_prefers_the_best_fitting_rack() -> None:
    state = busy_cluster({"n0": 8, "n1": 8}).state()  # rack-0 has 16 free, rack-1 has 32
    info = make_job("j").gpus(16).info()
    cs = cycle_state(state, info)
    topo = TopologyPlugin(TopologyArgs())
    from scheduler.framework.interfaces import Domain

    rack0 = Domain(Level.RACK, "rack-0", (state.racks["rack-0"],))
    rack1 = Domain(Level.RACK, "rack-1", (state.racks["rack-1"],))
    assert topo.score_domain(cs, info, rack0, 16) == 100
    assert topo.score_domain(cs, info, rack1, 32) == 50


def test_node_score_packs_nodes_then_racks() -> None:
    state = busy_cluster({"n0": 6, "n1": 2, "n4": 6}).state()
    info = make_job("j").gpus(1).info()
    cs = cycle_state(state, info)
    topo = TopologyPlugin(TopologyArgs())
    scores = {n: topo.score(cs, info, state.nodes[n], 1) for n in ("n0", "n1", "n2", "n4")}
    assert scores["n0"] > scores["n4"] > scores["n1"] > scores["n2"]  # fullest node, then fuller rack
