"""Holds made by PostFilters: they are bounded in time, and a preempted gang may get its
place back (a return hold on the GPUs it ran on). Small hand-built clusters, one pass at a
time."""

from __future__ import annotations

from dataclasses import replace

from scheduler.framework.registry import PluginSpec, Profile
from scheduler.model import JobAdded, JobEvicted, JobFinished, JobUpdated
from scheduler.testing import cluster, make_job, make_nodes

PREEMPT = Profile("t", (PluginSpec("priority"), PluginSpec("topology"), PluginSpec("gputype"), PluginSpec("gang"),
                        PluginSpec("resources", args={"scoring": "none"}), PluginSpec("preemption")))


def test_a_preemption_hold_expires_when_its_job_cannot_use_it() -> None:
    # Bug (found reading the code): a preemptor's hold on the GPUs it freed was dropped only
    # when the preemptor started or was deleted. A preemptor that can no longer start there
    # (here its spec now asks for a GPU type the node lacks) kept the node's 8 GPUs held for
    # ever: the evicted gang and every other job waited for ever on an idle node.
    sched = cluster(make_nodes(1)).running(make_job("a").gpus(8), {"n0": 8}).scheduler(
        PREEMPT, jobs=[make_job("p").gpus(8).priority(1).obj()])
    first = sched.schedule(10.0)
    assert [v.victim_id for v in first.preemptions] == ["a"]
    assert [(r.job_id, r.kind, r.holds) for r in first.reservations] == [("p", "preemption", {"n0": 8})]
    expires = first.reservations[0].expires_s
    assert expires is not None and 10.0 < expires <= 3610.0
    sched.handle(JobUpdated(replace(sched.state.jobs["p"].job, gpu_type="h100")), JobEvicted("a", 10.0))
    sched.handle(JobAdded(make_job("q").gpus(1).submitted(11.0).obj()))
    # 'p' is now infeasible, which preemption cannot fix: its next attempt drops the hold at
    # once (as Kubernetes clears a nominated node) rather than at ``expires``.
    after = sched.schedule(11.0)
    assert "p" not in sched.state.reservations, "the hold is dropped"
    assert [b.job_id for b in after.bindings] == ["a"], "the evicted gang gets its node back"


def test_defrag_holds_are_bounded_too() -> None:
    defrag = Profile("t", (PluginSpec("priority"), PluginSpec("topology"), PluginSpec("gang"),
                           PluginSpec("resources", args={"scoring": "none"}),
                           PluginSpec("defrag", args={"hold_s": 120.0})))
    builder = cluster(make_nodes(2)).running(make_job("a").gpus(1), {"n0": 1}).running(make_job("b").gpus(2), {"n1": 2})
    sched = builder.scheduler(defrag, jobs=[make_job("big").gpus(8).obj()])
    result = sched.schedule(5.0)
    assert {(r.job_id, r.kind, r.expires_s) for r in result.reservations} == {
        ("big", "defrag", 125.0), ("a", "migration", 125.0)}
    assert sched.next_wakeup_s() == 125.0
    sched.schedule(125.0)
    assert sched.state.reservations == {}
    assert all(node.held_gpus == 0 for node in sched.state.nodes.values())


def _returning(return_holds: bool) -> Profile:
    return Profile("t", (
        PluginSpec("priority"), PluginSpec("topology"), PluginSpec("gang"),
        PluginSpec("resources", args={"scoring": "none"}),
        PluginSpec("preemption", args={"return_holds": return_holds}),
        PluginSpec("backfill", args={"max_reservations": 0}),
    ))


