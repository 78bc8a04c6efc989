"""The throughput benchmark runs the real core on YAML workloads (tiny sizes here)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from scheduler.bench import load, load_all, run_workload
from scheduler.bench.cli import main


def test_shipped_workloads_load() -> None:
    names = {w.name for w in load_all()}
    assert {"single-1k", "single-5k", "gang-1k", "gang-5k"} <= names


@pytest.mark.parametrize("name", ["single-1k", "gang-1k"])
def test_small_runs_place_jobs(name: str) -> None:
    workload = load_all([name])[0].scaled(nodes=128, passes=3)
    result = run_workload(workload, keep_passes=1)
    assert result.nodes == 128 and result.submitted == 3 * workload.batch
    assert 0 < result.placed <= result.submitted
    assert result.decisions_per_s > 0 and result.pass_ms_p99 >= result.pass_ms_p50 > 0


def test_bad_workload_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nnodes: 1\ngpus_per_node: 8\nnodes_per_rack: 1\nfill: 2\n"
                    "job: {tasks: [1], gpus_per_task: 1}\nbatch: 1\npasses: 1\ncolour: red\n")
    with pytest.raises(ValueError, match="unknown fields"):
        load(path)


def test_cli_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--workload", "single-1k", "--nodes", "64", "--passes", "1", "--json"]) == 0
    assert '"workload": "single-1k"' in capsys.readouterr().out


@pytest.mark.parametrize("argv, says", [
    (["--passes", "0"], "argument --passes: must be >= 1"),
    (["--nodes", "0"], "argument --nodes: must be >= 1"),
    (["--nodes", "-2"], "argument --nodes: must be >= 1"),
    (["--profile", "nope"], "argument --profile: unknown profile 'nope'"),
    (["--workload", "/"], "argument --workload: [Errno 21] Is a directory"),
    (["--workload", "/nonexistent.yaml"], "argument --workload: unknown workload '/nonexistent.yaml'; known:"),
])
def test_cli_refuses_bad_arguments_in_one_line(argv: list[str], says: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--workload", "single-1k", *argv])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err


@pytest.mark.parametrize("field, says", [
    ("nodes: 0", "must be >= 1"), ("nodes: -4", "must be >= 1"), ("gpus_per_node: 0", "must be >= 1"),
    ("nodes_per_rack: 0", "must be >= 1"), ("job: {tasks: [], gpus_per_task: 1}", "must be >= 1"),
    ("job: {tasks: [0], gpus_per_task: 1}", "must be >= 1"), ("job: {tasks: [1]}", "missing fields ['job.gpus_per_task']"),
    ("passes: null", "passes"),
])
def test_a_workload_with_impossible_sizes_is_rejected(tmp_path: Path, field: str, says: str) -> None:
    # nodes 0 or -4 'benchmarked' an empty cluster (nan ms/decision), nodes_per_rack 0 divided by zero
    good = {"name": "x", "nodes": "4", "gpus_per_node": "8", "nodes_per_rack": "2", "fill": "0.5",
            "job": "{tasks: [1], gpus_per_task: 1}", "batch": "2", "passes": "1"}
    key, _, value = field.partition(": ")
    good[key] = value
    path = tmp_path / "w.yaml"
    path.write_text("".join(f"{k}: {v}\n" for k, v in good.items() if v != "null"))
    with pytest.raises(ValueError, match=re.escape(says)):
        load(path)
