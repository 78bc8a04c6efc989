"""The JCT-against-evictions plot: labels, the target line, one draw per plot, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scheduler.sim.frontier import jct_target, main
from scheduler.sim.seeds import read_runs, variant


def run(policy: str, jct: float, preempt: float, **extra: object) -> dict[str, object]:
    return {"policy": policy, "seed": 0, "cluster": "48x8 GPUs in 6 racks", "estimates": "history",
            "settings": [], "plugins": [], "avg_jct_h": jct, "preemptions_per_job": preempt, **extra}


def test_label_names_the_changes_and_a_non_honest_estimate() -> None:
    assert variant(run("default", 4.7, 0.3)) == "default"
    assert variant(run("remaining", 4.5, 0.5, settings=["defrag.room_within_s=600"], plugins=["endtime"],
                     estimates="oracle-gangs")) == "remaining endtime defrag.room_within_s=600 [oracle-gangs estimates]"
    assert variant({"policy": "b4-las"}) == "b4-las"  # lines written before settings were recorded


def test_target_is_0_9_of_the_better_unchanged_baseline() -> None:
    runs = [run("b3-pack", 6.0, 0.0), run("b4-las", 5.0, 0.47), run("default", 4.7, 0.35)]
    assert jct_target(runs) == pytest.approx(4.5)
    # a changed or clairvoyant baseline is not the baseline
    assert jct_target([run("b3-pack", 6.0, 0.0), run("b4-las", 4.0, 0.5, estimates="oracle")]) is None
    assert jct_target([run("b3-pack", 6.0, 0.0), run("b4-las", 4.0, 0.5, settings=["las.aging_s=1"])]) is None
    assert jct_target(runs[1:]) is None


def _write(path: Path, runs: list[dict[str, object]]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in runs))
    return str(path)


def test_read_runs_tells_variants_apart_and_refuses_a_replay_twice(tmp_path: Path) -> None:
    f = _write(tmp_path / "a.jsonl", [run("remaining", 4.5, 0.5), run("remaining", 4.6, 0.4, settings=["x.y=1"]),
                                      run("remaining", 4.3, 0.5, estimates="oracle")])
    assert len(read_runs([f])) == 3
    twice = _write(tmp_path / "b.jsonl", [run("remaining", 4.5, 0.5), run("remaining", 4.5, 0.5)])
    with pytest.raises(ValueError, match="appears twice"):
        read_runs([twice])
    assert len(read_runs([twice], unique=False)) == 2


def test_cli_draws_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    f = _write(tmp_path / "a.jsonl", [run("b3-pack", 6.3, 0.0), run("b4-las", 5.04, 0.475),
                                      run("default", 4.68, 0.346), run("remaining", 4.53, 0.483)])
    out = tmp_path / "f.png"
    assert main([f, "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_refuses_mixed_draws_and_bad_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "f.png")
    mixed = _write(tmp_path / "m.jsonl", [run("default", 4.7, 0.3), run("default", 4.6, 0.3, seed=1)])
    assert main([mixed, "--out", out]) == 2
    assert "one seed and one cluster per plot" in capsys.readouterr().err
    bad = _write(tmp_path / "b.jsonl", [run("default", 4.7, 0.3), {"policy": "x", "seed": 0, "cluster": "48x8 GPUs in 6 racks"}])
    assert main([bad, "--out", out]) == 2
    assert "replay 2 (x): needs numbers" in capsys.readouterr().err
    empty = tmp_path / "e.jsonl"
    empty.write_text("\n")
    assert main([str(empty), "--out", out]) == 2
    assert "no replay lines" in capsys.readouterr().err
    assert not Path(out).exists()


def test_points_are_drawn_as_baseline_bound_or_policy() -> None:
    from scheduler.sim.frontier import _kind

    assert _kind(run("b4-las", 5.0, 0.47)) == "baseline"
    assert _kind(run("b4-las", 5.0, 0.47, settings=["las.aging_s=1"])) == "honest estimates"
    assert _kind(run("remaining", 4.3, 0.5, estimates="oracle-gangs")) == "true durations (a bound, not a policy)"
    assert _kind(run("default", 4.7, 0.3, estimates="none")) == "honest estimates"
