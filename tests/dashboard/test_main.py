"""``kvraft-dashboard``'s flags: a bad one is one line naming it and exit 2, before anything
starts (no traceback, no dashboard running on nonsense)."""

from __future__ import annotations

import pytest

from scheduler.dashboard.main import main


@pytest.mark.parametrize(("argv", "message"), [
    (["--listen-url", "http://127.0.0.1:99999"], "--listen-url 'http://127.0.0.1:99999': Port out of range 0-65535"),
    (["--listen-url", "http://127.0.0.1:0/path"], "--listen-url 'http://127.0.0.1:0/path': expected http://HOST:PORT"),
    (["--listen-url", "ftp://127.0.0.1:0"], "--listen-url 'ftp://127.0.0.1:0': expected http://HOST:PORT"),
    (["--poll-s", "nan"], "--poll-s: must be a number > 0, not nan"),
    (["--poll-s", "0"], "--poll-s: must be a number > 0, not 0.0"),
    (["--usage-poll-s", "inf"], "--usage-poll-s: must be a number > 0, not inf"),
    (["--request-timeout-s", "-1"], "--request-timeout-s: must be a number > 0, not -1.0"),
    (["--scheduler-url", "notaurl"], "--scheduler-url: 'notaurl' is not a URL; expected http://HOST:PORT"),
    (["--scheduler-url", "http://127.0.0.1:1/x"], "--scheduler-url: 'http://127.0.0.1:1/x' has a path"),
])
def test_a_bad_flag_is_one_line_and_exit_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Were a traceback (a port over 65535), or accepted: a path ignored, NaN and inf poll
    intervals, a --scheduler-url that every poll failed to reach without a word."""
    assert main(["--endpoints", "http://127.0.0.1:1", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kvraft-dashboard: ") and message in err and len(err.splitlines()) == 1, err
