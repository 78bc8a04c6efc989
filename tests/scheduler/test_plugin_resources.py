"""ResourceFit and GpuType: table-driven Filter, Capacity and Score cases."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from scheduler.framework.status import Code
from scheduler.model import Job, Node
from scheduler.plugins.gputype.plugin import GpuType
from scheduler.plugins.resources.plugin import ResourceFit, ResourcesArgs
from scheduler.testing import cluster, cycle_state, make_job, make_node


@dataclass(frozen=True)
class FitCase:
    name: str
    node: Node
    job: Job
    busy: int = 0  # GPUs already used on the node
    want_code: Code = Code.SUCCESS
    want_message: str = ""
    want_capacity: int | None = None
    extra: dict[str, int] = field(default_factory=dict)


FIT_CASES = [
    FitCase("fits", make_node("n").gpus(8).obj(), make_job("j").gang(2, 4).obj(), want_capacity=2),
    FitCase("partly busy", make_node("n").gpus(8).obj(), make_job("j").gang(4, 2).obj(), busy=3,
            want_capacity=2),
    FitCase("no gpus", make_node("n").gpus(8).obj(), make_job("j").gang(1, 4).obj(), busy=6,
            want_code=Code.UNSCHEDULABLE, want_message="insufficient free GPUs"),
    FitCase("cpu bound", make_node("n").gpus(8).cpu(8000).obj(), make_job("j").gang(8, 1).cpu(3000).obj(),
            want_capacity=2),
    FitCase("no cpu", make_node("n").gpus(8).cpu(1000).obj(), make_job("j").gpus(1).cpu(2000).obj(),
            want_code=Code.UNSCHEDULABLE, want_message="insufficient free CPU"),
    FitCase("no memory", make_node("n").gpus(8).memory(1024).obj(), make_job("j").gpus(1).memory(2048).obj(),
            want_code=Code.UNSCHEDULABLE, want_message="insufficient free memory"),
    FitCase("unhealthy", make_node("n").gpus(8).unhealthy().obj(), make_job("j").gpus(1).obj(),
            want_code=Code.UNRESOLVABLE, want_message="node unhealthy"),
    FitCase("cordoned", make_node("n").gpus(8).cordoned().obj(), make_job("j").gpus(1).obj(),
            want_code=Code.UNRESOLVABLE, want_message="node cordoned"),
    FitCase("cpu-only task", make_node("n").gpus(0).cpu(4000).obj(), make_job("j").gang(3, 0).cpu(1000).obj(),
            want_capacity=4),
]


@pytest.mark.parametrize("case", FIT_CASES, ids=lambda c: c.name)
def test_resource_fit(case: FitCase) -> None:
    builder = cluster([case.node])
    if case.busy:
        builder.running(make_job("busy").gpus(case.busy), {case.node.name: case.busy})
    state = builder.state()
    info = make_job(case.job.job_id).info()
    info.job = case.job
    plugin = ResourceFit(ResourcesArgs())
    cs = cycle_state(state, info)
    status = plugin.filter(cs, info, state.nodes[case.node.name])
    assert status.code is case.want_code
    assert case.want_message in status.message
    if case.want_capacity is not None:
        assert plugin.capacity(cs, info, state.nodes[case.node.name]) == case.want_capacity


@dataclass(frozen=True)
class ScoreCase:
    name: str
    scoring: str
    busy: int
    tasks_here: int
    want: int


SCORE_CASES = [
    ScoreCase("least allocated, empty node", "least_allocated", 0, 1, 88),
    ScoreCase("least allocated, busy node", "least_allocated", 6, 1, 12),
    ScoreCase("most allocated, busy node", "most_allocated", 6, 1, 88),
    ScoreCase("most allocated, second task", "most_allocated", 6, 2, 100),
    ScoreCase("none", "none", 6, 1, 0),
]


@pytest.mark.parametrize("case", SCORE_CASES, ids=lambda c: c.name)
def test_resource_scores(case: ScoreCase) -> None:
    builder = cluster([make_node("n").gpus(8).obj()])
    if case.busy:
        builder.running(make_job("busy").gpus(case.busy), {"n": case.busy})
    state = builder.state()
    info = make_job("j").gpus(2).info()
    plugin = ResourceFit(ResourcesArgs(scoring=case.scoring))
    assert plugin.score(cycle_state(state, info), info, state.nodes["n"], case.tasks_here) == case.want


@dataclass(frozen=True)
class TypeCase:
    name: str
    node: Node
    job: Job
    want_code: Code


TYPE_CASES = [
    TypeCase("any type", make_node("n").gpus(8, "T4").obj(), make_job("j").gpus(1).obj(), Code.SUCCESS),
    TypeCase("same type", make_node("n").gpus(8, "T4").obj(), make_job("j").gpus(1).gpu_type("T4").obj(), Code.SUCCESS),
    TypeCase("other type", make_node("n").gpus(8, "T4").obj(), make_job("j").gpus(1).gpu_type("A100").obj(),
             Code.UNRESOLVABLE),
    TypeCase("selector matches", make_node("n").label("zone", "a").obj(), make_job("j").selector("zone", "a").obj(),
             Code.SUCCESS),
    TypeCase("selector differs", make_node("n").label("zone", "a").obj(), make_job("j").selector("zone", "b").obj(),
             Code.UNRESOLVABLE),
]


@pytest.mark.parametrize("case", TYPE_CASES, ids=lambda c: c.name)
def test_gpu_type_filter(case: TypeCase) -> None:
    state = cluster([case.node]).state()
    info = make_job("x").info()
    info.job = case.job
    assert GpuType().filter(cycle_state(state, info), info, state.nodes["n"]).code is case.want_code


def test_gpu_type_pre_filter_says_infeasible_with_known_types() -> None:
    state = cluster([make_node("a").gpus(8, "T4").obj(), make_node("b").gpus(8, "V100").obj()]).state()
    info = make_job("j").gpus(1).gpu_type("A100").info()
    status = GpuType().pre_filter(cycle_state(state, info), info)
    assert status.code is Code.INFEASIBLE
    assert status.message == "no usable node has GPU type A100 (types: T4, V100)"
