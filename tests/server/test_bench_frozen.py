"""``kvraft.bench frozen-member``: the flags, and one real round with a few idle streams."""

from __future__ import annotations

import json

import pytest

from kvraft.bench.frozen import main


@pytest.mark.parametrize("argv", [["--rounds", "-1"], ["--give-up", "0"], ["--seconds", "-1"],
                                  ["--compare-etcd", "/nonexistent/etcd"], ["--idle-streams", "-5"]])
def test_bad_flags_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main("frozen-member", argv)
    assert exit_.value.code == 2


def test_one_round_and_the_idle_streams(capsys: pytest.CaptureFixture[str]) -> None:
    """With keepalive the read and the watch go on past the frozen member; without it the
    read misses its 5 s deadline and the watch gives up. Heartbeats flow only when asked."""
    assert main("frozen-member", ["--rounds", "1", "--give-up", "4", "--idle-streams", "20", "--seconds", "2"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    line = report["kvraft"]
    assert line["get keepalive on"]["ok"] == 1 and line["watch keepalive on"]["ok"] == 1, line
    assert line["get keepalive off"]["ok"] == 0 and line["watch keepalive off"]["ok"] == 0, line
    assert line["kvctl get"]["ok"] == 1, line
    assert line["watch alone"]["rounds"] == 1, line  # (whether within 4 s depends on the heartbeats)
    idle = report["idle streams"]
    assert idle["none"]["bytes_per_s"] == 0 and idle["every 1 s"]["bytes_per_s"] > 0, idle
