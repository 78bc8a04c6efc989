"""tests/failure_digest.py: the section a failed test's report carries."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from tests.failure_digest import LINES_PER_FILE, concerns, digest


def _line(level: str, t: float, msg: str, **fields: object) -> str:
    return json.dumps({"level": level, "ts": "x", "t": t, "logger": "kvraft.agent", "caller": "a.py:1", "msg": msg,
                       **fields})


def test_only_warnings_and_errors_written_during_the_test(tmp_path: Path) -> None:
    start = time.time()
    log = tmp_path / "agents" / "n1.log"
    log.parent.mkdir()
    log.write_text("\n".join([
        _line("error", start - 60, "before the test"),
        _line("info", start + 1, "started"),
        _line("warn", start + 1, "fenced", node="n1"),
        "Traceback (most recent call last):",
        "  File \"x.py\", line 1",
        "OSError: [Errno 28] No space left on device",
        "plain progress line",
    ]) + "\n")
    assert concerns(log, start) == [
        'warn kvraft.agent: fenced {"node": "n1"}',
        "Traceback (most recent call last):",
        "OSError: [Errno 28] No space left on device",
    ]


def test_the_last_lines_per_file_and_files_older_than_the_test_left_out(tmp_path: Path) -> None:
    start = time.time()
    busy = tmp_path / "sched.log"
    busy.write_text("\n".join(_line("error", start + i, f"bind failed {i}") for i in range(10)) + "\n")
    old = tmp_path / "old.log"
    old.write_text(_line("error", start + 5, "an old file") + "\n")
    os.utime(old, (start - 100, start - 100))
    text = digest(tmp_path, start)
    assert "sched.log:" in text and "old.log" not in text
    assert [ln for ln in text.splitlines() if "bind failed" in ln] == \
        [f'  error kvraft.agent: bind failed {i} {{}}' for i in range(10 - LINES_PER_FILE, 10)]
    assert "machine: load " in text and "processes" in text


def test_logs_without_concerns_say_how_many_files_were_read(tmp_path: Path) -> None:
    start = time.time()
    (tmp_path / "m0.log").write_text(_line("info", start + 1, "ready") + "\n")
    assert digest(tmp_path, start).splitlines()[0] == "no warning or error in the 1 log files written during the test"


def test_daemons_started_before_the_test_under_pytest_tmp_are_listed(tmp_path: Path) -> None:
    """A process of an earlier test still running (a leaked agent or scheduler that found a
    port again) is named with its age; CI stop 34's digest showed only the 3 busiest."""
    import subprocess
    import sys

    marker = tmp_path / "pytest-of-x" / "old-test"
    marker.mkdir(parents=True)
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", str(marker)])
    try:
        time.sleep(0.3)
        text = digest(tmp_path, time.time() + 1.0)  # the test "started" after the process
        assert f"pid {proc.pid}" in text and "started before this test" in text, text
        assert str(marker) in text
        later = digest(tmp_path, time.time() - 30.0)  # started during the test: not listed here
        assert f"pid {proc.pid}: started before" not in later
    finally:
        proc.kill()
        proc.wait()
