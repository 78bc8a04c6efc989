"""``python -m kvraft.bench net-faults``: its figures per phase and its refusals (the runs
themselves start clusters and take minutes: docs/benchmarks.md, "Network faults")."""

from __future__ import annotations

import pytest

from kvraft.bench import net_faults


def test_a_phase_counts_the_answers_inside_it_and_its_longest_silence() -> None:
    spans = [
        (0.0, 0.5, True),   # before the phase
        (0.9, 1.2, True),
        (1.0, 1.4, False),  # failed inside
        (1.3, 3.0, True),
        (2.9, 3.1, True),
        (3.0, 4.5, True),   # after the phase
    ]  # fmt: skip
    row = net_faults.phase_figures(spans, "x", 1.0, 4.0)
    assert row == {"phase": "x", "seconds": 3.0, "acked": 3, "failed": 1, "per_s": 1.0,
                   "longest_gap_s": 1.8}  # 1.2 -> 3.0
    # nothing answered: the whole window is the gap; the window's end counts as an edge
    assert net_faults.phase_figures(spans, "y", 5.0, 7.5)["longest_gap_s"] == 2.5
    assert net_faults.phase_figures([(0.0, 1.0, True)], "z", 0.0, 4.0)["longest_gap_s"] == 3.0


def test_tcp_counters_read_the_machines_segments() -> None:
    first = net_faults.tcp_counters()
    assert set(first) == {"OutSegs", "RetransSegs"} and all(v >= 0 for v in first.values())


@pytest.mark.parametrize("argv, message", [
    (["--rounds", "0"], "at least 1"),
    (["--writers", "0"], "at least 1"),
    (["--fault", "bogus"], "invalid choice"),
    (["--compare-etcd", "/nonexistent/etcd"], "not an executable"),
])  # fmt: skip
def test_bad_arguments_are_refused_before_any_cluster_starts(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stop:
        net_faults.main("net-faults", argv)
    assert stop.value.code == 2
    assert message in capsys.readouterr().err
