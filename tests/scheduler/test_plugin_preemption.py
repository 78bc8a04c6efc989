"""Preemption, defragmentation and backfill, table-driven through one scheduling pass."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from scheduler.framework.registry import PluginSpec, Profile
from scheduler.model import Job, JobAdded, JobEvicted, Tenant
from scheduler.testing import JobBuilder, cluster, make_job, make_nodes

PREEMPT = Profile("t", (PluginSpec("priority"), PluginSpec("topology"), PluginSpec("gang"),
                        PluginSpec("resources", args={"scoring": "none"}), PluginSpec("preemption")))
RECLAIM = Profile("t", (PluginSpec("priority"), PluginSpec("topology"), PluginSpec("gang"), PluginSpec("quota"),
                        PluginSpec("resources", args={"scoring": "none"}),
                        PluginSpec("preemption", args={"reclaim_borrowed": True})))


@dataclass(frozen=True)
class PreemptCase:
    name: str
    running: tuple[tuple[JobBuilder, dict[str, int]], ...]
    job: Job
    want_victims: tuple[str, ...]
    nodes: int = 2
    racks: int = 1
    profile: Profile = PREEMPT
    tenants: tuple[Tenant, ...] = field(default_factory=tuple)


def low(job_id: str, gpus: int) -> JobBuilder:
    return make_job(job_id).gpus(gpus)


CASES = [
    PreemptCase("fewest GPU-hours over all nodes",
                ((low("a", 6), {"n0": 6}), (low("b", 2), {"n0": 2}),
                 (low("c", 3), {"n1": 3}), (low("d", 3), {"n1": 3}), (low("e", 2), {"n1": 2})),
                make_job("p").gpus(3).priority(1).obj(), ("d",)),
    PreemptCase("equal priority cannot preempt", ((low("a", 8), {"n0": 8}), (low("b", 8), {"n1": 8})),
                make_job("p").gpus(1).obj(), ()),
    PreemptCase("non-preemptible gangs are safe",
                ((low("a", 8).not_preemptible(), {"n0": 8}), (low("b", 8), {"n1": 8})),
                make_job("p").gpus(1).priority(1).obj(), ("b",)),
    PreemptCase("higher priority gangs are safe",
                ((low("a", 8).priority(2), {"n0": 8}), (low("b", 8), {"n1": 8})),
                make_job("p").gpus(8).priority(1).obj(), ("b",)),
    # Evicting 'wide' frees only 4 GPUs on n0 but loses all 8 of its GPUs' work: n0 costs 12
    # GPU-restarts, n1 costs 8 and wins.
    PreemptCase("a victim gang is evicted whole and costs all its GPUs",
                ((low("wide", 8), {"n0": 4, "n2": 4}), (low("x", 4), {"n0": 4}), (low("y", 5), {"n1": 5}),
                 (low("z", 3), {"n1": 3}), (low("w", 4), {"n2": 4})),
                make_job("p").gpus(8).priority(1).obj(), ("y", "z"), nodes=3),
    PreemptCase("rack-level gang", tuple((low(f"r{i}", 8), {f"n{i}": 8}) for i in range(4)),
                make_job("p").gpus(16).priority(1).obj(), ("r0", "r1"), nodes=4, racks=2),
    PreemptCase("reclaim from a borrowing tenant",
                ((low("a1", 8).tenant("a"), {"n0": 8}), (low("b1", 8).tenant("b"), {"n1": 8})),
                make_job("p").gpus(8).tenant("a").obj(), ("b1",), profile=RECLAIM,
                tenants=(Tenant("a", 16), Tenant("b", 0))),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_preemption_victims(case: PreemptCase) -> None:
    builder = cluster(make_nodes(case.nodes, racks=case.racks))
    for job, on in case.running:
        builder.running(job, on)
    for tenant in case.tenants:
        builder.tenant(tenant.name, tenant.nominal_gpus, tenant.borrow_limit_gpus)
    sched = builder.scheduler(case.profile, jobs=[case.job])
    result = sched.schedule(10.0)
    assert sorted(p.victim_id for p in result.preemptions) == sorted(case.want_victims)
    if case.want_victims:
        assert result.pending["p"].message.endswith(f"({sum(p.gpu_hours_lost for p in result.preemptions):.2f} GPU-h lost)")
        sched.handle(*(JobEvicted(v, 10.0) for v in case.want_victims))
        again = sched.schedule(10.0)
        assert [b.job_id for b in again.bindings][:1] == ["p"], "the preemptor takes the freed GPUs"


def test_checkpoint_interval_raises_the_cost() -> None:
    from dataclasses import replace

    fresh = replace(make_job("fresh").gpus(4).obj(), checkpoint_interval_s=3600.0)
    stale = replace(make_job("stale").gpus(4).obj(), checkpoint_interval_s=3600.0)
    builder = cluster(make_nodes(2)).running(fresh, {"n0": 4}, bound_at_s=3500.0)
    builder.running(stale, {"n1": 4}, bound_at_s=0.0).running(low("f0", 4), {"n0": 4}).running(low("f1", 4), {"n1": 4})
    sched = builder.scheduler(PREEMPT, jobs=[make_job("p").gpus(4).priority(1).obj()])
    # at t=3590 'fresh' ran 90 s since its start; 'stale' 3590 s since its last checkpoint
    victims = [p for p in sched.schedule(3590.0).preemptions]
    assert [v.victim_id for v in victims] in (["fresh"], ["f0"], ["f1"])
    assert "stale" not in [v.victim_id for v in victims]


def test_max_evictions_spares_gangs_evicted_often() -> None:
    def victims(max_evictions: int | None, evicted: dict[str, int]) -> list[str]:
        args = {} if max_evictions is None else {"max_evictions": max_evictions}
        profile = Profile("t", (*PREEMPT.plugins[:-1], PluginSpec("preemption", args=args)))
        builder = cluster(make_nodes(2)).running(low("a", 8), {"n0": 8}).running(low("b", 8), {"n1": 8})
        sched = builder.scheduler(profile, jobs=[make_job("p").gpus(8).priority(1).obj()])
        for job_id, count in evicted.items():
            sched.state.jobs[job_id].evictions = count
        return [v.victim_id for v in sched.schedule(10.0).preemptions]

    assert victims(None, {"a": 2}) == ["a"]  # equal cost: the first node's gang
    assert victims(2, {"a": 2}) == ["b"]
    assert victims(2, {"a": 2, "b": 2}) == []
    assert victims(3, {"a": 2, "b": 2}) == ["a"]
    with pytest.raises(ValueError, match="max_evictions must be"):
        cluster(make_nodes(1)).scheduler(
            Profile("t", (*PREEMPT.plugins[:-1], PluginSpec("preemption", args={"max_evictions": 0}))))


DEFRAG = Profile("t", (PluginSpec("priority"), PluginSpec("topology"), PluginSpec("gang"),
                       PluginSpec("resources", args={"scoring": "none"}), PluginSpec("defrag")))


def test_defrag_moves_a_small_gang_out_of_the_way() -> None:
    builder = cluster(make_nodes(2)).running(low("a", 1), {"n0": 1}).running(low("b", 2), {"n1": 2})
    sched = builder.scheduler(DEFRAG, jobs=[make_job("big").gpus(8).obj()])
    result = sched.schedule(0.0)
    assert [(p.victim_id, p.migration) for p in result.preemptions] == [("a", True)]
    holds = {r.job_id: r.holds for r in result.reservations}
    assert holds == {"big": {"n0": 8}, "a": {"n1": 1}}
    assert sched.pending_reason("big") is not None
    sched.handle(JobEvicted("a", 0.0))
    placed = {b.job_id: b.placement.nodes() for b in sched.schedule(0.0).bindings}
    assert placed == {"big": ("n0",), "a": ("n1",)}


def test_defrag_needs_room_for_the_moved_gang() -> None:
    builder = cluster(make_nodes(2)).running(low("a", 1), {"n0": 1}).running(low("b", 8), {"n1": 8})
    sched = builder.scheduler(DEFRAG, jobs=[make_job("big").gpus(8).obj()])
    assert sched.schedule(0.0).preemptions == ()  # 'a' could not restart anywhere


BACKFILL = Profile("t", (PluginSpec("sjf"), PluginSpec("topology"), PluginSpec("gang"),
                         PluginSpec("resources", args={"scoring": "none"}),
                         PluginSpec("backfill", args={"max_reservations": 1, "min_gpus": 2})))


def test_backfill_reserves_where_the_gang_starts_first_and_lets_short_jobs_in() -> None:
    builder = cluster(make_nodes(2))
    builder.running(make_job("slow").gpus(7).estimate(10_000), {"n0": 7})
    builder.running(make_job("quick").gpus(4).estimate(1_000), {"n1": 4})
    sched = builder.scheduler(BACKFILL, jobs=[make_job("big").gpus(8).estimate(5_000).submitted(0).obj()])
    first = sched.schedule(0.0)
    assert [(r.job_id, r.holds, r.start_s) for r in first.reservations] == [("big", {"n1": 8}, 1_000.0)]
    assert "holds a backfill reservation on n1, expected start in 0.3 h" in first.pending["big"].message
    short = make_job("short").gpus(2).estimate(500).submitted(1).obj()
    long = make_job("long").gpus(2).estimate(5_000).submitted(2).obj()
    sched.handle(JobAdded(short), JobAdded(long))
    second = sched.schedule(10.0)
    # 'short' ends before the reservation starts: backfilled onto the held GPUs of n1
    assert {b.job_id: b.placement.nodes() for b in second.bindings} == {"short": ("n1",)}
    # 'long' would delay the gang: kept off them
    assert "GPUs held for a reservation" in second.pending["long"].message


def test_backfill_reservation_start_follows_a_job_that_overran_its_estimate() -> None:
    # Found in the week's replay: a 32-GPU gang's pending reason said "expected start in 0.0 h"
    # for three days; the start estimated when the reservation was made (the blockers' estimated
    # ends) had passed and was never refreshed, while the jobs under the hold ran on.
    builder = cluster(make_nodes(2))
    builder.running(make_job("slow").gpus(7).estimate(10_000), {"n0": 7})
    builder.running(make_job("quick").gpus(4).estimate(1_000), {"n1": 4})
    sched = builder.scheduler(BACKFILL, jobs=[make_job("big").gpus(8).estimate(5_000).submitted(0).obj()])
    assert [r.start_s for r in sched.schedule(0.0).reservations] == [1_000.0]
    later = sched.schedule(5_000.0)
    # 'quick' has run 5,000 s of its 1,000: expected to run overrun_factor (0.5) x that more
    assert sched.state.reservations["big"].start_s == 7_500.0
    assert "holds a backfill reservation on n1, expected start in 0.7 h" in later.pending["big"].message


def test_backfill_without_estimates_drains_the_closest_domain() -> None:
    builder = cluster(make_nodes(2)).running(low("a", 6), {"n0": 6}).running(low("b", 3), {"n1": 3})
    sched = builder.scheduler(BACKFILL, jobs=[make_job("big").gpus(8).obj()])
    first = sched.schedule(0.0)
    assert [(r.holds, r.start_s) for r in first.reservations] == [({"n1": 8}, None)]
    sched.handle(JobAdded(make_job("small").gpus(1).submitted(1).obj()))
    assert {b.job_id: b.placement.nodes() for b in sched.schedule(1.0).bindings} == {"small": ("n0",)}


def test_backfill_reservations_never_hold_the_same_gpus_twice() -> None:
    # Found in the full-week replay: two 8-GPU gangs both held all 8 GPUs of one node (the
    # drain fallback ignored the other reservation's hold), so neither could ever start.
    profile = Profile("t", (*BACKFILL.plugins[:-1],
                            PluginSpec("backfill", args={"max_reservations": 2, "min_gpus": 2})))
    builder = cluster(make_nodes(2)).running(low("a", 2), {"n0": 2}).running(low("b", 8), {"n1": 8})
    gangs = [make_job(f"g{i}").gpus(8).submitted(i).obj() for i in range(2)]
    sched = builder.scheduler(profile, jobs=gangs)
    result = sched.schedule(10.0)
    assert [(r.job_id, r.holds) for r in result.reservations] == [("g0", {"n0": 8}), ("g1", {"n1": 8})]
    for node in sched.state.nodes.values():
        assert node.held_gpus <= node.node.gpus


def _room_profile(estimate: str) -> Profile:
    return Profile("t", (PluginSpec("priority"), PluginSpec("topology"), PluginSpec("gang"),
                         PluginSpec("resources", args={"scoring": "none"}),
                         PluginSpec("defrag", args={"room_within_s": 600.0, "room_estimate": estimate})))


@pytest.mark.parametrize("estimate_s, moved", [(100.0, []), (10_000.0, ["a"])])
def test_defrag_waits_when_a_node_is_expected_to_have_room_soon_by_the_hint(estimate_s: float, moved: list[str]) -> None:
    # 'a' holds the one GPU that keeps n0 from being whole; if it is expected to end within
    # room_within_s, the gang waits for n0 instead of moving it
    builder = cluster(make_nodes(2)).running(low("a", 1).estimate(estimate_s), {"n0": 1})
    builder.running(low("b", 2).estimate(50_000), {"n1": 2})
    sched = builder.scheduler(_room_profile("hint"), jobs=[make_job("big").gpus(8).obj()])
    assert [p.victim_id for p in sched.schedule(0.0).preemptions] == moved


@pytest.mark.parametrize("ratio, moved", [(1.0, []), (200.0, ["a"])])
def test_defrag_room_learned_from_finished_jobs(ratio: float, moved: list[str]) -> None:
    # what finished jobs ran over their own estimates: all ended at 1x (so 'a', estimated
    # at 100 s, ends within 600 s) or all ran 200x theirs (so it will not)
    builder = cluster(make_nodes(2)).running(low("a", 1).estimate(100.0), {"n0": 1})
    builder.running(low("b", 2).estimate(50_000), {"n1": 2})
    sched = builder.scheduler(_room_profile("learned"), jobs=[make_job("big").gpus(8).obj()])
    plugin = sched.framework.plugin("defrag")
    assert plugin is not None
    for _ in range(10):
        plugin.learned.relative.observe("default", 1, ratio)  # type: ignore[attr-defined]
    assert [p.victim_id for p in sched.schedule(0.0).preemptions] == moved


def test_defrag_room_arguments_are_checked() -> None:
    for args, message in (({"room_estimate": "guess"}, "room_estimate must be"),
                          ({"room_within_s": -1.0}, "room_within_s must be")):
        with pytest.raises(ValueError, match=message):
            cluster(make_nodes(1)).scheduler(Profile("t", (*DEFRAG.plugins[:-1], PluginSpec("defrag", args=args))))
