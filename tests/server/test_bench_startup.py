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


def test_the_etcd_path_given_is_the_one_run(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """``--compare-etcd PATH`` runs that binary (it ran whichever ``etcd`` was on PATH)."""
    import kvraft.bench.startup as startup

    fake = tmp_path / "etcd-3.5"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    binaries: list[str] = []

    def one_round(binary: str, extra: list[str], size: int, base: object) -> dict[str, float]:
        binaries.append(binary)
        return {"new": 1.0}

    monkeypatch.setattr(startup, "one_round", one_round)
    assert main("startup", ["--rounds", "1", "--compare-etcd", str(fake)]) == 0
    assert str(fake) in binaries and "etcd" not in binaries
