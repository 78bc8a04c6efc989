"""The simulator's accounting of lost GPU-hours, its per-job records and the plots."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from scheduler.profiles import profile
from scheduler.sim import ClusterSpec, Simulation, SlowdownModel, build_nodes, summarize
from scheduler.sim.cli import RECORD_COLUMNS, main
from scheduler.sim.plot import utilisation_series
from scheduler.sim.trace import TraceJob


def test_restart_and_slowdown_losses_are_accounted_apart() -> None:
    # One 8-GPU node, b4 (LAS, 8 GPU-h threshold, preemptive, 30 s restart). "long" has
    # attained 16 GPU-h when "short" arrives at 2 h: short preempts it, runs 10 min, long
    # resumes and pays the 30 s restart once. One node: no slowdown.
    nodes = build_nodes(ClusterSpec(1, 8, 1))
    trace = [TraceJob("long", "v", 0.0, 8, 3 * 3600.0), TraceJob("short", "v", 7200.0, 8, 600.0)]
    sim = Simulation(trace, nodes, profile("b4"), slowdown=SlowdownModel(nodes, 0), restart_overhead_s=30.0)
    result = sim.run()
    m = summarize("b4-las", result)
    assert m["preemptions_per_job"] == 0.5
    assert m["moves_per_job"] == 0.0  # a preemption, not a defragmentation move
    assert m["gpu_h_lost_to_restarts"] == pytest.approx(8 * 30 / 3600)
    assert m["gpu_h_lost_to_slowdown"] == pytest.approx(0.0, abs=1e-9)
    long = next(r for r in result.records if r.job.job_id == "long")
    assert long.runs == [(0.0, 7200.0), (7800.0, 7800.0 + 30 + 3600.0)]


def test_defragmentation_moves_are_counted_among_preemptions_and_apart() -> None:
    # Two 8-GPU nodes, default. "x" (4 GPUs) and "y" (4, short) fill n0; "z" (3) and "one"
    # (1) go to n1. Once y ends, 4 GPUs are free on each node. "eight" (8 GPUs, one node
    # required) ranks no higher than anyone (all in LAS's first queue): no preemption, so
    # defragmentation moves gangs to empty a node, and eight starts long before x and z end.
    nodes = build_nodes(ClusterSpec(2, 8, 1))
    trace = [TraceJob("x", "v", 0.0, 4, 36000.0), TraceJob("y", "v", 0.0, 4, 100.0),
             TraceJob("z", "v", 1.0, 3, 36000.0), TraceJob("one", "v", 2.0, 1, 36000.0),
             TraceJob("eight", "v", 200.0, 8, 600.0)]
    sim = Simulation(trace, nodes, profile("default"), slowdown=SlowdownModel(nodes, 0), restart_overhead_s=30.0)
    result = sim.run()
    m = summarize("default", result)
    records = {r.job.job_id: r for r in result.records}
    assert records["eight"].first_start_s is not None and records["eight"].first_start_s < 1000.0
    moved = sum(r.moves for r in result.records)
    assert moved >= 1 and all(r.moves == r.preemptions for r in result.records)
    assert m["moves_per_job"] == m["preemptions_per_job"] == pytest.approx(moved / 5)


def test_utilisation_series_splits_runs_over_hours() -> None:
    rows: list[dict[str, object]] = [
        {"policy": "p", "gpus": 4, "runs": "1800:5400", "capacity_gpus": 8},  # half of h0, half of h1
        {"policy": "p", "gpus": 8, "runs": "3600:7200;", "capacity_gpus": 8},  # all of h1
    ]
    assert utilisation_series(rows) == {"p": [0.25, 1.25, 0.0]}


def test_utilisation_series_pools_the_capacity_of_several_seeds() -> None:
    rows: list[dict[str, object]] = [
        {"policy": "p", "gpus": 8, "runs": "0:3600", "capacity_gpus": 8, "seed": 0},  # all of seed 0's
        {"policy": "p", "gpus": 4, "runs": "0:3600", "capacity_gpus": 8, "seed": 1},  # half of seed 1's
        {"policy": "p", "gpus": 4, "runs": "0:3600", "capacity_gpus": 8, "seed": 1},  # the other half
        {"policy": "q", "gpus": 2, "runs": "0:3600", "capacity_gpus": 8, "seed": 1},
    ]
    assert utilisation_series(rows) == {"p": [1.0, 0.0], "q": [0.25, 0.0]}


def test_records_csv_and_plot(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    trace = tmp_path / "t.csv"
    with open(trace, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["job_id", "vc", "submit_s", "num_gpus", "duration_s"])
        for i in range(30):
            writer.writerow([f"j{i}", "v", 60 * i, [1, 2, 4, 8, 16][i % 5], 1800 + 60 * i])
    records, png = tmp_path / "r.csv", tmp_path / "r.png"
    assert main(["--trace", str(trace), "--nodes", "4", "--racks", "2", "--policy", "default", "--policy", "b3",
                 "--no-progress", "--records", str(records), "--plot", str(png)]) == 0
    with open(records, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == RECORD_COLUMNS
    assert sorted({r["policy"] for r in rows}) == ["b3-pack", "default"] and len(rows) == 60
    assert all(r["finish_s"] and r["runs"] for r in rows)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from scheduler.sim.plot import main as plot_main

    again = tmp_path / "again.png"
    assert plot_main([str(records), "--out", str(again), "--title", "t"]) == 0
    assert again.stat().st_size > 10_000


@pytest.mark.parametrize("text, extra, says", [
    (None, [], "No such file"),
    ("a,b\n1,2\n", [], "missing columns ['capacity_gpus', 'finish_s', 'gpus', 'policy', 'runs', 'submit_s']"),
    ("", [], "no records in"),
    (",".join(RECORD_COLUMNS) + "\n", [], "no records in"),
    ("a,b\n1,2\n", ["--window-days", "0"], "argument --window-days: must be a finite number > 0"),
])
def test_plot_cli_refuses_bad_records_in_one_line(tmp_path: Path, text: str | None, extra: list[str], says: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from scheduler.sim.plot import main as plot_main

    path = tmp_path / "records.csv"
    if text is not None:
        path.write_text(text)
    with pytest.raises(SystemExit) as exit_:
        plot_main([str(path), "--out", str(tmp_path / "x.png"), *extra])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "python -m scheduler.sim.plot: error: " in err and says in err
