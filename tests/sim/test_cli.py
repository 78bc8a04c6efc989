"""``python -m kvraft.sim``: output format and exit status."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import kvraft.raft.quorum as quorum
from kvraft.sim.__main__ import main

SUMMARY = re.compile(r"^seeds: \d+, violations: \d+, liveness_failures: \d+$")


def test_sweep_prints_the_summary_last_and_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--seeds", "0-3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == ["seeds: 4, violations: 0, liveness_failures: 0"]


def test_single_seed_with_trace_prints_plan_then_events(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--seed", "3", "--trace"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("seed 3 commit ")
    assert out[1].startswith("plan seed=3 members=")
    assert "net.drop_p=" in out[1] and "faults=" in out[1]
    events = out[2:-1]
    assert len(events) > 100
    assert all(re.match(r"^ {0,9}\d+ \S+ +\S+", line) for line in events)
    assert out[-1].startswith("seed 3: ok ")


def test_failures_are_listed_saved_and_make_the_exit_status_non_zero(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    def broken(voters, match):  # type: ignore[no-untyped-def]
        return max(match.get(v, 0) for v in voters) if voters else quorum.UNBOUNDED

    monkeypatch.setattr(quorum, "majority_committed_index", broken)
    code = main(["--seeds", "0-19", "--save-failures", str(tmp_path)])
    out = capsys.readouterr().out.splitlines()
    assert code == 1
    assert SUMMARY.match(out[-1])
    failing = [line for line in out[:-1] if line.startswith("seed ")]
    assert failing and len(failing) == len(out) - 1
    n = int(re.search(r"violations: (\d+)", out[-1]).group(1))  # type: ignore[union-attr]
    assert n == sum(": violation:" in line for line in failing)
    saved = sorted(tmp_path.iterdir())
    assert len(saved) == len(failing)
    text = saved[0].read_text()
    assert text.startswith("seed ") and "\nplan seed=" in text


def test_module_entry_point_and_bad_arguments() -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "kvraft.sim", "--seeds", "5", "--jobs", "2", "--bench"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    lines = ok.stdout.splitlines()
    assert lines[-1] == "seeds: 1, violations: 0, liveness_failures: 0"
    assert re.match(r"bench: 1 seeds in [\d.]+ s with 2 job\(s\): [\d.]+ seeds/min", lines[-2])
    bad = subprocess.run(
        [sys.executable, "-m", "kvraft.sim", "--seeds", "9-2"], capture_output=True, text=True
    )
    assert bad.returncode == 2
