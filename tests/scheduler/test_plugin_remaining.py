"""The learned remaining-time estimate (``remaining`` QueueSort, plugins/remaining): table-driven
history cases, the ordering and ranks it gives, and that it learns only from the past."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from scheduler.cycle import Scheduler
from scheduler.model import JobAdded, JobDeleted, JobEvicted, JobFinished, NodeAdded
from scheduler.plugins.remaining.history import RunTimeHistory, size_class
from scheduler.plugins.remaining.plugin import RemainingArgs, RemainingTimeFirst
from scheduler.profiles import profile, with_args
from scheduler.sim import ClusterSpec, Simulation, SlowdownModel, build_nodes
from scheduler.sim.trace import TraceJob
from scheduler.state import JobInfo, Phase
from scheduler.testing import make_job, make_node

RUNS = (60.0, 120.0, 600.0, 3600.0, 36000.0)


@dataclass(frozen=True)
class HistoryCase:
    name: str
    samples: tuple[tuple[str, int, float], ...]  # (tenant, gpus, run seconds)
    tenant: str
    gpus: int
    attained_s: float
    want: float | None
    stat: str = "mean"
    min_samples: int = 1
    overrun_factor: float = 1.0


def same(runs: tuple[float, ...], tenant: str = "a", gpus: int = 1) -> tuple[tuple[str, int, float], ...]:
    return tuple((tenant, gpus, r) for r in runs)


HISTORY_CASES = [
    HistoryCase("no history: nothing to say", (), "a", 1, 0.0, None),
    HistoryCase("fresh job: the mean", same(RUNS), "a", 1, 0.0, 40380.0 / 5),
    HistoryCase("fresh job: the median", same(RUNS), "a", 1, 0.0, 600.0, stat="median"),
    HistoryCase("after 700 s only the two longer runs count (mean)", same(RUNS), "a", 1, 700.0, 19800.0 - 700.0),
    HistoryCase("after 700 s: median of the longer runs", same(RUNS), "a", 1, 700.0, 36000.0 - 700.0, stat="median"),
    HistoryCase("gittins, fresh: the best quantum ends at 120 s: (60 + 120 + 3 x 120) / 2 jobs done",
                same(RUNS), "a", 1, 0.0, 270.0, stat="gittins"),
    HistoryCase("gittins after 600 s: quantum to 3,600 s: (3,000 + 3,000) / 1 job done", same(RUNS), "a", 1, 600.0,
                6000.0, stat="gittins"),
    HistoryCase("gittins past the second-longest: only the longest run is left", same(RUNS), "a", 1, 3600.0,
                32400.0, stat="gittins"),
    HistoryCase("a run equal to the attained service is not longer", same(RUNS), "a", 1, 3600.0, 36000.0 - 3600.0),
    HistoryCase("past every run: overrun_factor x as long again", same(RUNS), "a", 1, 50000.0, 50000.0),
    HistoryCase("past every run, overrun 0.5", same(RUNS), "a", 1, 50000.0, 25000.0, overrun_factor=0.5),
    HistoryCase("tenant first: b's runs are ignored when a has enough",
                same(RUNS) + same((9e5,) * 3, tenant="b"), "a", 1, 0.0, 40380.0 / 5),
    HistoryCase("too few longer runs in the tenant: the size class (both tenants)",
                same((100.0, 200.0)) + same((1000.0, 3000.0), tenant="b"), "a", 1, 150.0, 1400.0 - 150.0,
                min_samples=3),
    HistoryCase("another size class is not used while the class has enough",
                same((100.0,) * 3, gpus=4) + same((9e4,) * 3, gpus=1), "a", 3, 0.0, 100.0, min_samples=3),
    HistoryCase("no class has enough: all jobs", same((100.0,), gpus=4) + same((1000.0, 3000.0), gpus=1),
                "a", 4, 0.0, 4100.0 / 3, min_samples=3),
    HistoryCase("nobody has min_samples longer: the longest runs' mean if above overrun",
                same((100.0, 10000.0)), "a", 1, 500.0, 9500.0, min_samples=5),
    HistoryCase("unknown tenant falls back to its size class", same(RUNS), "zz", 1, 0.0, 40380.0 / 5),
]


@pytest.mark.parametrize("case", HISTORY_CASES, ids=lambda c: c.name)
def test_history_conditional_estimate(case: HistoryCase) -> None:
    history = RunTimeHistory(min_samples=case.min_samples, stat=case.stat, overrun_factor=case.overrun_factor)
    for tenant, gpus, run_s in case.samples:
        history.observe(tenant, gpus, run_s)
    got = history.remaining_s(case.tenant, case.gpus, case.attained_s)
    assert got == (None if case.want is None else pytest.approx(case.want))


def test_history_window_forgets_the_oldest_runs() -> None:
    history = RunTimeHistory(window=3, min_samples=1)
    for run_s in (1e6, 10.0, 20.0, 30.0):
        history.observe("a", 1, run_s)
    assert history.remaining_s("a", 1, 0.0) == pytest.approx(20.0)  # 1e6 left the tenant's window
    history.observe("a", 1, 40.0)  # a query in between must not keep a stale sorted view
    assert history.remaining_s("a", 1, 0.0) == pytest.approx(30.0)


def test_history_chance_to_end_within() -> None:
    """P(T <= a + w | T > a) from the same samples (the docstring's worked example)."""
    history = RunTimeHistory(min_samples=1)
    assert history.p_end_within("a", 1, 0.0, 600.0) is None  # no history yet
    for run_s in (60.0, 120.0, 600.0, 3600.0, 36000.0):
        history.observe("a", 1, run_s)
    assert history.p_end_within("a", 1, 0.0, 600.0) == pytest.approx(3 / 5)
    assert history.p_end_within("a", 1, 700.0, 3000.0) == pytest.approx(1 / 2)  # 3600 of 3600, 36000
    assert history.p_end_within("a", 1, 700.0, 100.0) == 0.0
    assert history.p_end_within("a", 1, 40000.0, 1e9) == 0.0  # past every run: not ending soon


def test_size_classes() -> None:
    assert [size_class(g) for g in (0, 1, 2, 3, 4, 5, 8, 9, 16, 32, 33, 128)] == [1, 1, 2, 4, 4, 8, 8, 16, 16, 32, 64, 64]


@pytest.mark.parametrize("kwargs", [{"window": 0}, {"min_samples": 0}, {"stat": "mode"}, {"quantile": 1.0},
                                    {"overrun_factor": -1.0}])
def test_history_refuses_bad_arguments(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        RunTimeHistory(**kwargs)  # type: ignore[arg-type]


def info(job_id: str, *, gpus: int = 1, tenant: str = "a", submit: float = 0.0, est: float | None = None,
         attained_h: float = 0.0, priority: int = 0) -> JobInfo:
    builder = make_job(job_id).gpus(gpus).tenant(tenant).submitted(submit).priority(priority)
    if est is not None:
        builder.estimate(est)
    out = builder.info()
    out.attained_gpu_s = attained_h * 3600 * gpus
    return out


def learned(args: RemainingArgs | None = None, runs: tuple[float, ...] = RUNS) -> RemainingTimeFirst:
    plugin = RemainingTimeFirst(args or RemainingArgs(min_samples=1))
    for run_s in runs:
        plugin.history.observe("a", 1, run_s)
        plugin.history.observe("a", 8, run_s)
    return plugin


@dataclass(frozen=True)
class OrderCase:
    name: str
    plugin: RemainingTimeFirst
    jobs: tuple[JobInfo, ...]
    want: tuple[str, ...]
    now_s: float = 0.0


ORDER_CASES = [
    OrderCase("fresh before long-running (more expected left once past the short runs)", learned(),
              (info("ran-1h", attained_h=1.0, submit=0), info("fresh", submit=5)), ("fresh", "ran-1h")),
    OrderCase("gpu_time counts width", learned(), (info("wide", gpus=8, submit=0), info("narrow", submit=9)),
              ("narrow", "wide")),
    OrderCase("runtime ignores width: fifo between equals", learned(RemainingArgs(min_samples=1, by="runtime")),
              (info("narrow", submit=9), info("wide", gpus=8, submit=0)), ("wide", "narrow")),
    OrderCase("priority beats expected work", learned(),
              (info("short", submit=0), info("urgent", attained_h=5, priority=1, submit=9)), ("urgent", "short")),
    OrderCase("no history: the job's own estimate, unknown last", RemainingTimeFirst(RemainingArgs()),
              (info("unknown", submit=0), info("long", est=7200, submit=1), info("short", est=60, submit=2)),
              ("short", "long", "unknown")),
    OrderCase("aging lifts a job long in the system", learned(RemainingArgs(min_samples=1, aging_s=3600)),
              (info("fresh", submit=99_000), info("waited", gpus=8, submit=0)), ("waited", "fresh"), now_s=100_000),
]


@pytest.mark.parametrize("case", ORDER_CASES, ids=lambda c: c.name)
def test_order(case: OrderCase) -> None:
    got = sorted(case.jobs, key=lambda i: case.plugin.sort_key(i, case.now_s))
    assert tuple(i.job.job_id for i in got) == case.want


def test_rank_lets_a_job_preempt_only_much_more_expected_work() -> None:
    plugin = learned(RemainingArgs(min_samples=1, preempt_ratio=4.0))
    fresh, long_run = info("fresh"), info("long", attained_h=4.0)  # 8,076 s vs 32,400 s expected left
    assert plugin.rank(fresh, 0.0) > plugin.rank(long_run, 0.0)
    same_bucket = learned(RemainingArgs(min_samples=1, preempt_ratio=1e5))
    assert same_bucket.rank(fresh, 0.0) == same_bucket.rank(long_run, 0.0)
    assert RemainingTimeFirst(RemainingArgs()).rank(fresh, 0.0) == (0,), "no preempt_ratio: never preemptive"
    assert RemainingTimeFirst(RemainingArgs(preempt_ratio=2.0)).rank(fresh, 0.0)[1] == float("-inf")


def test_running_time_counts_as_attained_service() -> None:
    plugin = learned()
    running = info("r")
    running.phase, running.bound_at_s = Phase.RUNNING, 0.0
    assert plugin.remaining_s(running, 700.0) == pytest.approx(19800.0 - 700.0)


def test_the_scheduler_teaches_it_finished_jobs_only() -> None:
    sched = Scheduler(with_args(profile("remaining"), ["remaining.min_samples=1"]))
    sched.handle(NodeAdded(make_node("n1").gpus(8).obj()))
    sched.handle(*(JobAdded(make_job(j).gpus(2).tenant("t").obj()) for j in ("done", "gone", "left")))
    assert {b.job_id for b in sched.schedule(0.0).bindings} == {"done", "gone", "left"}
    plugin = sched.framework.queue_sort
    assert isinstance(plugin, RemainingTimeFirst)
    sched.handle(JobFinished("done", 1800.0), JobDeleted("gone"))
    assert plugin.history.observed == 1, "a deleted job's run time is not a run time"
    # learnt: "done" ran 1,800 s; "left" has run 1,000 s, so expects 800 s more
    assert plugin.remaining_s(sched.state.jobs["left"], 1000.0) == pytest.approx(800.0)
    sched.handle(JobFinished("nobody", 1900.0))  # unknown ids are ignored
    assert plugin.history.observed == 1


def test_replay_never_sees_a_running_jobs_future() -> None:
    """Two traces that differ only in how long one job runs: every decision before that job
    ends is the same (the estimate may use only jobs that finished)."""
    nodes = build_nodes(ClusterSpec(2, 8, 1))
    base = [TraceJob(f"j{i}", "vc1" if i % 3 else "vc2", 60.0 * i, (1, 2, 4, 8)[i % 4], 600.0 + 97.0 * (i % 7))
            for i in range(60)]
    base.insert(5, TraceJob("probe", "vc1", 250.0, 4, 20000.0))
    longer = [t if t.job_id != "probe" else TraceJob("probe", "vc1", 250.0, 4, 90000.0) for t in base]

    def runs(trace: list[TraceJob]) -> dict[str, list[tuple[float, float]]]:
        sim = Simulation(trace, nodes, profile("remaining"), estimator=None, slowdown=SlowdownModel(nodes, 0))
        return {r.trace.job_id: r.runs for r in sim.run().records}

    a, b = runs(base), runs(longer)
    probe_end = min(end for _, end in a["probe"][-1:])
    cut = lambda rs: [(s, e) for s, e in rs if e < probe_end]  # noqa: E731
    assert any(a[j] != b[j] for j in a), "the probe's length must matter after it ends"
    assert {j: cut(r) for j, r in a.items()} == {j: cut(r) for j, r in b.items()}


def test_las_within_learned_orders_each_queue_by_the_learned_estimate() -> None:
    from scheduler.plugins.las.plugin import LasArgs, LeastAttainedService

    las = LeastAttainedService(LasArgs(thresholds_gpu_h=(2.0,), within="learned", learned_stat="mean",
                                       learned_min_samples=1))
    for run_s in RUNS:
        las.job_finished(info("done", attained_h=run_s / 3600), 0.0)
    jobs = (info("demoted", attained_h=3.0, submit=0),  # queue 1 whatever it expects
            info("ran-10min", attained_h=600 / 3600, submit=1),  # past 600 s: 19,800 - 600 s left
            info("fresh-own-estimate-1e6s", est=1e6, submit=2),  # the learned estimate wins: 8,076 s
            info("fresh-later", submit=3))
    got = sorted(jobs, key=lambda i: las.sort_key(i, 0.0))
    assert [i.job.job_id for i in got] == ["fresh-own-estimate-1e6s", "fresh-later", "ran-10min", "demoted"]
    assert las.rank(jobs[1], 0.0) > las.rank(jobs[0], 0.0), "preemption still follows the queues"
    plain = LeastAttainedService(LasArgs(within="shortest"))
    plain.job_finished(info("x"), 10.0)
    assert plain.history is None, "only within learned keeps a history"


def test_relative_learns_run_time_over_the_jobs_own_estimate() -> None:
    from scheduler.plugins.remaining.history import LearnedRemaining

    learned = LearnedRemaining(relative=True, min_samples=1)
    for est, ran in ((100.0, 200.0), (1000.0, 3000.0)):  # ran 2x and 3x their estimates
        learned.job_finished(info("done", est=est, attained_h=ran / 3600), 0.0)
    assert learned.remaining_s(info("j", est=1000.0), 0.0) == pytest.approx(2500.0)
    assert learned.remaining_s(info("j", est=1000.0, attained_h=2500 / 3600), 0.0) == pytest.approx(500.0)
    # no estimate: the run-time history (mean of 200 and 3,000 s)
    assert learned.remaining_s(info("j"), 0.0) == pytest.approx(1600.0)
    assert LearnedRemaining(relative=True).remaining_s(info("j", est=60.0), 0.0) == 60.0, "no history yet"
    assert LearnedRemaining(relative=True).remaining_s(info("j"), 0.0) is None


def test_min_run_s_protects_a_gang_for_its_first_run_time() -> None:
    plugin = learned(RemainingArgs(min_samples=1, preempt_ratio=2.0, min_run_s=3600.0))
    running = info("r", gpus=8)
    running.phase, running.bound_at_s = Phase.RUNNING, 1000.0
    fresh = info("fresh")
    assert plugin.rank(running, 1000.0 + 3599.0) > plugin.rank(fresh, 1000.0 + 3599.0)
    assert plugin.next_rank_change_s(running, 2000.0) == 1000.0 + 3600.0
    assert plugin.rank(running, 1000.0 + 3600.0) < plugin.rank(fresh, 1000.0 + 3600.0), "then evictable"
    assert plugin.next_rank_change_s(running, 1000.0 + 3600.0) is None
    assert plugin.next_rank_change_s(fresh, 0.0) is None
    urgent = info("urgent", priority=1)
    assert plugin.rank(urgent, 2000.0) > plugin.rank(running, 2000.0), "a higher priority still may"


def test_starve_s_puts_a_long_pending_job_first() -> None:
    plugin = learned(RemainingArgs(min_samples=1, preempt_ratio=2.0, starve_s=86400.0))
    waited, fresh = info("waited", gpus=8, submit=0.0), info("fresh", submit=86000.0)
    assert plugin.sort_key(fresh, 86400.0) < plugin.sort_key(waited, 86400.0)
    assert plugin.sort_key(waited, 86401.0) < plugin.sort_key(fresh, 86401.0)
    assert plugin.rank(waited, 86401.0) > plugin.rank(fresh, 86401.0)
    waited.phase, waited.bound_at_s = Phase.RUNNING, 86401.0
    assert plugin.work(waited, 90000.0) > 0, "only while it waits"


def test_min_run_growth_lengthens_the_quantum_after_each_eviction() -> None:
    plugin = learned(RemainingArgs(min_samples=1, preempt_ratio=2.0, min_run_s=3600.0, min_run_growth=2.0))
    running = info("r", gpus=8)
    running.phase, running.bound_at_s, running.evictions = Phase.RUNNING, 0.0, 2
    assert plugin.quantum_s(running) == 4 * 3600.0
    assert plugin.next_rank_change_s(running, 3600.0) == 4 * 3600.0
    assert plugin.rank(running, 4 * 3600.0 - 1) > plugin.rank(info("fresh"), 4 * 3600.0 - 1)


def test_remaining_is_an_analysis_profile_outside_all() -> None:
    from scheduler.sim.cli import _policies

    rem = profile("remaining")
    names = [spec.name for spec in rem.plugins]
    assert names[0] == "remaining" and "las" not in names
    assert names[1:] == [spec.name for spec in profile("default").plugins if spec.name != "las"]
    plugin = Scheduler(rem).framework.queue_sort  # builds: the plugins accept their arguments
    assert isinstance(plugin, RemainingTimeFirst) and plugin.learned.relative is not None
    assert "remaining" not in _policies(["all"]) and _policies(["remaining"]) == ["remaining"]


def test_min_run_single_s_is_the_quantum_of_one_gpu_jobs() -> None:
    plugin = learned(RemainingArgs(min_samples=1, preempt_ratio=2.0, min_run_s=3600.0, min_run_single_s=8 * 3600.0))
    single, gang = info("single"), info("gang", gpus=8)
    assert (plugin.quantum_s(single), plugin.quantum_s(gang)) == (8 * 3600.0, 3600.0)
    only_single = learned(RemainingArgs(min_samples=1, preempt_ratio=2.0, min_run_single_s=600.0))
    single.phase, single.bound_at_s = Phase.RUNNING, 0.0
    assert only_single.next_rank_change_s(single, 10.0) == 600.0
    assert RemainingTimeFirst(RemainingArgs(preempt_ratio=2.0, min_run_s=60.0)).quantum_s(single) == 60.0


# --- scale-free guards (session 20): quantum and starvation limit relative to the expected run ----

E_FRESH = 40380.0 / 5  # a fresh job's expected run from RUNS (the mean): 8,076 s


@dataclass(frozen=True)
class QuantumCase:
    name: str
    args: dict[str, object]
    want: float
    gpus: int = 8
    banked_s: float = 0.0  # run time banked before this run started
    evictions: int = 0
    history: bool = True


QUANTUM_CASES = [
    QuantumCase("absolute floor alone (no min_run_frac): as before", {"min_run_s": 3600.0}, 3600.0),
    QuantumCase("a fraction of the expected run", {"min_run_s": 600.0, "min_run_frac": 0.5}, 0.5 * E_FRESH),
    QuantumCase("the floor when the fraction is shorter", {"min_run_s": 600.0, "min_run_frac": 0.05}, 600.0),
    QuantumCase("capped by min_run_max_s", {"min_run_s": 600.0, "min_run_frac": 0.5, "min_run_max_s": 3000.0}, 3000.0),
    QuantumCase("one-GPU jobs: min_run_single_s is their floor",
                {"min_run_s": 600.0, "min_run_single_s": 1000.0, "min_run_frac": 0.05}, 1000.0, gpus=1),
    QuantumCase("one-GPU jobs: the fraction above their floor",
                {"min_run_s": 600.0, "min_run_single_s": 1000.0, "min_run_frac": 0.5}, 0.5 * E_FRESH, gpus=1),
    QuantumCase("E is taken at the run's start: 700 s banked, 19,100 s expected", {"min_run_frac": 0.5},
                0.5 * (19800.0 - 700.0), banked_s=700.0),
    QuantumCase("growth per eviction multiplies the relative quantum",
                {"min_run_s": 600.0, "min_run_frac": 0.5, "min_run_growth": 2.0}, 4 * 0.5 * E_FRESH, evictions=2),
    QuantumCase("nothing known (no history, no estimate): the floor alone", {"min_run_s": 600.0, "min_run_frac": 0.5},
                600.0, history=False),
]


@pytest.mark.parametrize("case", QUANTUM_CASES, ids=lambda c: c.name)
def test_quantum_arithmetic(case: QuantumCase) -> None:
    args = RemainingArgs(min_samples=1, preempt_ratio=2.0, **case.args)  # type: ignore[arg-type]
    plugin = learned(args) if case.history else RemainingTimeFirst(args)
    running = info("r", gpus=case.gpus, attained_h=case.banked_s / 3600)
    running.phase, running.bound_at_s, running.evictions = Phase.RUNNING, 5000.0, case.evictions
    assert plugin.quantum_s(running) == pytest.approx(case.want)
    # announced once, and the same a while later although the job has run since (E at the start)
    assert plugin.next_rank_change_s(running, 5001.0) == pytest.approx(5000.0 + case.want)
    assert plugin.next_rank_change_s(running, 5000.0 + case.want / 2) == pytest.approx(5000.0 + case.want)


@dataclass(frozen=True)
class StarveCase:
    name: str
    args: dict[str, object]
    want: float
    history: bool = True


STARVE_CASES = [
    StarveCase("neither: never", {}, float("inf")),
    StarveCase("starve_s alone: as before", {"starve_s": 86400.0}, 86400.0),
    StarveCase("starve_factor x the expected run", {"starve_factor": 2.0}, 2 * E_FRESH),
    StarveCase("starve_s caps the relative limit", {"starve_factor": 4.0, "starve_s": 20000.0}, 20000.0),
    StarveCase("relative below the cap", {"starve_factor": 2.0, "starve_s": 86400.0}, 2 * E_FRESH),
    StarveCase("nothing known: the cap", {"starve_factor": 2.0, "starve_s": 86400.0}, 86400.0, history=False),
    StarveCase("nothing known, no cap: never", {"starve_factor": 2.0}, float("inf"), history=False),
]


@pytest.mark.parametrize("case", STARVE_CASES, ids=lambda c: c.name)
def test_starvation_limit_arithmetic(case: StarveCase) -> None:
    args = RemainingArgs(min_samples=1, preempt_ratio=2.0, **case.args)  # type: ignore[arg-type]
    plugin = learned(args) if case.history else RemainingTimeFirst(args)
    waiting = info("w", gpus=8, submit=1000.0)
    assert plugin.starve_limit_s(waiting) == case.want
    if case.want != float("inf"):
        assert plugin.work(waiting, 1000.0 + case.want - 1) > 0
        assert plugin.work(waiting, 1000.0 + case.want + 1) == 0.0, "starving: first"


def test_relative_guards_scale_with_the_jobs_own_estimate() -> None:
    """Ten times the estimate, ten times the quantum and the starvation limit: no absolute
    hours hide in the guards once the floor and the cap do not bind."""
    plugin = RemainingTimeFirst(RemainingArgs(min_samples=1, preempt_ratio=2.0, relative=True, min_run_s=60.0,
                                              min_run_frac=0.5, starve_factor=3.0))
    for est, ran in ((100.0, 200.0), (1000.0, 3000.0)):  # learned ratios 2 and 3: mean 2.5
        plugin.job_finished(info("done", gpus=8, est=est, attained_h=ran / 3600), 0.0)
    small, large = info("small", gpus=8, est=1000.0), info("large", gpus=8, est=10000.0)
    assert plugin.starve_limit_s(small) == pytest.approx(3 * 2500.0)
    assert plugin.starve_limit_s(large) == pytest.approx(3 * 25000.0)
    for job in (small, large):
        job.phase, job.bound_at_s = Phase.RUNNING, 0.0
    assert plugin.quantum_s(small) == pytest.approx(1250.0)
    assert plugin.quantum_s(large) == pytest.approx(12500.0)


def test_relative_quantum_is_kept_for_the_run_and_renewed_on_the_next() -> None:
    plugin = learned(RemainingArgs(min_samples=1, preempt_ratio=2.0, min_run_s=60.0, min_run_frac=0.5))
    running = info("r", gpus=8)
    running.phase, running.bound_at_s = Phase.RUNNING, 0.0
    first = plugin.quantum_s(running)
    assert first == pytest.approx(0.5 * E_FRESH)
    for _ in range(20):  # what is learned during the run does not move its announced end
        plugin.history.observe("a", 8, 10.0)
    assert plugin.quantum_s(running) == first
    running.attained_gpu_s, running.bound_at_s = 8 * 3000.0, 9000.0  # evicted after 3,000 s, restarted
    assert plugin.quantum_s(running) != first, "a new run: E from the history and service now"
    plugin.job_finished(running, 9500.0)
    assert "r" not in plugin._quanta


def test_relative_quantum_memo_forgets_a_job_deleted_unfinished() -> None:
    """A relative quantum is memoised per run; a job deleted while running, or evicted and
    then deleted while pending, never finishes, so the deletion must drop the memo."""
    sched = Scheduler(with_args(profile("remaining"), ["remaining.min_samples=1", "remaining.min_run_frac=0.5"]))
    sched.handle(NodeAdded(make_node("n1").gpus(8).obj()))
    sched.handle(*(JobAdded(make_job(j).gpus(2).estimate(3600.0).obj()) for j in ("run", "evicted", "done")))
    assert {b.job_id for b in sched.schedule(0.0).bindings} == {"run", "evicted", "done"}
    plugin = sched.framework.queue_sort
    assert isinstance(plugin, RemainingTimeFirst)
    assert set(plugin._quanta) == {"run", "evicted", "done"}
    sched.handle(JobEvicted("evicted", 100.0))
    sched.schedule(100.0)
    sched.handle(JobDeleted("run"), JobDeleted("evicted"), JobFinished("done", 200.0))
    assert plugin._quanta == {}


@pytest.mark.parametrize("kwargs", [
    {"min_run_frac": 0.0}, {"min_run_frac": -0.5}, {"min_run_frac": 101.0},
    {"min_run_max_s": 0.0}, {"min_run_s": 3600.0, "min_run_max_s": 600.0},
    {"min_run_single_s": 28800.0, "min_run_max_s": 3600.0}, {"starve_factor": 0.0}, {"starve_factor": -1.0},
])
def test_scale_free_guards_refuse_bad_arguments(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="remaining: (min_run_frac|min_run_max_s|starve_factor)"):
        RemainingTimeFirst(RemainingArgs(**kwargs))  # type: ignore[arg-type]


def test_replay_quantum_comes_from_the_estimate_not_the_true_duration() -> None:
    """One 8-GPU node. Three 8-GPU jobs of 1,000 s teach the estimator and the history; then a
    probe (estimate 1,000 s, true duration 50,000 or 90,000 s) starts, and one-GPU jobs arrive
    that outrank it once its quantum ends. With min_run_frac 2 the probe runs 2 x 1,000 s before
    its first eviction (the parked one-GPU jobs are retried by then or at the next 300 s queue
    flush), whatever its true duration; absolute hours would give the 600 s floor (evicted at
    4,800 s), the true duration 100,000 or 180,000 s."""
    nodes = build_nodes(ClusterSpec(1, 8, 1))
    prof = with_args(profile("remaining"), [
        "remaining.min_run_s=600.0", "remaining.min_run_single_s=null", "remaining.min_run_frac=2.0",
        "remaining.starve_s=null", "remaining.min_samples=1"])

    def probe_runs(duration_s: float) -> list[tuple[float, float]]:
        trace = [TraceJob(f"w{i}", "vc1", 1100.0 * i, 8, 1000.0) for i in range(3)]
        trace.append(TraceJob("probe", "vc1", 4000.0, 8, duration_s))
        trace += [TraceJob(f"s{i}", "vc2", 4100.0 + i, 1, 300.0) for i in range(4)]
        sim = Simulation(trace, nodes, prof, slowdown=SlowdownModel(nodes, 0))
        return {r.trace.job_id: r.runs for r in sim.run().records}["probe"]

    short, long_ = probe_runs(50000.0), probe_runs(90000.0)
    assert short[0] == long_[0]
    start, end = short[0]
    assert start == 4000.0 and 6000.0 <= end < 6000.0 + 300.0, "evicted when the quantum ends (or the next flush)"


def test_guard_basis_estimate_scales_with_the_jobs_own_estimate_not_the_learned_mean() -> None:
    args = RemainingArgs(min_samples=1, preempt_ratio=2.0, min_run_s=60.0, min_run_frac=0.5, starve_factor=2.0,
                         guard_basis="estimate")
    plugin = learned(args)  # the learned mean for a fresh job is 8,076 s; its own estimate 1,000 s
    job = info("j", gpus=8, est=1000.0, attained_h=5.0)
    assert plugin.starve_limit_s(job) == 2000.0
    assert plugin.work(job, 2001.0) == 0.0 and plugin.work(job, 1999.0) > 0
    job.phase, job.bound_at_s = Phase.RUNNING, 0.0
    assert plugin.quantum_s(job) == 500.0, "the estimate, whatever the service banked"
    no_estimate = info("n", gpus=8)
    no_estimate.phase, no_estimate.bound_at_s = Phase.RUNNING, 0.0
    assert plugin.quantum_s(no_estimate) == pytest.approx(0.5 * E_FRESH), "without one: the learned E"
    with pytest.raises(ValueError, match="remaining: guard_basis"):
        RemainingTimeFirst(RemainingArgs(guard_basis="truth"))


# --- the pairwise margin (session 22): an eviction only for m x less expected work -------------


def test_preempt_margin_refuses_a_victim_with_less_than_m_times_the_work() -> None:
    fresh, ran = info("fresh"), info("ran", attained_h=700 / 3600)  # 8,076 s vs 19,100 s left: 2.37 x
    buckets = learned(RemainingArgs(min_samples=1, preempt_ratio=2.0))
    assert buckets.rank(ran, 0.0) < buckets.rank(fresh, 0.0), "the buckets let fresh evict ran"
    assert buckets.may_evict(fresh, ran, 0.0), "no margin: the rank alone decides"
    assert learned(RemainingArgs(min_samples=1, preempt_ratio=2.0, preempt_margin=2.0)).may_evict(fresh, ran, 0.0)
    three = learned(RemainingArgs(min_samples=1, preempt_ratio=2.0, preempt_margin=3.0))
    assert not three.may_evict(fresh, ran, 0.0), "2.37 x is under a margin of 3"
    urgent = info("urgent", attained_h=700 / 3600, priority=1)
    assert three.may_evict(urgent, fresh, 0.0), "a higher priority needs no margin"
    unknown = RemainingTimeFirst(RemainingArgs(preempt_ratio=2.0, preempt_margin=3.0))
    assert unknown.may_evict(info("a", est=60.0), info("b"), 0.0), "a victim of unknown work is fair game"
    with pytest.raises(ValueError, match="remaining: preempt_margin"):
        RemainingTimeFirst(RemainingArgs(preempt_margin=0.5))


@pytest.mark.parametrize(("margin", "want"), [(None, ["old"]), (2.0, ["old"]), (3.0, [])])
def test_preemption_asks_the_queue_sorts_margin(margin: float | None, want: list[str]) -> None:
    """One 8-GPU node held by an 8-GPU gang for 3,000 s (past the 45 min quantum): it expects
    16,800 s more per GPU, a newcomer of the same width 8,076 s (2.08 x less). The rank buckets
    (ratio 2) allow the eviction; the preemption plugin asks the margin too."""
    sched = _old_then_new(["remaining.min_samples=1",
                           f"remaining.preempt_margin={'null' if margin is None else margin}"])
    assert [p.victim_id for p in sched.schedule(3000.0).preemptions] == want


def _old_then_new(args: list[str]) -> Scheduler:
    """`remaining` with ``args``, one 8-GPU node, 8-GPU runs of RUNS learned: "old" (8 GPUs)
    bound at 0 and "new" (8 GPUs) submitted at 3,000 s, not yet scheduled."""
    sched = Scheduler(with_args(profile("remaining"), args))
    plugin = sched.framework.queue_sort
    assert isinstance(plugin, RemainingTimeFirst)
    for run_s in RUNS:
        plugin.history.observe("t", 8, run_s)
    sched.handle(NodeAdded(make_node("n1").gpus(8).obj()))
    sched.handle(JobAdded(make_job("old").gpus(8).tenant("t").obj()))
    assert [b.job_id for b in sched.schedule(0.0).bindings] == ["old"]
    sched.handle(JobAdded(make_job("new").gpus(8).tenant("t").submitted(3000.0).obj()))
    return sched


@pytest.mark.parametrize(("budget", "las_gpu_h", "want"), [
    (None, 128.0, ["new"]),  # no budget: the learned rank lets "newer" evict "new" as "new" evicted "old"
    (0.3, 128.0, []),  # 1 eviction > 0.3 x 3 jobs: LAS's rank, and "new" has attained 6.7 of 128 GPU-h
    (0.3, 6.0, ["new"]),  # ... but past a 6 GPU-h LAS threshold "new" is in the lower queue
    (0.4, 128.0, ["new"]),  # 1 eviction <= 0.4 x 3 jobs: the budget is not spent
])
def test_evict_budget_falls_back_to_las_rank_once_spent(budget: float | None, las_gpu_h: float,
                                                        want: list[str]) -> None:
    """One 8-GPU node. "old" runs from 0, "new" evicts it at 3,000 s (16,800 s expected left
    against a newcomer's 8,076 s: the rank buckets allow it), "newer" arrives at 6,000 s when
    "new" has run 3,000 s too: the same comparison, unless the budget is spent."""
    sched = _old_then_new(["remaining.min_samples=1", f"remaining.evict_budget={'null' if budget is None else budget}",
                           "remaining.evict_budget_min_jobs=1", f"remaining.evict_budget_las_gpu_h={las_gpu_h}"])
    assert [p.victim_id for p in sched.schedule(3000.0).preemptions] == ["old"], "0 evictions: within any budget"
    sched.handle(JobEvicted("old", 3000.0))
    assert [b.job_id for b in sched.schedule(3000.0).bindings] == ["new"]
    assert (sched.state.jobs_added, sched.state.evictions_total) == (2, 1)
    sched.handle(JobAdded(make_job("newer").gpus(8).tenant("t").submitted(6000.0).obj()))
    assert [p.victim_id for p in sched.schedule(6000.0).preemptions] == want


@pytest.mark.parametrize("kwargs", [{"evict_budget": 0.0}, {"evict_budget_min_jobs": 0},
                                    {"evict_budget_las_gpu_h": -1.0}])
def test_evict_budget_refuses_bad_arguments(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="remaining: evict_budget"):
        RemainingTimeFirst(RemainingArgs(**kwargs))  # type: ignore[arg-type]