def test_a_preempted_gang_gets_its_place_back_when_its_preemptor_ends() -> None:
    # n0: 'long' (4 GPUs, preemptible) and 'pinned' (4 GPUs); n1 full. A 1-GPU job of higher
    # priority expected to run 1,000 s evicts 'long'. With return holds 'long' keeps its 4 GPUs
    # of n0: a job that ends before the preemptor ('short') may use them, one that would
    # not ('other') may not, and 'long' restarts on n0 when the preemptor ends.
    def run(return_holds: bool) -> tuple[dict[str, str], dict[str, str]]:
        builder = cluster(make_nodes(2)).running(make_job("long").gpus(4).estimate(90_000), {"n0": 4})
        builder.running(make_job("pinned").gpus(4).not_preemptible(), {"n0": 4})
        builder.running(make_job("full").gpus(8).not_preemptible(), {"n1": 8})
        sched = builder.scheduler(_returning(return_holds),
                                  jobs=[make_job("p").gpus(1).priority(1).estimate(1_000).submitted(10).obj()])
        first = sched.schedule(10.0)
        assert [v.victim_id for v in first.preemptions] == ["long"]
        sched.handle(JobEvicted("long", 10.0))
        sched.handle(JobAdded(make_job("short").gpus(1).estimate(500).submitted(11).obj()),
                     JobAdded(make_job("other").gpus(1).estimate(5_000).submitted(12).obj()))
        second = {b.job_id: b.placement.nodes()[0] for b in sched.schedule(10.0).bindings}
        sched.handle(JobFinished("short", 510.0), JobFinished("p", 1010.0))
        third = {b.job_id: b.placement.nodes()[0] for b in sched.schedule(1010.0).bindings}
        return second, third

    with_holds = run(True)
    assert with_holds == ({"p": "n0", "short": "n0"}, {"long": "n0"})
    without = run(False)
    assert without[0] == {"p": "n0", "short": "n0", "other": "n0"}
    assert without[1] == {}, "without a return hold 'other' took its place: 'long' waits on"


def test_a_return_hold_is_bounded_and_made_only_for_gangs() -> None:
    builder = cluster(make_nodes(1)).running(make_job("wide").gpus(4).estimate(90_000), {"n0": 4})
    builder.running(make_job("one").gpus(1).estimate(90_000), {"n0": 1})
    builder.running(make_job("pinned").gpus(3).not_preemptible(), {"n0": 3})
    sched = builder.scheduler(_returning(True),
                              jobs=[make_job("p").gpus(5).priority(1).estimate(1_000).submitted(10).obj()])
    result = sched.schedule(10.0)
    assert sorted(v.victim_id for v in result.preemptions) == ["one", "wide"]
    returns = [(r.job_id, r.holds, r.after_job, r.expires_s) for r in result.reservations if r.kind == "return"]
    # the 1-GPU gang fits anywhere: no hold for it; the hold lasts the preemptor's expected
    # run (1,000 s) plus the preemption hold time (600 s)
    assert returns == [("wide", {"n0": 4}, "p", 10.0 + 1_000 + 600)]


def test_remaining_work_rule_spares_a_gang_about_to_end() -> None:
    # Two 8-GPU gangs cost the same to evict (30 s restart each); 'ending' has 500 s left of
    # its 10,000 s estimate, 'young' 9,990 s. The preemptor is expected to run 3,600 s.
    def victims(spare_within: float | None, young_left_s: float = 9_990.0) -> list[str]:
        args = {} if spare_within is None else {"spare_within": spare_within}
        profile = Profile("t", (*PREEMPT.plugins[:-1], PluginSpec("preemption", args=args)))
        builder = cluster(make_nodes(2)).running(make_job("ending").gpus(8).estimate(10_000), {"n0": 8})
        # at t=9,500 'ending' (started at 0) has 500 s left, 'young' young_left_s
        builder.running(make_job("young").gpus(8).estimate(10_000), {"n1": 8}, bound_at_s=young_left_s - 500.0)
        sched = builder.scheduler(profile, jobs=[make_job("p").gpus(8).priority(1).estimate(3_600).obj()])
        return [v.victim_id for v in sched.schedule(9_500.0).preemptions]

    assert victims(None) == ["ending"], "by cost alone the first node's gang"
    assert victims(1.0) == ["young"], "waiting 500 s for 'ending' beats evicting it for 3,600 s"
    assert victims(1.0, young_left_s=3_000.0) == [], "both end before the preemptor would: it waits"


def test_patience_preempts_only_after_waiting_as_long_as_the_job_would_run() -> None:
    profile = Profile("t", (*PREEMPT.plugins[:-1], PluginSpec("preemption", args={"patience": 1.0})))
    sched = cluster(make_nodes(1)).running(make_job("low").gpus(8), {"n0": 8}).scheduler(
        profile, jobs=[make_job("p").gpus(8).priority(1).estimate(1_000).submitted(0).obj()])
    assert sched.schedule(999.0).preemptions == ()
    # parked; retried by the next event or the 300 s flush (no wake-up of its own)
    assert [v.victim_id for v in sched.schedule(1_500.0).preemptions] == ["low"]


