"""EndTimeFit (plugins/endtime): table-driven node scores on a small cluster, the learned
estimate coming from finished jobs only, the node a pass picks, and a replay where it saves
a defragmentation move."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from scheduler.framework.registry import PluginSpec
from scheduler.plugins.endtime.plugin import EndTimeArgs, EndTimeFit
from scheduler.profiles import profile, with_args, with_plugins
from scheduler.sim import ClusterSpec, Simulation, SlowdownModel, build_nodes, summarize
from scheduler.sim.trace import TraceJob
from scheduler.state import ClusterState
from scheduler.testing import cluster, cycle_state, make_job, make_nodes, plugin_profile, run_pass

H = 3600.0


def scored_cluster() -> ClusterState:
    """n0 empty; n1: a (1 GPU, 1 h); n2: b (2 GPUs, 10 h); n3: c (1 GPU, 100 h) and d (1 GPU,
    1 h): the horizon is the longest. Estimates only; all bound at 0."""
    return (
        cluster(make_nodes(4))
        .running(make_job("a").gpus(1).estimate(1 * H), {"n1": 1})
        .running(make_job("b").gpus(2).estimate(10 * H), {"n2": 2})
        .running(make_job("c").gpus(1).estimate(100 * H), {"n3": 1})
        .running(make_job("d").gpus(1).estimate(1 * H), {"n3": 1})
        .state()
    )


@dataclass(frozen=True)
class ScoreCase:
    name: str
    mode: str
    estimate_h: float | None
    want: dict[str, int]
    now_h: float = 0.0
    gpus: int = 1
    args: dict[str, object] = field(default_factory=dict)


SCORE_CASES = [
    ScoreCase("cover: a long job prefers long horizons", "cover", 10.0,
              {"n0": 0, "n1": 10, "n2": 100, "n3": 100}),
    ScoreCase("match: long with long", "match", 10.0, {"n0": 0, "n1": 10, "n2": 100, "n3": 10}),
    ScoreCase("cover: a short job ends inside every horizon", "cover", 1.0,
              {"n0": 0, "n1": 100, "n2": 100, "n3": 100}),
    ScoreCase("match: short with short", "match", 1.0, {"n0": 0, "n1": 100, "n2": 10, "n3": 1}),
    ScoreCase("running gangs count what they have left", "cover", 10.0,
              {"n0": 0, "n1": 5, "n2": 95, "n3": 100}, now_h=0.5),
    ScoreCase("past its estimate a gang expects as long again", "cover", 10.0,
              {"n0": 0, "n1": 20, "n2": 80, "n3": 100}, now_h=2.0),
    ScoreCase("overrun factor", "cover", 10.0, {"n0": 0, "n1": 10, "n2": 80, "n3": 100}, now_h=2.0,
              args={"overrun_factor": 0.5}),
    ScoreCase("no estimate: no preference", "cover", None, {"n0": 0, "n1": 0, "n2": 0, "n3": 0}),
    ScoreCase("larger than a node: no preference", "match", 10.0, {"n0": 0, "n1": 0, "n2": 0, "n3": 0},
              gpus=16),
]


@pytest.mark.parametrize("case", SCORE_CASES, ids=lambda c: c.name)
def test_scores(case: ScoreCase) -> None:
    state = scored_cluster()
    builder = make_job("j").gpus(case.gpus).submitted(case.now_h * H)
    if case.estimate_h is not None:
        builder = builder.estimate(case.estimate_h * H)
    info = builder.info()
    plugin = EndTimeFit(EndTimeArgs(mode=case.mode, estimate="hint", **case.args))  # type: ignore[arg-type]
    cs = cycle_state(state, info, now_s=case.now_h * H)
    got = {name: plugin.score(cs, info, node, info.job.tasks) for name, node in sorted(state.nodes.items())}
    assert got == case.want


def test_a_gang_being_evicted_does_not_count() -> None:
    state = scored_cluster()
    state.running["c"].evicting = True
    info = make_job("j").gpus(1).estimate(10 * H).info()
    plugin = EndTimeFit(EndTimeArgs(estimate="hint"))
    assert plugin.score(cycle_state(state, info), info, state.nodes["n3"], 1) == 10  # d's 1 h only


def test_learned_estimate_comes_from_finished_jobs_only() -> None:
    """Before any job finished the learned estimate is the job's own; after a 1-GPU job of the
    tenant ran 10 h, a running 1-GPU job estimated at 1 h is expected to run 10 h."""
    builder = cluster(make_nodes(2)).running(make_job("x").gpus(1).tenant("t").estimate(1 * H), {"n1": 1})
    state = builder.state()
    info = make_job("y").gpus(1).tenant("t").estimate(10 * H).info()
    plugin = EndTimeFit(EndTimeArgs(mode="match", relative=False, min_samples=1))
    assert plugin.score(cycle_state(state, info), info, state.nodes["n1"], 1) == 10
    done = make_job("old").gpus(1).tenant("t").info()
    done.attained_gpu_s = 10 * H
    plugin.job_finished(done, 10 * H)
    # y (10 h expected) and x (10 h expected, at 0 s run) now match
    assert plugin.score(cycle_state(state, info), info, state.nodes["n1"], 1) == 100


def test_the_pass_puts_a_long_job_beside_long_ones() -> None:
    """Best fit alone puts a long one-GPU job on n1 (2 GPUs free, a short job there); with
    ``endtime`` it goes to n2 (4 free, a long job), so n1 comes free whole in an hour."""
    base = cluster(make_nodes(3)) \
        .running(make_job("short").gpus(6).estimate(1 * H), {"n1": 6}) \
        .running(make_job("long").gpus(4).estimate(10 * H), {"n2": 4})
    job = make_job("j").gpus(1).estimate(10 * H).obj()
    want = {(): "n1", ("endtime",): "n2"}
    for extra, node in want.items():
        prof = plugin_profile("topology", *extra, endtime={"estimate": "hint"})
        sched = base.scheduler(prof, jobs=[job])
        (binding,) = run_pass(sched).bindings
        assert {t.node for t in binding.placement.tasks} == {node}, extra


def trace() -> list[TraceJob]:
    """A history (one-GPU and 4-GPU jobs of ``l`` ran 10 h, a 6-GPU job of ``s`` 1 h), then:
    L0 (4 GPUs, 10 h) takes a node, S (6 GPUs, 1 h) the other, L1 (1 GPU, 10 h) arrives and
    an 8-GPU gang comes after S ended. Best fit puts L1 beside S, so the gang needs a move."""
    history = [TraceJob("w1", "l", 0.0, 1, 10 * H), TraceJob("w4", "l", 0.0, 4, 10 * H),
               TraceJob("w6", "s", 0.0, 6, 1 * H)]
    at = 20 * H
    return history + [TraceJob("L0", "l", at, 4, 10 * H), TraceJob("S", "s", at + 5, 6, 1 * H),
                      TraceJob("L1", "l", at + 10, 1, 10 * H), TraceJob("G", "l", at + 1.5 * H, 8, 10 * H)]


@pytest.mark.parametrize("policy", ["default", "remaining"])
@pytest.mark.parametrize("seed", [0, 1])
def test_replay_needs_no_move_with_endtime(policy: str, seed: int) -> None:
    moves: dict[str, int] = {}
    for extra in ([], ["endtime"]):
        nodes = build_nodes(ClusterSpec(2, 8, 1))
        prof = with_args(with_plugins(profile(policy), extra), ['endtime.estimate="hint"'] if extra else [])
        result = Simulation(trace(), nodes, prof, seed=seed, slowdown=SlowdownModel(nodes, seed)).run()
        assert not result.unfinished
        assert summarize(prof.name, result)["moves_per_job"] == sum(r.moves for r in result.records) / 7
        moves[prof.name] = sum(r.moves for r in result.records)
    assert moves == {policy: 1, f"{policy}+endtime": 0}


def test_with_plugins() -> None:
    prof = with_plugins(profile("default"), ["endtime:3", "topology:4"])
    assert prof.name == "default+endtime:3+topology:4"
    assert prof.plugins[-1] == PluginSpec("endtime", weight=3)
    assert [p.weight for p in prof.plugins if p.name == "topology"] == [4]
    assert len(prof.plugins) == len(profile("default").plugins) + 1
    for bad in ("endtime:0", "endtime:x", ":2", "topology"):
        with pytest.raises(ValueError):
            with_plugins(profile("default"), [bad])
