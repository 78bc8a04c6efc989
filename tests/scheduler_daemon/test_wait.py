"""``jobctl wait`` (``scheduler/cli/wait.py``): its pure verdict, and on a real one-member
kvraft with the daemon's own pass: it returns when a job succeeds, exits 1 at once when the job
fails (for ``succeeded``) or is cancelled before it ran (for ``running``), waits for every
element of a job array, times out with kubectl's message, and refuses unknown jobs and bad
durations."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from test_dependencies import _finish, _jobctl
from test_malformed import daemon, nodes, one_member, put, spec, steps  # noqa: F401  (fixtures)

from scheduler.cli.wait import judge
from scheduler.service import SchedulerDaemon


@pytest.mark.parametrize(("condition", "phase", "ran", "want"), [
    ("succeeded", "Pending", False, "waiting"), ("succeeded", "Running", True, "waiting"),
    ("succeeded", "Succeeded", True, "met"), ("succeeded", "Failed", True, "never"),
    ("succeeded", "Cancelled", False, "never"),
    ("finished", "Running", True, "waiting"), ("finished", "Failed", True, "met"),
    ("finished", "Cancelled", False, "met"),
    ("running", "Pending", False, "waiting"), ("running", "Running", True, "met"),
    ("running", "Succeeded", True, "met"), ("running", "Cancelled", True, "met"),
    ("running", "Cancelled", False, "never"),
])
def test_judge(condition: str, phase: str, ran: bool, want: str) -> None:
    assert judge(condition, phase, ran) == want


async def _wait_while_stepping(d: SchedulerDaemon, capsys: pytest.CaptureFixture[str], *argv: str,
                               then: object = None) -> tuple[int, str, str]:
    """Run ``jobctl wait ...`` in a thread while the daemon takes passes (``then``: a
    coroutine function called once after the first passes, as agents would act)."""
    eps = list(d.config.endpoints)
    waiter = asyncio.ensure_future(asyncio.to_thread(_jobctl, eps, capsys, "wait", "--interval", "50ms", *argv))
    await steps(d, 2)
    if then is not None:
        await then()  # type: ignore[operator]
    for _ in range(100):
        if waiter.done():
            break
        await steps(d, 1)
        await asyncio.sleep(0.05)
    return await asyncio.wait_for(waiter, 30)


async def test_wait_returns_when_the_job_succeeds_and_fails_fast_when_it_fails(
        daemon: SchedulerDaemon, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    d = daemon
    await nodes(d, "n1", "n2")
    await put(d, "/registry/jobs/good", spec("good"))
    await put(d, "/registry/jobs/bad", spec("bad"))

    async def agents() -> None:
        await _finish(d, "good", "Succeeded")

    assert await _wait_while_stepping(d, capsys, "good", "--for", "running") == (0, "job/good Running\n", "")
    assert await _wait_while_stepping(d, capsys, "good", then=agents) == (0, "job/good Succeeded\n", "")

    async def fail() -> None:
        await _finish(d, "bad", "Failed")

    rc, out, err = await _wait_while_stepping(d, capsys, "bad", then=fail)
    assert (rc, out) == (1, "")
    assert err.startswith("error: job/bad ended Failed: ") and err.endswith("; it can never be succeeded\n"), err
    assert await _wait_while_stepping(d, capsys, "bad", "good", "--for", "finished") == (
        0, "job/bad Failed\njob/good Succeeded\n", "")


async def test_wait_on_an_array_and_a_job_cancelled_before_it_ran(
        daemon: SchedulerDaemon, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:  # noqa: F811
    d, eps = daemon, list(daemon.config.endpoints)
    path = tmp_path / "a.yaml"
    path.write_text("name: sweep\narray: '0-2%1'\ntasks: [{name: w, command: x, resources: {gpus: 8}}]\n")
    assert (await asyncio.to_thread(_jobctl, eps, capsys, "submit", "-f", str(path)))[0] == 0
    await nodes(d, "n1")

    async def run_all() -> None:
        for i in range(3):
            await steps(d, 2)
            await _finish(d, f"sweep_{i}", "Succeeded")

    assert await _wait_while_stepping(d, capsys, "sweep", then=run_all) == (0, "job/sweep Succeeded\n", "")
    await put(d, "/registry/jobs/later", dict(spec("later", gpus=64)))  # never fits: 8 GPUs
    rc, out, err = await asyncio.to_thread(_jobctl, eps, capsys, "wait", "later", "--timeout", "200ms")
    assert (rc, out, err) == (1, "", "error: timed out waiting for the condition on jobs/later\n")
    await asyncio.to_thread(_jobctl, eps, capsys, "cancel", "later")
    rc, out, err = await _wait_while_stepping(d, capsys, "later", "--for", "running")
    assert (rc, err) == (1, "error: job/later ended Cancelled: Cancelled: cancelled before it ran; it can never be running\n")


def test_wait_refuses_unknown_jobs_and_bad_durations(one_member: list[str], capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    assert _jobctl(one_member, capsys, "wait", "nosuch") == (1, "", 'Error from server (NotFound): jobs "nosuch" not found\n')
    assert _jobctl(one_member, capsys, "wait", "x", "--timeout", "soon") == (
        1, "", 'error: --timeout: time: invalid duration "soon"\n')
    assert _jobctl(one_member, capsys, "wait", "x", "--interval", "0") == (1, "", "error: --interval: must be > 0, not 0\n")


def test_ctrl_c_ends_wait_with_130_and_no_traceback(one_member: list[str]) -> None:  # noqa: F811
    import os
    import signal
    import subprocess
    import sys
    import time

    from kvraft.client import SyncClient
    from scheduler.jobs import normalize_job

    root = Path(__file__).resolve().parents[2]
    with SyncClient(one_member, request_timeout_s=10.0) as c:
        doc = normalize_job({"name": "forever", "tasks": [{"name": "w", "command": "x"}]}, submitted_at=1.0)
        c.put("/registry/jobs/forever", json.dumps(doc).encode())
    proc = subprocess.Popen([sys.executable, "-m", "scheduler.cli", "--endpoints", ",".join(one_member), "wait",
                             "forever"], cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ, PYTHONPATH=str(root)))
    time.sleep(2.0)  # (started, connected, polling)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert (proc.returncode, out, err) == (130, b"", b"")