def test_preemptive_shortest_remaining_first_evicts_only_much_longer_gangs() -> None:
    # 'near' (4 GPUs) is cheaper to evict than 'long' (8 GPUs), but it has less work left
    # (1,500 s) than the preemptor (2,000 s): same rank bucket, not a victim.
    def victims(profile: Profile) -> list[str]:
        builder = cluster(make_nodes(2)).running(make_job("long").gpus(8).estimate(100_000), {"n0": 8})
        builder.running(make_job("near").gpus(4).estimate(1_500), {"n1": 4})
        builder.running(make_job("pinned").gpus(4).not_preemptible(), {"n1": 4})
        sched = builder.scheduler(profile, jobs=[make_job("p").gpus(4).estimate(2_000).submitted(0).obj()])
        return [v.victim_id for v in sched.schedule(0.0).preemptions]

    assert victims(Profile("t", (PluginSpec("sjf", args={"preempt_ratio": 2.0}), *PREEMPT.plugins[1:]))) == ["long"]
    assert victims(Profile("t", (PluginSpec("sjf"), *PREEMPT.plugins[1:]))) == [], "plain sjf never preempts"


def test_sjf_overrun_factor_says_how_long_a_job_past_its_estimate_still_runs() -> None:
    from scheduler.plugins.sjf.plugin import ShortestJobFirst, SjfArgs

    over = make_job("over").gpus(1).estimate(1_000).info()
    over.attained_gpu_s = 2_000.0  # ran twice its estimate before it was preempted
    fresh = make_job("fresh").gpus(1).estimate(1_500).info()

    def first(overrun: float) -> str:
        plugin = ShortestJobFirst(SjfArgs(overrun_factor=overrun, preempt_ratio=2.0))
        assert plugin.remaining_s(over) == overrun * 2_000.0
        return min((over, fresh), key=lambda i: plugin.sort_key(i, 0.0)).job.job_id

    assert first(0.0) == "over", "about to end"
    assert first(1.0) == "fresh", "expected to run 2,000 s more"


def test_the_preemptor_may_use_its_victims_return_holds_without_backfill() -> None:
    # The return hold covers the GPUs the preemptor takes; a profile without the backfill
    # plugin must not leave the preemptor waiting on its own victim's hold.
    profile = Profile("t", (*PREEMPT.plugins[:-1], PluginSpec("preemption", args={"return_holds": True})))
    sched = cluster(make_nodes(1)).running(make_job("a").gpus(8).estimate(90_000), {"n0": 8}).scheduler(
        profile, jobs=[make_job("p").gpus(8).priority(1).estimate(1_000).obj()])
    assert [v.victim_id for v in sched.schedule(10.0).preemptions] == ["a"]
    sched.handle(JobEvicted("a", 10.0))
    assert [b.job_id for b in sched.schedule(10.0).bindings] == ["p"]
    assert sched.state.reservations["a"].kind == "return"


def test_remaining_work_rule_does_not_reuse_a_failed_search_of_a_longer_job() -> None:
    # 'slow' (10,000 s) and 'quick' (100 s) have the same shape and rank. 'slow' may not evict
    # 'v' (1,000 s left), 'quick' may; the search that failed for 'slow' must not be taken
    # for 'quick''s in the same pass.
    profile = Profile("t", (*PREEMPT.plugins[:-1], PluginSpec("preemption", args={"spare_within": 1.0})))
    sched = cluster(make_nodes(1)).running(make_job("v").gpus(8).estimate(1_000), {"n0": 8}, bound_at_s=10.0).scheduler(
        profile, jobs=[make_job("slow").gpus(8).priority(1).estimate(10_000).submitted(0).obj(),
                       make_job("quick").gpus(8).priority(1).estimate(100).submitted(1).obj()])
    result = sched.schedule(10.0)
    assert [(v.victim_id, v.preemptor_id) for v in result.preemptions] == [("v", "quick")]
