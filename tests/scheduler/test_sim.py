"""The simulator: replays, the slowdown model, estimates, metrics and the CLI's JSON lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scheduler.model import Node, Placement, TaskAssignment
from scheduler.profiles import profile
from scheduler.sim import (
    ClusterSpec,
    Estimator,
    Simulation,
    SlowdownModel,
    build_nodes,
    read_trace,
    summarize,
)
from scheduler.sim.cli import main
from scheduler.sim.metrics import percentile
from scheduler.sim.trace import TraceJob

TRACES = Path(__file__).resolve().parents[3] / "shared" / "traces"
PHILLY = TRACES / "philly_jobs_busiest_week.csv"
ALIBABA = TRACES / "alibaba_openb_nodes.csv"
needs_traces = pytest.mark.skipif(not PHILLY.exists(), reason="shared traces not present")

FIELDS = {"policy", "jobs", "avg_jct_h", "p50_jct_h", "p95_jct_h", "p99_jct_h", "avg_queue_h", "util",
          "frac_small_in_one_node", "frac_large_in_one_rack", "preemptions_per_job", "decisions_per_s"}


def synthetic_trace() -> list[TraceJob]:
    """Two waves: a 16-GPU gang, 8-GPU jobs and a stream of one-GPU jobs on 2 x 8 GPUs."""
    jobs = [TraceJob("big", "vc1", 0.0, 16, 3600.0)]
    jobs += [TraceJob(f"w{i}", "vc1", 10.0 + i, 8, 1800.0) for i in range(3)]
    jobs += [TraceJob(f"s{i}", "vc2" if i % 2 else "vc1", 20.0 + 60 * i, 1, 300.0 + 10 * i) for i in range(40)]
    return jobs


def replay(name: str, trace: list[TraceJob], nodes: list[Node], seed: int = 0) -> dict[str, object]:
    sim = Simulation(trace, nodes, profile(name), seed=seed, slowdown=SlowdownModel(nodes, seed))
    return summarize(name, sim.run())


@pytest.mark.parametrize("name", ["default", "b1-fifo", "b2-spread", "b3-pack", "b4-las"])
def test_every_policy_finishes_a_synthetic_trace(name: str) -> None:
    nodes = build_nodes(ClusterSpec(2, 8, 1))
    trace = synthetic_trace()
    metrics = replay(name, trace, nodes)
    assert metrics["jobs"] == 44 and metrics["unfinished"] == 0
    ideal_h = sum(j.duration_s for j in trace) / len(trace) / 3600
    assert float(metrics["avg_jct_h"]) >= ideal_h  # nobody finishes faster than its run time
    assert 0 < float(metrics["util"]) <= 1


@pytest.mark.parametrize("name", ["default", "b3-pack", "b4-las", "remaining"])
def test_a_replay_ends_when_a_job_fits_nowhere(name: str) -> None:
    # A 16-GPU gang on one 8-GPU node never starts. The replay used to wake up every retry
    # period forever (B3 on the Alibaba shapes, seed 2, never returned); now it stops
    # STUCK_AFTER_S after the cluster went idle and reports the job unfinished.
    import signal

    def hung(signum: int, frame: object) -> None:
        raise TimeoutError("the replay did not end")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(60)
    try:
        nodes = build_nodes(ClusterSpec(1, 8, 1))
        trace = [TraceJob("fits", "v", 0.0, 4, 600.0), TraceJob("never", "v", 10.0, 16, 600.0),
                 TraceJob("later", "v", 5000.0, 1, 60.0)]
        sim = Simulation(trace, nodes, profile(name), slowdown=SlowdownModel(nodes, 0))
        result = sim.run()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert result.unfinished == ["never"]
    assert {r.trace.job_id for r in result.records if r.finish_s is not None} == {"fits", "later"}
    assert result.end_s < 5060.0 + 3600  # the makespan ends where the cluster went idle, not after the wait
    assert summarize(name, result)["unfinished"] == 1


@pytest.mark.parametrize("name", ["default", "b4"])
def test_the_makespan_ends_with_the_last_job(name: str) -> None:
    """The replay used to run on through the scheduler's own timers after the last job
    finished (a 100 s trace reported a 64 h makespan)."""
    nodes = build_nodes(ClusterSpec(2, 8, 1))
    trace = [TraceJob("a", "v", 10.0, 2, 100.0), TraceJob("b", "w", 20.0, 1, 50.0)]
    result = Simulation(trace, nodes, profile(name), slowdown=SlowdownModel(nodes, 0)).run()
    assert result.end_s == max(r.finish_s for r in result.records) == 110.0
    assert summarize(name, result)["makespan_h"] == 110.0 / 3600


def test_strict_fifo_makes_small_jobs_wait_behind_the_gang() -> None:
    nodes = build_nodes(ClusterSpec(2, 8, 1))
    trace = [TraceJob("busy", "v", 0.0, 4, 3600.0), TraceJob("gang", "v", 1.0, 16, 600.0)]
    trace += [TraceJob(f"s{i}", "v", 2.0 + i, 1, 60.0) for i in range(4)]
    b1 = Simulation(trace, nodes, profile("b1"), slowdown=SlowdownModel(nodes, 0)).run()
    b3 = Simulation(trace, nodes, profile("b3"), slowdown=SlowdownModel(nodes, 0)).run()
    start = {r.trace.job_id: r.first_start_s for r in b1.records}
    assert all(start[f"s{i}"] >= 3600.0 for i in range(4))  # head-of-line blocking
    start3 = {r.trace.job_id: r.first_start_s for r in b3.records}
    assert all(start3[f"s{i}"] < 10.0 for i in range(4))  # skip ahead


def test_idle_gpu_hours_while_a_job_waits() -> None:
    # One 8-GPU node: 'busy' holds 4 GPUs for an hour, the 8-GPU 'gang' waits for it from t=1,
    # and a one-GPU job skips ahead onto the idle GPUs for a minute. Idle while some job
    # waits: 4 GPUs x 3,599 s less the minute the small job used one of them.
    nodes = build_nodes(ClusterSpec(1, 8, 1))
    trace = [TraceJob("busy", "v", 0.0, 4, 3600.0), TraceJob("gang", "v", 1.0, 8, 600.0),
             TraceJob("small", "v", 2.0, 1, 60.0)]
    metrics = summarize("b3", Simulation(trace, nodes, profile("b3"), slowdown=SlowdownModel(nodes, 0)).run())
    assert metrics["idle_gpu_h_while_waiting"] == pytest.approx((4 * 3599.0 - 60.0) / 3600)
    # nothing waits: nothing counted, however idle the cluster
    alone = summarize("b3", Simulation(trace[:1], nodes, profile("b3"), slowdown=SlowdownModel(nodes, 0)).run())
    assert alone["idle_gpu_h_while_waiting"] == 0.0


def test_same_seed_same_replay() -> None:
    nodes = build_nodes(ClusterSpec(2, 8, 1))
    a, b = (replay("default", synthetic_trace(), nodes, seed=3) for _ in range(2))
    for key in ("avg_jct_h", "p99_jct_h", "avg_queue_h", "preemptions_per_job", "util"):
        assert a[key] == b[key]


def test_slowdown_model_levels() -> None:
    nodes = [Node("a", 8, rack="r0", islands=(4, 4)), Node("b", 8, rack="r0"), Node("c", 8, rack="r1")]
    model = SlowdownModel(nodes, seed=0)
    draws = [model.assign(f"j{i}", 8) for i in range(2000)]
    shares = {c.name: sum(1 for d in draws if d is c) / len(draws) for c in {d for d in draws if d}}
    assert shares["compute-bound"] == pytest.approx(0.4, abs=0.04)
    assert shares["comm-heavy"] == pytest.approx(0.2, abs=0.04)
    assert model.assign("single", 1) is None
    cls = model.classes["j0"]

    def on(*parts: tuple[str, tuple[int, ...]]) -> Placement:
        return Placement(tuple(TaskAssignment(i, n, g) for i, (n, g) in enumerate(parts)))

    assert model.factor("j0", on(("a", (0, 1, 2, 3)))) == 1.0
    assert model.factor("j0", on(("a", (3, 4)))) == cls.split_node
    assert model.factor("j0", on(("a", (0,)), ("b", (0,)))) == cls.same_rack
    assert model.factor("j0", on(("a", (0,)), ("c", (0,)))) == cls.cross_rack
    stretched = SlowdownModel(nodes, 0, cross_rack_scale=2.0)
    stretched.classes["j0"] = cls
    assert stretched.factor("j0", on(("a", (0,)), ("c", (0,)))) == pytest.approx(1 + 2 * (cls.cross_rack - 1))


def test_history_estimates_use_only_finished_jobs() -> None:
    est = Estimator("history")
    assert est.estimate("vc", 1, 999.0) is None
    est.observe("vc", 2, 100.0)
    assert est.estimate("vc", 1, 999.0) == 100.0  # falls back to all jobs
    est.observe("vc", 1, 50.0)
    est.observe("vc", 1, 70.0)
    assert est.estimate("vc", 1, 999.0) == 60.0
    assert Estimator("oracle").estimate("vc", 1, 999.0) == 999.0
    assert Estimator("none").estimate("vc", 1, 999.0) is None


def test_partial_oracles_give_true_durations_to_one_size_class_only() -> None:
    gangs, single = Estimator("oracle-gangs"), Estimator("oracle-single")
    for est in (gangs, single):
        est.observe("vc", 1, 50.0)
        est.observe("vc", 4, 70.0)
    assert gangs.estimate("vc", 4, 999.0) == 999.0
    assert gangs.estimate("vc", 1, 999.0) == 50.0  # history for one-GPU jobs
    assert single.estimate("vc", 1, 999.0) == 999.0
    assert single.estimate("vc", 4, 999.0) == 70.0  # history for gangs


def test_progress_estimates_become_true_at_a_gangs_first_start() -> None:
    est = Estimator("progress")
    est.observe("vc", 4, 70.0)
    assert est.estimate("vc", 4, 999.0) == 70.0  # history until it starts
    assert est.on_start("j", 4, 999.0) == 999.0
    assert est.on_start("j", 1, 999.0) is None  # one-GPU jobs keep their history estimate
    assert Estimator("history").on_start("j", 4, 999.0) is None
    noisy = Estimator("progress", noise_sigma=0.5, seed=3)
    first = noisy.on_start("j", 4, 1000.0)
    assert first is not None and first != 1000.0 and first > 0
    assert Estimator("progress", noise_sigma=0.5, seed=3).on_start("j", 4, 1000.0) == first  # seeded per job
    assert Estimator("progress", noise_sigma=0.5, seed=4).on_start("j", 4, 1000.0) != first
    with pytest.raises(ValueError, match="sigma"):
        Estimator("progress", noise_sigma=-1.0)


def test_a_replay_tells_the_core_the_progress_estimate_once_a_gang_starts() -> None:
    nodes = build_nodes(ClusterSpec(2, 8, 1))
    trace = synthetic_trace()
    seen: list[tuple[str, float | None]] = []

    class Spy(Estimator):
        def on_start(self, job_id: str, gpus: int, true_duration_s: float) -> float | None:
            new = super().on_start(job_id, gpus, true_duration_s)
            seen.append((job_id, new))
            return new

    sim = Simulation(trace, nodes, profile("default"), estimator=Spy("progress"), slowdown=SlowdownModel(nodes, 0))
    result = sim.run()
    assert sorted(j for j, _ in seen) == sorted(t.job_id for t in trace)  # each job once, at its first start
    truth = {t.job_id: t.duration_s for t in trace}
    assert all(new == truth[j] for j, new in seen if truth[j] and j in ("big", "w0", "w1", "w2"))
    assert all(new is None for j, new in seen if j.startswith("s"))
    assert {r.job.job_id: r.job.est_runtime_s for r in result.records}["big"] == 3600.0


def test_percentile() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([5.0], 99) == 5.0


@needs_traces
def test_cli_json_lines_on_the_real_trace(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--trace", str(PHILLY), "--limit", "400", "--nodes", "8", "--racks", "2", "--policy", "b3",
                 "--policy", "default", "--json", "--no-progress"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["policy"] for line in lines] == ["b3-pack", "default"]
    for line in lines:
        assert set(line) >= FIELDS and line["jobs"] == 400


@needs_traces
def test_alibaba_shapes_with_gpu_type_constraints(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--trace", str(PHILLY), "--limit", "300", "--node-csv", str(ALIBABA), "--sample-nodes", "40",
                 "--racks", "4", "--policy", "default", "--json", "--no-progress"]) == 0
    out = capsys.readouterr()
    line = json.loads(out.out.strip())
    assert line["jobs"] + line["unfinished"] == 300 and line["jobs"] > 250
    assert "gpu_type_constrained=" in out.err and "gpu_type_constrained=0" not in out.err


@needs_traces
def test_trace_reader() -> None:
    jobs = read_trace(PHILLY, limit=5)
    assert [j.job_id for j in jobs][:2] == ["philly-41869", "philly-41870"]
    assert jobs[2].gpus == 4 and jobs[2].duration_s == 29894.0


@needs_traces
def test_set_changes_plugin_arguments_and_refuses_bad_ones(capsys: pytest.CaptureFixture[str]) -> None:
    from scheduler.profiles import with_args

    base = profile("default")
    changed = with_args(base, ["preemption.return_holds=true", "las.thresholds_gpu_h=[8, 128]"])
    args = {spec.name: dict(spec.args) for spec in changed.plugins}
    assert args["preemption"]["return_holds"] is True
    assert args["las"]["thresholds_gpu_h"] == (8, 128)
    assert {spec.name: dict(spec.args) for spec in base.plugins}["preemption"].get("return_holds") is None
    for bad, says in (("nope.x=1", "has no plugin 'nope'"), ("preemption.bogus=1", "unknown arguments"),
                      ("preemption.return_min_gpus=0", "return_min_gpus must be"), ("preemption.patience=-1", "patience >= 0"),
                      ("preemption.hold_s=soon", "not JSON"), ("preemption", "expected plugin.arg=VALUE")):
        assert main(["--trace", str(PHILLY), "--limit", "5", "--set", bad, "--no-progress"]) == 2
        assert says in capsys.readouterr().err


@needs_traces
def test_plugin_adds_a_plugin_and_refuses_bad_ones(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--trace", str(PHILLY), "--limit", "5", "--no-progress", "--json"]
    assert main([*argv, "--plugin", "endtime:2", "--set", 'endtime.mode="match"']) == 0
    assert json.loads(capsys.readouterr().out)["policy"] == "default+endtime:2"
    for bad, says in (("nope", "unknown plugin 'nope'"), ("endtime:0", "WEIGHT >= 1"),
                      ("topology", "already runs")):
        assert main([*argv, "--plugin", bad]) == 2
        assert says in capsys.readouterr().err
    assert main([*argv, "--plugin", "endtime", "--set", 'endtime.mode="spread"']) == 2
    assert "mode must be" in capsys.readouterr().err


def test_srpt_is_an_analysis_profile_outside_all() -> None:
    from scheduler.cycle import Scheduler
    from scheduler.sim.cli import _policies

    srpt = profile("srpt")
    names = [spec.name for spec in srpt.plugins]
    assert names[0] == "sjf" and "las" not in names
    assert dict(srpt.plugins[0].args) == {"by": "gpu_time", "preempt_ratio": 2.0}
    assert names[1:] == [spec.name for spec in profile("default").plugins if spec.name != "las"]
    Scheduler(srpt)  # builds: the plugins accept their arguments
    assert "srpt" not in _policies(["all"]) and _policies(["srpt"]) == ["srpt"]


HEADER = "job_id,vc,submit_s,num_gpus,duration_s\n"


@pytest.mark.parametrize("text, says", [
    ("", "missing columns"),
    ("job_id,vc\n1,a\n", "missing columns ['duration_s', 'num_gpus', 'submit_s']"),
    (HEADER, "no jobs to replay"),
    (HEADER + "j1,a,x,1,10\n", ":2: submit_s 'x' is not a number"),
    (HEADER + "j1,a,0,1,10\nj2,a,0,1,nan\n", ":3: duration_s 'nan' must be a finite number >= 0"),
    (HEADER + "j1,a,0,1,inf\n", ":2: duration_s 'inf' must be"),
    (HEADER + "j1,a,-10,1,10\n", ":2: submit_s '-10' must be"),
    (HEADER + "j1,a,0,-1,10\n", ":2: num_gpus '-1' must be"),
    (HEADER + "j1,a,0,1.5,10\n", ":2: num_gpus '1.5' is not an integer"),
    (HEADER + "j1,a,0,1\n", ":2: the row has no duration_s"),
    (HEADER + "j1,a,0,1,10\nj1,a,5,1,10\n", ":3: job_id 'j1' already on line 2"),
])
def test_cli_refuses_a_malformed_trace_naming_the_line(tmp_path: Path, text: str, says: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "t.csv"
    path.write_text(text)
    assert main(["--trace", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m scheduler.sim: error: ") and says in err and err.count("\n") == 1


def test_cli_leaves_out_cpu_only_jobs_and_warns_of_vcs_without_quota(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """A trace other than Philly's: its VCs are not in the Helios table (before: no quota for
    any, silently), and jobs with no GPU (before: replayed and counted as one-GPU jobs)."""
    path = tmp_path / "t.csv"
    path.write_text(HEADER + "cpu,team-a,0,0,10\nj1,team-a,0,2,10\nj2,6214e9,5,1,10\n")
    assert main(["--trace", str(path), "--nodes", "2", "--racks", "1", "--policy", "default", "--json",
                 "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out.splitlines()[0])["jobs"] == 2
    assert "# note: 1 jobs with num_gpus 0 left out (the replay schedules GPUs), e.g. cpu" in err
    assert "# warning: --quotas helios: 1 VCs of the trace (team-a; 1 of 2 jobs) are not in the Helios table" in err
    assert main(["--trace", str(path), "--nodes", "2", "--racks", "1", "--policy", "default", "--json",
                 "--no-progress", "--quotas", "none"]) == 0
    assert "warning" not in capsys.readouterr().err
    path.write_text(HEADER + "cpu,team-a,0,0,10\n")
    assert main(["--trace", str(path), "--no-progress"]) == 2
    assert "no jobs to replay" in capsys.readouterr().err


def test_cli_refuses_a_missing_trace_or_node_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--trace", str(tmp_path / "none.csv"), "--no-progress"]) == 2
    assert "No such file" in capsys.readouterr().err
    trace = tmp_path / "t.csv"
    trace.write_text(HEADER + "j1,a,0,1,10\n")
    nodes = tmp_path / "n.csv"
    nodes.write_text("sn,gpu\nn1,8\nn1,4\n")
    assert main(["--trace", str(trace), "--node-csv", str(nodes), "--no-progress"]) == 2
    assert "n.csv:3: node 'n1' already on line 2" in capsys.readouterr().err
    nodes.write_text("sn,gpu\nn1,eight\n")
    assert main(["--trace", str(trace), "--node-csv", str(nodes), "--no-progress"]) == 2
    assert "n.csv:2: gpu 'eight' is not an integer" in capsys.readouterr().err


def test_a_trace_with_a_bom_and_crlf_lines_reads(tmp_path: Path) -> None:
    from scheduler.sim import read_trace

    path = tmp_path / "t.csv"
    path.write_bytes(("\ufeff" + HEADER + "j2,a,5,2,10\nj1,a,0,1,20\n").replace("\n", "\r\n").encode())
    assert [(j.job_id, j.gpus, j.duration_s) for j in read_trace(path)] == [("j1", 1, 20.0), ("j2", 2, 10.0)]


@pytest.mark.parametrize("flag, value", [
    ("--nodes", "0"), ("--nodes", "-3"), ("--gpus-per-node", "0"), ("--racks", "0"), ("--racks-per-spine", "-1"),
    ("--sample-nodes", "-2"), ("--gpu-type-frac", "2"), ("--gpu-type-frac", "nan"), ("--cross-rack-scale", "nan"),
    ("--restart-s", "-5"), ("--time-scale", "0"), ("--time-scale", "-1"), ("--time-scale", "nan"),
    ("--limit", "0"), ("--limit", "-1"), ("--window-days", "0"), ("--window-days", "-1"),
    ("--parallel", "0"), ("--parallel", "-1"),
])
def test_cli_refuses_out_of_range_numbers(tmp_path: Path, flag: str, value: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text(HEADER + "j1,a,0,1,10\n")
    with pytest.raises(SystemExit) as exit_:
        main(["--trace", str(trace), "--no-progress", flag, value])
    assert exit_.value.code == 2
    assert f"error: argument {flag}: must be" in capsys.readouterr().err


def test_cli_refuses_an_unknown_policy_and_an_unwritable_output_before_the_replay(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text(HEADER + "j1,a,0,1,10\n")
    argv = ["--trace", str(trace), "--no-progress"]
    assert main([*argv, "--policy", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m scheduler.sim: error: --policy: unknown profile 'nope'") and err.count("\n") == 1
    for flag, path, says in (("--records", tmp_path, "is a directory"),
                             ("--plot", tmp_path / "none" / "jct.png", "no such directory")):
        assert main([*argv, flag, str(path)]) == 2
        out = capsys.readouterr()
        assert f"error: {flag} {path}: {says}" in out.err and "# seed=" not in out.err and out.out == ""


def test_cli_tells_jobs_larger_than_the_cluster_from_jobs_queued_behind_them(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Strict FIFO: the 1-GPU job waits behind the 16-GPU head that never fits 8 GPUs; it is
    # placeable, and the report used to say that none of the unfinished jobs were.
    trace = tmp_path / "t.csv"
    trace.write_text(HEADER + "big,a,0,16,10\nsmall,a,5,1,10\n")
    assert main(["--trace", str(trace), "--no-progress", "--nodes", "1", "--racks", "1", "--policy", "b1"]) == 0
    err = capsys.readouterr().err
    assert "2 jobs never finished, 1 need more GPUs than the cluster's 8 (big); 1 still waited" in err
    assert "queued behind a job that was (small)" in err and "none of them placeable" not in err


def test_cli_refuses_more_racks_than_nodes_and_reports_the_racks_built(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text(HEADER + "j1,a,0,1,10\n")
    nodes = tmp_path / "n.csv"
    nodes.write_text("sn,gpu,model\nn1,8,V100\nn2,8,V100\n")
    argv = ["--trace", str(trace), "--no-progress", "--racks", "100"]
    assert main([*argv, "--nodes", "4"]) == 2
    assert "error: --racks 100 is more than --nodes 4" in capsys.readouterr().err
    assert main([*argv, "--node-csv", str(nodes)]) == 0
    assert "cluster=2 CSV nodes (16 GPUs) in 2 racks" in capsys.readouterr().err


def test_cli_refuses_a_node_csv_without_gpu_nodes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # sample_shapes keeps GPU nodes only; with none the replay fell back to the uniform 48x8
    trace = tmp_path / "t.csv"
    trace.write_text(HEADER + "j1,a,0,1,10\n")
    nodes = tmp_path / "n.csv"
    nodes.write_text("sn,gpu,model\nn1,0,\n")
    assert main(["--trace", str(trace), "--no-progress", "--node-csv", str(nodes)]) == 2
    err = capsys.readouterr().err
    assert "error: --node-csv" in err and "no node with a GPU" in err and "48x8" not in err


def test_cli_plugin_errors_are_one_unquoted_error_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text(HEADER + "j1,a,0,1,10\n")
    assert main(["--trace", str(trace), "--no-progress", "--plugin", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m scheduler.sim: error: --plugin/--set: unknown plugin 'nope'; known:")


@pytest.mark.parametrize("flag, value", [("--sample-nodes", "10"), ("--gpu-type-frac", "0.5")])
def test_cli_refuses_node_csv_options_without_a_node_csv(tmp_path: Path, flag: str, value: str,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    # they were ignored: the replay ran on the uniform cluster with no constraint
    trace = tmp_path / "t.csv"
    trace.write_text(HEADER + "j1,a,0,1,10\n")
    assert main(["--trace", str(trace), "--no-progress", flag, value]) == 2
    assert f"error: {flag} needs --node-csv" in capsys.readouterr().err


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc")
def test_cli_a_records_file_that_cannot_be_written_is_one_error_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # /proc is a directory, so the check before the replay passes; the open after it fails
    trace = tmp_path / "t.csv"
    trace.write_text(HEADER + "j1,a,0,1,10\n")
    assert main(["--trace", str(trace), "--no-progress", "--records", "/proc/records.csv"]) == 2
    err = capsys.readouterr().err
    assert "python -m scheduler.sim: error: --records /proc/records.csv: " in err and "Traceback" not in err


@pytest.mark.parametrize("setting", ["preemption.hold_s=NaN", "preemption.patience=Infinity",
                                     "las.thresholds_gpu_h=[8, Infinity]", "preemption.hold_s=1e999"])
def test_cli_set_refuses_a_value_that_is_not_a_finite_number(tmp_path: Path, setting: str,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    # json.loads takes NaN and Infinity; the plugins' range checks let NaN through
    trace = tmp_path / "t.csv"
    trace.write_text(HEADER + "j1,a,0,1,10\n")
    assert main(["--trace", str(trace), "--no-progress", "--set", setting]) == 2
    assert "is not a finite number" in capsys.readouterr().err
