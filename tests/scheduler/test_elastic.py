"""Elastic jobs (``min_tasks`` below ``tasks``: Volcano's minAvailable, Slurm's
``--nodes=min-max``): the pass binds as many tasks as fit, at least ``min_tasks``; the run keeps
that size; its release gives the job back its full size; only the smallest size preempts or
reserves; a job that fits whole is bound whole."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.cycle import Scheduler
from scheduler.model import JobAdded, JobEvicted, JobFinished, JobUpdated, Resize
from scheduler.profiles import profile, with_args
from scheduler.state import JobInfo
from scheduler.testing import cluster, make_job, make_nodes
from tests.scheduler.test_properties import check_state


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


def test_a_parked_elastic_job_is_retried_when_its_smallest_size_may_fit() -> None:
    """Found by the grow property test below: a 9-task job (at least 1) parked while the only
    node was full was not retried when the node emptied, because the queueing hints judged the
    freed GPUs against its full size (9 GPUs in one rack; the rack has 8): it waited for the
    5-minute flush."""
    builder = cluster(make_nodes(1)).running(make_job("bg").gpus(8).not_preemptible(), {"n0": 8})
    sched = builder.scheduler(profile("default"), jobs=[_elastic("el", 9, 1)])
    assert sched.schedule(60.0).bindings == ()
    sched.handle(JobFinished("bg", 120.0))
    (b,) = sched.schedule(120.0).bindings
    assert (b.job_id, len(b.placement.tasks)) == ("el", 8)


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
    """A daemon that restarts finds the run bound with 5 of 8 tasks: the view gives the core the
    job in full with that placement, and the core holds exactly those GPUs, runs the job at 5,
    keeps that size through an update of the job, and gives it its 8 back on release."""
    builder = cluster(make_nodes(1))
    sched = builder.scheduler(profile("default"))
    probe = builder.scheduler(profile("default"), jobs=[make_job("el").gpus(5).obj()])
    (b,) = probe.schedule(0.0).bindings
    sched.handle(JobAdded(_elastic("el", 8, 2), placement=b.placement, bound_at_s=0.0))
    assert bin(sched.state.nodes["n0"].free_mask).count("1") == 3
    info = sched.state.jobs["el"]
    assert (info.job.tasks, info.full_job and info.full_job.tasks, sched.state.shrunk) == (5, 8, {"el"})
    sched.handle(JobUpdated(_elastic("el", 8, 2, priority=7)))  # jobctl update --priority
    assert (info.job.tasks, info.job.priority) == (5, 7)
    sched.handle(JobEvicted("el", 1.0))
    assert (info.job.tasks, info.job.min_tasks, info.job.priority, sched.state.shrunk) == (8, 2, 7, set())
    assert sched.state.placement_problem(_elastic("el", 8, 2), b.placement) == ""  # 5 is one of its sizes
    assert "gang of 6-8" in sched.state.placement_problem(_elastic("el", 8, 6), b.placement)


# --- grow on free capacity (the elastic plugin) ---------------------------------------------------

def _two_racks(n3_free: bool = False) -> tuple[Scheduler, JobInfo]:
    """n0, n1 in rack-0 and n2, n3 in rack-1; el (16 one-GPU tasks, at least 4, in one rack) got
    n0 while a job held n1, which then ended. n2 (and n3 unless ``n3_free``) are busy for good."""
    builder = cluster(make_nodes(4, racks=2))
    for node in ("n1", "n2") if n3_free else ("n1", "n2", "n3"):
        builder.running(make_job(f"{node}-job").gpus(8).not_preemptible(), {node: 8})
    el = replace(make_job("el").gpus(16).rack_required().not_preemptible().obj(), min_tasks=4)
    sched = builder.scheduler(profile("default"), jobs=[el])
    (b,) = sched.schedule(0.0).bindings
    assert len(b.placement.tasks) == 8 and {t.node for t in b.placement.tasks} == {"n0"}
    sched.handle(JobFinished("n1-job", 60.0))
    return sched, sched.state.jobs["el"]


def test_a_shrunk_elastic_job_grows_into_free_capacity_after_grow_after_s() -> None:
    sched, info = _two_racks()
    assert sched.schedule(300.0).resizes == ()  # 5 min into its run: not yet (grow_after_s 600)
    result = sched.schedule(700.0)
    assert result.resizes == (Resize("el", 8, 16, 700.0),)
    held = sched.state.reservations["el"]
    assert (held.kind, held.holds, held.expires_s) == ("resize", {"n0": 8, "n1": 8}, 1000.0)
    assert info.evicting and info.job.tasks == 8 and info.placement is not None  # still its run
    assert len(info.by_node["n0"]) == 8 and sched.state.nodes["n1"].free_gpus == 8
    # what is held for it is not free for others while its run stops
    sched.handle(JobAdded(make_job("late").gpus(1).obj()))
    late = sched.schedule(701.0)
    assert late.bindings == () and "late" in late.pending and late.resizes == ()
    sched.handle(JobEvicted("el", 730.0))  # stopped: the next pass binds it whole
    bound = {b.job_id: b for b in sched.schedule(730.0).bindings}
    assert len(bound["el"].placement.tasks) == 16 and sched.state.shrunk == set()
    assert "el" not in sched.state.reservations and info.job.tasks == 16


def test_no_grow_while_a_job_of_its_rank_or_above_waits_for_resources() -> None:
    """hi (two 8-GPU tasks in one rack) cannot start: each rack has one free node. Ranked at el's
    priority or above, it keeps el from taking n1; ranked below, it does not."""
    for priority, grows in ((10, False), (0, False), (-10, True)):
        sched, _ = _two_racks(n3_free=True)
        sched.handle(JobAdded(make_job("hi").gang(2, 8).rack_required().priority(priority).obj()))
        result = sched.schedule(700.0)
        assert "hi" in result.pending and result.pending["hi"].code == "unschedulable", result.pending
        assert bool(result.resizes) is grows, (priority, result.resizes)


def test_a_grow_takes_the_largest_size_that_fits_and_is_undone_cleanly_when_none_does() -> None:
    sched, info = _two_racks()
    sched.handle(JobAdded(make_job("four").gpus(4).not_preemptible().obj()))
    assert [b.job_id for b in sched.schedule(100.0).bindings] == ["four"]  # 4 of n1's 8 GPUs
    (resize,) = sched.schedule(700.0).resizes
    assert (resize.from_tasks, resize.to_tasks) == (8, 12)
    assert sched.state.reservations["el"].holds == {"n0": 8, "n1": 4}

    # n1 full again, n3 (the other rack) free: 8 GPUs free, but no larger size fits in one rack
    again, other = _two_racks()
    again.handle(JobAdded(make_job("all").gpus(8).not_preemptible().obj()))
    assert [b.job_id for b in again.schedule(100.0).bindings] == ["all"]
    again.handle(JobFinished("n3-job", 200.0))
    assert again.state.nodes["n1"].free_gpus == 0 and again.state.nodes["n3"].free_gpus == 8

    def snapshot() -> tuple[object, ...]:
        st = again.state
        return (other.placement, other.bound_at_s, other.attained_at(700.0), other.pending_since_s, other.confirmed,
                other.job, other.full_job, st.allocated_gpus, dict(st.tenant_gpus), sorted(st.running),
                sorted(st.pending), {n: (x.free_mask, x.free_cpu, x.free_mem) for n, x in st.nodes.items()})

    before, epoch = snapshot(), again.state.epoch
    assert again.schedule(700.0).resizes == ()
    assert again.state.epoch > epoch  # the run was released for the try (and put back)
    assert snapshot() == before and not other.evicting and again.state.shrunk == {"el"}

    full, _ = _two_racks()  # no GPU free at all: not even tried
    full.handle(JobAdded(make_job("all").gpus(8).not_preemptible().obj()))
    full.schedule(100.0)
    epoch = full.state.epoch
    assert full.schedule(700.0).resizes == () and full.state.epoch == epoch


@settings(max_examples=60, deadline=None)
@given(nodes=st.integers(1, 4), racks=st.integers(1, 2), tasks=st.integers(2, 24), data=st.data())
def test_a_growing_run_never_overlaps_another_and_ends_as_large_as_fits(
        nodes: int, racks: int, tasks: int, data: st.DataObject) -> None:
    """Background gangs fill some GPUs and end one by one; an elastic job grows after each end
    (grow_after_s 0), its stopped run told to the core as the daemon would (JobEvicted). After
    every pass no GPU is held twice and the aggregates match; once all have ended it runs at
    the largest size that fits the cluster."""
    low = data.draw(st.integers(1, tasks))
    topology = data.draw(st.sampled_from([None, "rack"]))
    shape = make_nodes(nodes, racks=min(racks, nodes))
    builder = cluster(shape)
    busy = data.draw(st.lists(st.integers(1, 8), min_size=nodes, max_size=nodes))
    for node, n in zip(shape, busy, strict=True):
        builder.running(make_job(f"bg-{node.name}").gpus(n).not_preemptible(), {node.name: n})
    el = make_job("el").gpus(tasks)
    el = (el.rack_required() if topology else el).obj()
    grow = with_args(profile("default"), ["elastic.grow_after_s=0"])
    sched = builder.scheduler(grow, jobs=[replace(el, min_tasks=low)])
    order = data.draw(st.permutations([f"bg-{node.name}" for node in shape]))
    now = 0.0
    for done in [None, *order]:
        now += 60.0
        if done is not None:
            sched.handle(JobFinished(done, now))
        for _ in range(5):
            result = sched.schedule(now)
            check_state(sched, [], 0)
            for r in result.resizes:
                info = sched.state.running[r.job_id]
                assert info.full_job is not None and r.from_tasks == info.job.tasks < r.to_tasks
            if not result.resizes:
                break
            sched.handle(*(JobEvicted(r.job_id, now) for r in result.resizes))
    alone = cluster(shape).scheduler(profile("default"), jobs=[replace(el, min_tasks=low)])
    best = alone.schedule(0.0).bindings
    info = sched.state.jobs["el"]
    if best:
        assert info.placement is not None and len(info.placement.tasks) == len(best[0].placement.tasks)
    else:
        assert info.placement is None


# --- shrink on contention (preemption's shrink_elastic) -------------------------------------------

def _preempted_elastic(settings: list[str]) -> tuple[Scheduler, object]:
    """el (4 x 4 GPUs, at least 2) runs on n0 and n1; hi (8 GPUs, priority 100) preempts it for
    one node; other (1 GPU, priority 50) waits too."""
    sched = cluster(make_nodes(2)).scheduler(with_args(profile("default"), settings),
                                              jobs=[_elastic("el", 4, 2, gpus_per_task=4)])
    (b,) = sched.schedule(0.0).bindings
    assert {t.node for t in b.placement.tasks} == {"n0", "n1"} and len(b.placement.tasks) == 4
    sched.handle(JobAdded(make_job("hi").gpus(8).priority(100).obj()))
    sched.handle(JobAdded(make_job("other").gpus(1).priority(50).obj()))
    return sched, sched.schedule(10.0)


def test_a_preempted_elastic_job_restarts_at_once_smaller_on_the_node_it_keeps() -> None:
    """torchrun's elastic agent restarts its workers with fewer nodes when some are taken:
    the victim is stopped whole (a restart from its checkpoint), then bound again at once on
    the node the preemptor does not need, held for it, not left to wait behind other jobs."""
    sched, result = _preempted_elastic([])
    (victim,) = result.preemptions
    assert victim.victim_id == "el"
    (taken,) = sched.state.reservations["hi"].holds
    kept = "n1" if taken == "n0" else "n0"
    assert victim.reason.endswith(f"; elastic: restarts with 2 of 4 tasks on {kept}"), victim.reason
    held = sched.state.reservations["el"]
    assert (held.kind, held.holds, held.expires_s) == ("shrink", {kept: 8}, 610.0)
    sched.handle(JobEvicted("el", 40.0))  # its run stopped (the daemon: every task reported its end)
    bound = {b.job_id: b for b in sched.schedule(40.0).bindings}
    assert {t.node for t in bound["hi"].placement.tasks} == {taken}
    assert len(bound["el"].placement.tasks) == 2 and {t.node for t in bound["el"].placement.tasks} == {kept}
    assert "other" not in bound and sched.state.reservations == {}
    check_state(sched, [], 0)


def test_without_shrink_the_victim_waits_behind_higher_ranked_jobs() -> None:
    sched, result = _preempted_elastic(["preemption.shrink_elastic=false"])
    (victim,) = result.preemptions
    assert "elastic" not in victim.reason and "el" not in sched.state.reservations
    sched.handle(JobEvicted("el", 40.0))
    bound = {b.job_id for b in sched.schedule(40.0).bindings}
    assert bound == {"hi", "other"}  # other took a GPU of the node el ran on; el no longer fits


def test_a_victim_keeps_nothing_when_what_is_left_is_below_its_minimum() -> None:
    sched = cluster(make_nodes(2)).scheduler(profile("default"), jobs=[_elastic("el", 4, 3, gpus_per_task=4)])
    sched.schedule(0.0)
    sched.handle(JobAdded(make_job("hi").gpus(8).priority(100).obj()))
    (victim,) = sched.schedule(10.0).preemptions
    assert "elastic" not in victim.reason and "el" not in sched.state.reservations  # 2 tasks left < 3
