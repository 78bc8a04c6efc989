"""``kvraft.bench failover``: the summary, the flags, and one real round."""

from __future__ import annotations

import json

import pytest

from kvraft.bench.failover import main, summary


def test_summary_counts_successes_and_names_the_errors() -> None:
    results = [{"ok": True, "seconds": 1.2, "error": ""}, {"ok": True, "seconds": 0.8, "error": ""},
               {"ok": False, "seconds": 7.0, "error": "etcdserver: request timed out"}]
    assert summary(results) == {"rounds": 3, "ok": 2, "p50_s": 1.0, "max_s": 1.2, "failed_after_s": [7.0],
                                "errors": ["etcdserver: request timed out"], "applied_twice": 0,
                                "failed_but_applied": 0}
    assert summary([{"ok": False, "seconds": 0.01, "error": "x", "version": 1}])["failed_but_applied"] == 1
    assert summary([{"ok": True, "seconds": 1.0, "error": "", "version": 2}])["applied_twice"] == 1
    assert summary([{"ok": False, "seconds": 7.0, "error": "x"}])["p50_s"] is None


@pytest.mark.parametrize("argv", [["--what", "get"], ["--rounds", "0"], ["--compare-etcd", "/nonexistent/etcd"],
                                  ["--fault", "reboot"], ["--fault", ""],
                                  ["--what", "put-to-leader", "--fault", "freeze"]])
def test_bad_flags_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main("failover", argv)
    assert exit_.value.code == 2


def test_one_round_of_a_put(capsys: pytest.CaptureFixture[str]) -> None:
    assert main("failover", ["--rounds", "1", "--what", "put"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["kvraft put"]["rounds"] == 1  # (whether it succeeded is tests/server/test_dead_leader_forward.py's)


def test_one_round_of_a_put_to_a_frozen_leader(capsys: pytest.CaptureFixture[str]) -> None:
    assert main("failover", ["--rounds", "1", "--what", "put", "--fault", "freeze"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    line = report["kvraft freeze put"]
    assert line["rounds"] == 1 and line["applied_twice"] == 0


def test_one_round_of_a_put_to_a_leader_killed_while_it_is_in_flight(capsys: pytest.CaptureFixture[str]) -> None:
    """The numbered put is sent again to the next member and applied once, whether or not the
    first copy committed; the plain one may fail ("may have been applied"), never twice."""
    assert main("failover", ["--rounds", "1", "--what", "put-to-leader"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    numbered, plain = report["kvraft put-to-leader"], report["kvraft-plain put-to-leader"]
    assert numbered["ok"] == 1 and numbered["applied_twice"] == 0, numbered
    assert plain["rounds"] == 1 and plain["applied_twice"] == 0, plain


def test_the_etcd_path_given_is_the_one_run(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """``--compare-etcd PATH`` runs that binary (it ran whichever ``etcd`` was on PATH)."""
    import kvraft.bench.failover as failover

    fake = tmp_path / "etcd-3.5"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    binaries: list[str] = []

    def one_round(binary: str, what: str, base: object, fault: str = "kill", **_: object) -> dict[str, object]:
        binaries.append(binary)
        return {"ok": True, "seconds": 1.0, "error": ""}

    monkeypatch.setattr(failover, "one_round", one_round)
    assert main("failover", ["--rounds", "1", "--what", "put", "--compare-etcd", str(fake)]) == 0
    assert str(fake) in binaries and "etcd" not in binaries
