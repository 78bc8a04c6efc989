"""``jobctl get jobs -w`` (``scheduler/cli/watch_jobs.py``) as a process against a real
one-member kvraft, with the daemon's own pass making the changes: the list, then one row per
change of a job's row (a new job, Pending -> Running -> Succeeded), nothing for a change that
leaves the row as it was, only the jobs asked for, and Ctrl-C ends it with exit 0."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from test_dependencies import _finish
from test_malformed import daemon, nodes, one_member, put, spec, steps  # noqa: F401  (fixtures)

from scheduler.service import SchedulerDaemon

ROOT = Path(__file__).resolve().parents[2]


class Lines:
    """The lines a process prints, read as they come (``select`` on the pipe itself: a
    buffered ``readline`` could hold a second line where ``select`` cannot see it)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self.fd = proc.stdout.fileno()
        self.buf = b""

    def next(self, n: int, timeout_s: float = 20.0) -> list[str]:
        deadline = time.monotonic() + timeout_s
        while self.buf.count(b"\n") < n:
            left = deadline - time.monotonic()
            assert left > 0, f"got {self.buf!r}, wanted {n} lines"
            if select.select([self.fd], [], [], left)[0]:
                chunk = os.read(self.fd, 65536)
                assert chunk, f"the process ended: {self.buf!r}"
                self.buf += chunk
        *lines, self.buf = self.buf.split(b"\n", n)
        return [line.decode() for line in lines]


async def test_rows_follow_each_change_until_ctrl_c(daemon: SchedulerDaemon) -> None:  # noqa: F811
    d, eps = daemon, ",".join(daemon.config.endpoints)
    await nodes(d, "n1", "n2")
    await put(d, "/registry/jobs/first", spec("first", tenant="nlp"))
    await steps(d, 2)
    proc = subprocess.Popen([sys.executable, "-m", "scheduler.cli", "--endpoints", eps, "get", "jobs", "-w",
                             "--tenant", "nlp"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    lines = Lines(proc)
    try:
        header, row = lines.next(2)
        assert header.split() == ["NAME", "TENANT", "PHASE", "GPUS", "RESTARTS", "AGE", "REASON"]
        assert row.split()[:3] == ["first", "nlp", "Running"]
        await put(d, "/registry/jobs/other", spec("other", tenant="vision"))  # not asked for; takes n2
        await put(d, "/registry/jobs/second", spec("second", tenant="nlp"))
        (line,) = lines.next(1)
        assert line.split()[:3] == ["second", "nlp", "Pending"] and len(line) >= len(header.split("REASON")[0])
        await steps(d, 2)  # second waits (other took n2): its reason changes, not its phase
        (line,) = lines.next(1)
        assert line.split()[:3] == ["second", "nlp", "Pending"] and line.split()[-1] != "Queued", line
        await _finish(d, "first", "Succeeded")
        await steps(d, 3)
        (line,) = lines.next(1)
        assert line.split()[:3] == ["first", "nlp", "Succeeded"], line
        await steps(d, 3)  # (the freed node's GPUs reach the core in the next passes)
        (line,) = lines.next(1)
        assert line.split()[:3] == ["second", "nlp", "Running"], line
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0, (proc.stderr.read() if proc.stderr else b"").decode()
    finally:
        if proc.poll() is None:
            proc.kill()


async def test_a_job_that_does_not_decode_is_skipped_not_the_end_of_the_watch(daemon: SchedulerDaemon) -> None:  # noqa: F811
    """`kvctl put /registry/jobs/bad '{not json'` during `get jobs -w` ended the watch with exit 1
    (job_view of that name is an error); the listing skips such a job with a warning, so does
    the watch, and goes on."""
    d, eps = daemon, ",".join(daemon.config.endpoints)
    await put(d, "/registry/jobs/first", spec("first"))
    proc = subprocess.Popen([sys.executable, "-m", "scheduler.cli", "--endpoints", eps, "get", "jobs", "-w"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    lines = Lines(proc)
    try:
        assert lines.next(2)[1].split()[0] == "first"
        await put(d, "/registry/jobs/bad", b"{not json")
        await put(d, "/registry/jobs/later", spec("later"))
        (line,) = lines.next(1)
        assert line.split()[:3] == ["later", "default", "Pending"], line
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
        err = proc.stderr.read().decode() if proc.stderr else ""
        assert "warning: skipping /registry/jobs/bad: invalid JSON" in err and "Traceback" not in err, err
    finally:
        if proc.poll() is None:
            proc.kill()
