"""``kvraft.bench numbered``: both comparisons run and report every mode."""

from __future__ import annotations

import json

import pytest

from kvraft.bench.numbered import main


@pytest.mark.parametrize(("compare", "modes"), [("request-ids", {"numbered", "plain"}),
                                                ("keepalive", {"keepalive", "no-keepalive"})])
def test_one_round_reports_each_mode(compare: str, modes: set[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main("numbered", ["--rounds", "1", "--puts", "20", "--clients", "1", "--compare", compare]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    level = report["levels"]["1"]
    assert set(level) == modes
    for figures in level.values():
        assert figures["puts_per_s"] > 0 and figures["cpu_client_us"] > 0


def test_bad_flags_are_refused() -> None:
    with pytest.raises(SystemExit) as exit_:
        main("numbered", ["--compare", "nothing"])
    assert exit_.value.code == 2
