"""Estimate accuracy from replay records: the rank correlation, the per-class rows, the CLI."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from scheduler.sim.accuracy import accuracy, main, spearman
from scheduler.sim.cli import RECORD_COLUMNS


@pytest.mark.parametrize(("xs", "ys", "rho"), [
    ([1, 2, 3, 4], [10, 20, 30, 40], 1.0),
    ([1, 2, 3, 4], [40, 30, 20, 10], -1.0),
    ([1, 2, 3, 4], [1, 100, 1000, 10000], 1.0),  # ranks, not values
    ([1, 1, 2, 2], [5, 5, 9, 9], 1.0),  # ties share their average rank
    ([1, 2, 3, 4, 5], [2, 1, 4, 3, 5], 0.8),
])
def test_spearman(xs: list[float], ys: list[float], rho: float) -> None:
    assert spearman(xs, ys) == pytest.approx(rho)


def test_spearman_is_undefined_for_constant_or_tiny_input() -> None:
    assert math.isnan(spearman([1.0], [2.0]))
    assert math.isnan(spearman([3.0, 3.0, 3.0], [1.0, 2.0, 3.0]))
    with pytest.raises(ValueError):
        spearman([1.0, 2.0], [1.0])


def test_accuracy_rows_per_class() -> None:
    hour = 3600.0
    rows = accuracy([
        (1, 100.0, 100.0), (1, 400.0, 100.0), (1, 50.0, 100.0),  # exact, 4x over, 2x under
        (8, 20 * hour, 11 * hour), (8, 12 * hour, 30 * hour), (4, 1 * hour, 2 * hour),
        (16, 3 * hour, 3 * hour),
    ])
    by = {r["class"]: r for r in rows}
    assert list(by) == ["1 GPU", "2-8 GPUs", ">8 GPUs", ">1 GPU, >10 h"]
    one = by["1 GPU"]
    assert one["jobs"] == 3
    assert one["median_abs_log2"] == pytest.approx(1.0)
    assert one["within_2x"] == pytest.approx(2 / 3)
    assert by["2-8 GPUs"]["jobs"] == 3
    long = by[">1 GPU, >10 h"]
    assert long["jobs"] == 2
    assert long["spearman"] == pytest.approx(-1.0)  # the longer estimate went to the shorter job
    assert by[">8 GPUs"]["within_2x"] == 1.0


def _records(path: Path, rows: list[dict[str, object]]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, RECORD_COLUMNS)
        w.writeheader()
        for row in rows:
            w.writerow({c: row.get(c, "") for c in RECORD_COLUMNS})
    return path


def test_cli_reads_records_per_policy_and_seed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = _records(tmp_path / "r.csv", [
        {"policy": "default", "seed": 0, "gpus": 1, "duration_s": 100, "est_s": 100},
        {"policy": "default", "seed": 0, "gpus": 1, "duration_s": 200, "est_s": 300},
        {"policy": "default", "seed": 0, "gpus": 1, "duration_s": 300, "est_s": ""},  # no estimate: left out
        {"policy": "b4-las", "seed": 1, "gpus": 4, "duration_s": 100, "est_s": 50},
    ])
    assert main([str(f), "--json"]) == 0
    # strict JSON: a class of one job has no rank correlation, written null (not NaN)
    lines = [json.loads(x, parse_constant=lambda c: pytest.fail(f"not JSON: {c}"))
             for x in capsys.readouterr().out.splitlines()]
    assert lines[0]["spearman"] is None
    assert [(x["policy"], x["seed"], x["class"], x["jobs"]) for x in lines] == [
        ("b4-las", "1", "2-8 GPUs", 1), ("default", "0", "1 GPU", 2)]
    assert main([str(f)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["policy", "seed", "class"] and len(table) == 3


def test_cli_refuses_what_is_not_a_records_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    assert main([str(bad)]) == 2
    assert "not a --records file" in capsys.readouterr().err
    junk = _records(tmp_path / "junk.csv", [{"policy": "p", "gpus": "x", "duration_s": 1, "est_s": 1}])
    assert main([str(junk)]) == 2
    assert "junk.csv:2" in capsys.readouterr().err
    empty = _records(tmp_path / "none.csv", [{"policy": "p", "gpus": 1, "duration_s": 1, "est_s": ""}])
    assert main([str(empty)]) == 2
    assert "no job in these records has an estimate" in capsys.readouterr().err
    assert main([str(tmp_path / "missing.csv")]) == 2
