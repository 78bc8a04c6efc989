"""Elastic jobs (``min_tasks`` below ``tasks``: Volcano's minAvailable, Slurm's
``--nodes=min-max``): the pass binds as many tasks as fit, at least ``min_tasks``; the run keeps
that size; its release gives the job back its full size; only the smallest size preempts or
reserves; a job that fits whole is bound whole."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.model import JobAdded, JobEvicted, JobFinished
from scheduler.profiles import profile
from scheduler.testing import cluster, make_job, make_nodes


def _elastic(job_id: str, tasks: int, low: int, gpus_per_task: int = 1, priority: int = 0):  # type: ignore[no-untyped-def]
    return replace(make_job(job_id).gang(tasks, gpus_per_task).priority(priority).obj(), min_tasks=low)


def test_an_elastic_job_takes_what_fits_and_gets_its_full_size_back_on_release() -> None:
    builder = cluster(make_nodes(2)).running(make_job("bg").gpus(10).not_preemptible(), {"n0": 8, "n1": 2})
    sched = builder.scheduler(profile("default"), jobs=[_elastic("el", 8, 4)])
    result = sched.schedule(0.0)
    (b,) = result.bindings
    assert b.job_id == "el" and len(b.placement.tasks) == 6  # 6 GPUs free: 6 of 8 tasks
    info = sched.state.jobs["el"]
    assert (info.job.tasks, info.job.gpus) == (6, 6) and info.full_job is not None
    assert sched.state.nodes["n1"].free_mask == 0
    sched.handle(JobEvicted("el", 10.0))  # preempted, requeued, ...: pending with its full size
    assert (info.job.tasks, info.job.min_tasks, info.full_job) == (8, 4, None)
    sched.handle(JobFinished("bg", 20.0))
    (b,) = sched.schedule(20.0).bindings
    assert len(b.placement.tasks) == 8 and sched.state.jobs["el"].full_job is None  # whole now


def test_below_its_minimum_it_waits_and_preempts_for_its_minimum_only() -> None:
    builder = cluster(make_nodes(1)).running(make_job("low").gpus(6).priority(0), {"n0": 6})
    sched = builder.scheduler(profile("default"), jobs=[_elastic("el", 8, 4, priority=100)])
    result = sched.schedule(0.0)
    assert result.bindings == ()  # 2 free, at least 4 needed
    (victim,) = result.preemptions
    assert victim.victim_id == "low"
    assert "needs 4 GPUs" in result.pending["el"].message or "4" in result.pending["el"].message
    assert sched.state.jobs["el"].job.tasks == 8  # pending at its full size
    not_enough = cluster(make_nodes(1)).running(make_job("keep").gpus(6).not_preemptible(), {"n0": 6})
    waiting = not_enough.scheduler(profile("default"), jobs=[_elastic("el", 8, 4)])
    assert waiting.schedule(0.0).bindings == ()
    assert waiting.state.jobs["el"].job.tasks == 8


@settings(max_examples=60, deadline=None)
@given(free=st.lists(st.integers(0, 8), min_size=1, max_size=4), tasks=st.integers(1, 24), data=st.data())
def test_the_size_bound_is_the_largest_that_fits_and_never_below_the_minimum(
        free: list[int], tasks: int, data: st.DataObject) -> None:
    """Whatever the profile's placement rules (b3's small jobs stay in one node), the size bound
    is one that fits and one task more would not: a fixed-size job of either size agrees."""
    low = data.draw(st.integers(1, tasks))
    name = data.draw(st.sampled_from(["default", "b3", "b4"]))
    nodes = make_nodes(len(free))
    builder = cluster(nodes)
    for node, n in zip(nodes, free, strict=True):
        if n < 8:
            builder.running(make_job(f"bg-{node.name}").gpus(8 - n).not_preemptible(), {node.name: 8 - n})

    def fits(size: int) -> bool:
        return bool(builder.scheduler(profile(name), jobs=[make_job("fixed").gpus(size).obj()]).schedule(0.0).bindings)

    sched = builder.scheduler(profile(name), jobs=[_elastic("el", tasks, low)])
    bound = sched.schedule(0.0).bindings
    if bound:
        size = len(bound[0].placement.tasks)
        assert low <= size <= tasks and fits(size) and (size == tasks or not fits(size + 1))
        assert sched.state.jobs["el"].job.tasks == size
    else:
        assert not fits(low) and sched.state.jobs["el"].job.tasks == tasks


def test_an_elastic_job_added_with_a_smaller_run_is_held_at_that_size() -> None:
    """A daemon that restarts finds the run bound with 5 of 8 tasks: the view gives the core
    the job at that size (ClusterView.job_model) and it holds exactly those GPUs."""
    builder = cluster(make_nodes(1))
    sched = builder.scheduler(profile("default"))
    probe = builder.scheduler(profile("default"), jobs=[replace(_elastic("el", 5, 5), min_tasks=None)])
    (b,) = probe.schedule(0.0).bindings
    sched.handle(JobAdded(replace(_elastic("el", 5, 5), min_tasks=None), placement=b.placement, bound_at_s=0.0))
    assert bin(sched.state.nodes["n0"].free_mask).count("1") == 3
