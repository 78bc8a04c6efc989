"""``kvraft.bench startup``: the flags, and one real round of each case."""

from __future__ import annotations

import json

import pytest

from kvraft.bench.startup import main


@pytest.mark.parametrize("argv", [["--rounds", "0"], ["--compare-etcd", "/nonexistent/etcd"]])
def test_bad_flags_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main("startup", argv)
    assert exit_.value.code == 2


def test_one_round_of_every_case(capsys: pytest.CaptureFixture[str]) -> None:
    assert main("startup", ["--rounds", "1"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["rounds"] == 1
    for system in ("kvraft", "kvraft, tick advance off"):
        cases = report["results"][system]
        assert set(cases) == {"new 1-member", "new 3-member", "restart 3-member"}, cases
        assert all(case["min_s"] > 0 for case in cases.values()), cases
