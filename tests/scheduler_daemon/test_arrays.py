"""Job arrays (``array: "0-3%2"``, ``scheduler.arrays``) through jobctl and the daemon's own
pass on a real one-member kvraft, in this process: jobctl stores one job per index; at most
the limit run at once, lowest index first, the others Pending ``JobArrayTaskLimit`` and held
out of the core; each task learns its index; a job that depends on the array runs once every
element succeeded; ``jobctl cancel`` of the array's name cancels its elements; jobctl refuses
an array whose name or elements are taken."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from test_dependencies import _events, _finish, _jobctl, _status
from test_malformed import daemon, doc, nodes, one_member, put, spec, steps  # noqa: F401  (fixtures)

from scheduler.service import SchedulerDaemon

SWEEP = """\
name: sweep
array: "0-3%2"
checkpoint_dir: /ckpt/sweep
tasks: [{name: w, command: "python3 train.py --trial $KVRAFT_ARRAY_INDEX", resources: {gpus: 8}}]
---
name: pick-best
depends_on: [{job: sweep}]
tasks: [{name: w, command: x, resources: {gpus: 8}}]
"""


async def _bound(d: SchedulerDaemon) -> set[str]:
    return {kv.key.decode().rsplit("/", 1)[1] for kv in (await d.client.get("/registry/bindings/", prefix=True)).kvs}


async def test_an_array_runs_two_at_a_time_in_index_order_then_its_dependent(
        daemon: SchedulerDaemon, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:  # noqa: F811
    d, eps = daemon, list(daemon.config.endpoints)
    path = tmp_path / "sweep.yaml"
    path.write_text(SWEEP)
    rc, out, err = await asyncio.to_thread(_jobctl, eps, capsys, "submit", "-f", str(path))
    assert (rc, err) == (0, ""), err
    assert out == "".join(f"job/sweep_{i} submitted\n" for i in range(4)) + "job/pick-best submitted\n"
    stored = await doc(d, "/registry/jobs/sweep_3")
    assert stored["array"] == {"job": "sweep", "index": 3, "count": 4, "parallelism": 2}
    assert stored["checkpoint_dir"] == "/ckpt/sweep/3"  # the elements never share checkpoints

    await nodes(d, "n1", "n2", "n3", "n4")  # room for all four: only the limit holds them back
    await steps(d, 2)
    assert await _bound(d) == {"sweep_0", "sweep_1"}
    for job in ("sweep_2", "sweep_3"):
        st = await _status(d, job)
        assert (st["phase"], st["reason"], st["message"]) == (
            "Pending", "JobArrayTaskLimit",
            "at most 2 of sweep's 4 elements run at a time, lower indices first"), st
        assert d.core is not None and job not in d.core.state.jobs  # held out of the core
    assert d.pending_by_reason["JobArrayTaskLimit"] == 2
    rc, out, _ = await asyncio.to_thread(_jobctl, eps, capsys, "get", "job", "sweep")  # the array: its elements
    # those its limit keeps back in one row, as squeue shows them
    assert rc == 0 and [line.split()[:3] + line.split()[-1:] for line in out.splitlines()[1:]] == [
        ["sweep_0", "default", "Running", "Starting"], ["sweep_1", "default", "Running", "Starting"],
        ["sweep_[2-3%2]", "default", "Pending", "JobArrayTaskLimit"]], out
    for flag in ("-r", "--array"):  # one row per element (squeue -r)
        rc, out, _ = await asyncio.to_thread(_jobctl, eps, capsys, "get", "jobs", flag)
        assert rc == 0 and [line.split()[:3] for line in out.splitlines()[1:]] == [
            ["sweep_0", "default", "Running"], ["sweep_1", "default", "Running"],
            ["sweep_2", "default", "Pending"], ["sweep_3", "default", "Pending"], ["pick-best", "default", "Pending"]], out
    rc, out, _ = await asyncio.to_thread(_jobctl, eps, capsys, "get", "job", "sweep", "-o", "json")
    assert rc == 0 and [j["name"] for j in json.loads(out)["items"]] == [f"sweep_{i}" for i in range(4)]
    rc, out, _ = await asyncio.to_thread(_jobctl, eps, capsys, "describe", "job", "sweep_3")
    assert rc == 0 and "Array:          sweep, index 3 of 4 elements (at most 2 at a time)\n" in out, out
    assert "Reason:         JobArrayTaskLimit\n" in out
    st = await _status(d, "pick-best")
    assert (st["reason"], st["message"]) == ("Dependency", "waiting for job sweep to succeed (Running)"), st
    assignment = await doc(d, "/registry/assignments/" + next(
        kv.key.decode().split("/registry/assignments/")[1] for kv in
        (await d.client.get("/registry/assignments/", prefix=True)).kvs if b"/sweep_1/" in kv.key))
    env = assignment["spec"]["env"]
    assert (env["KVRAFT_ARRAY_JOB"], env["KVRAFT_ARRAY_INDEX"], env["KVRAFT_ARRAY_COUNT"]) == ("sweep", "1", "4")
    assert env["KVRAFT_CHECKPOINT_DIR"] == "/ckpt/sweep/1"

    held = (await d.client.get("/registry/jobstatus/sweep_3")).kvs[0].mod_revision
    await _finish(d, "sweep_1", "Succeeded")
    await steps(d, 2)
    assert await _bound(d) == {"sweep_0", "sweep_2"}  # the next index, not sweep_3
    # the held element's status is not rewritten as others start and end (with a thousand
    # elements, that would be a thousand writes each time)
    assert (await d.client.get("/registry/jobstatus/sweep_3")).kvs[0].mod_revision == held
    for job in ("sweep_0", "sweep_2"):
        await _finish(d, job, "Succeeded")
    await steps(d, 2)
    assert await _bound(d) == {"sweep_3"}
    assert (await _status(d, "pick-best"))["phase"] == "Pending"  # one element left
    await _finish(d, "sweep_3", "Succeeded")
    await steps(d, 3)
    assert await _bound(d) == {"pick-best"}
    assert (await _status(d, "pick-best"))["dependencies"] == {"sweep": "Succeeded"}


async def test_a_failed_element_fails_the_arrays_dependents_and_cancel_by_the_arrays_name(
        daemon: SchedulerDaemon, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:  # noqa: F811
    d, eps = daemon, list(daemon.config.endpoints)
    path = tmp_path / "sweep.yaml"
    path.write_text(SWEEP)
    assert (await asyncio.to_thread(_jobctl, eps, capsys, "submit", "-f", str(path)))[0] == 0
    await nodes(d, "n1", "n2")
    await steps(d, 2)
    await _finish(d, "sweep_0", "Failed")
    await steps(d, 2)
    assert await _bound(d) == {"sweep_1", "sweep_2"}  # the other elements go on (Slurm's too)
    assert (await _status(d, "pick-best"))["phase"] == "Pending"  # not until every element ended
    rc, out, err = await asyncio.to_thread(_jobctl, eps, capsys, "cancel", "sweep")
    assert (rc, err) == (0, ""), err
    assert out == "job/sweep_1 cancelled\njob/sweep_2 cancelled\njob/sweep_3 cancelled\n"  # (sweep_0 had ended)
    await steps(d, 3)
    assert [(await _status(d, f"sweep_{i}"))["phase"] for i in range(4)] == ["Failed"] + ["Cancelled"] * 3
    st = await _status(d, "pick-best")
    assert (st["phase"], st["reason"], st["message"]) == ("Failed", "DependencyNeverSatisfied", "job sweep ended Failed")
    assert ("DependencyNeverSatisfied", "job sweep ended Failed") in await _events(d, "pick-best")


@pytest.mark.parametrize(("first", "text", "want"), [
    ("name: sweep\ntasks: [{name: w, command: x}]\n", "name: sweep\narray: '0-1'\ntasks: [{name: w, command: x}]\n",
     'Error from server (AlreadyExists): jobs "sweep" already exists (a job array may not take a job\'s name)\n'),
    ("name: sweep\narray: '0-1'\ntasks: [{name: w, command: x}]\n",
     "name: sweep\narray: '5-6'\ntasks: [{name: w, command: x}]\n",
     'Error from server (AlreadyExists): job array "sweep" already exists (sweep_0 is one of its elements)\n'),
    ("name: sweep_1\ntasks: [{name: w, command: x}]\n", "name: sweep\narray: '0-2'\ntasks: [{name: w, command: x}]\n",
     "Error from server (AlreadyExists): jobs \"sweep_1\" already exist (the names of array sweep's elements)\n"),
    (None, "name: sweep\narray: '0-3%0'\ntasks: [{name: w, command: x}]\n",
     "error: invalid job\n  {path}: document 1 (job sweep): array: %0: the limit of elements running at once must be "
     "a whole number >= 1\n"),
    # one file: sweep_1 was stored, then the array's txn failed on it ("1 submitted before it")
    (None, "name: sweep_1\ntasks: [{name: w, command: x}]\n---\nname: sweep\narray: '0-2'\ntasks: [{name: w, command: x}]\n",
     "error: {path}: job name sweep_1 appears twice: job sweep_1 (document 1) and an element of array sweep "
     "(document 2); nothing was submitted\n"),
    (None, "name: a\ntasks: [{name: w, command: x}]\n---\nname: a\ntasks: [{name: w, command: y}]\n",
     "error: {path}: job name a appears twice: job a (document 1) and job a (document 2); nothing was submitted\n"),
], ids=["job-name", "array-name", "element-name", "bad-limit", "element-of-the-same-file", "job-twice-in-a-file"])
def test_jobctl_refuses_an_array_whose_names_are_taken(
        one_member: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path,  # noqa: F811
        first: str | None, text: str, want: str) -> None:
    from kvraft.client import SyncClient

    with SyncClient(one_member, request_timeout_s=10.0) as c:
        c.delete("/registry/", prefix=True)
    path = tmp_path / "job.yaml"
    if first is not None:
        path.write_text(first)
        assert _jobctl(one_member, capsys, "submit", "-f", str(path))[0] == 0
    with SyncClient(one_member, request_timeout_s=10.0) as c:
        before = sorted(kv.key for kv in c.get("/registry/jobs/", prefix=True).kvs)
    path.write_text(text)
    assert _jobctl(one_member, capsys, "submit", "-f", str(path)) == (1, "", want.format(path=path))
    if first is None:  # what a dry run can see without the cluster, it says too
        assert _jobctl(one_member, capsys, "submit", "-f", str(path), "--dry-run") == (1, "", want.format(path=path))
    # a server dry run sees the cluster: it refuses each of these as submit does, writing nothing
    assert _jobctl(one_member, capsys, "submit", "-f", str(path), "--dry-run=server") == (1, "", want.format(path=path))
    with SyncClient(one_member, request_timeout_s=10.0) as c:
        assert sorted(kv.key for kv in c.get("/registry/jobs/", prefix=True).kvs) == before


async def test_a_large_array_is_written_in_several_txns(
        daemon: SchedulerDaemon, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:  # noqa: F811
    """250 elements: more than one txn may hold (etcd's --max-txn-ops is 128)."""
    d, eps = daemon, list(daemon.config.endpoints)
    path = tmp_path / "big.yaml"
    path.write_text("name: big\narray: '0-249%10'\ntasks: [{name: w, command: x, resources: {gpus: 1}}]\n")
    rc, out, err = await asyncio.to_thread(_jobctl, eps, capsys, "submit", "-f", str(path), "-o", "name")
    assert (rc, err, out.split()) == (0, "", [f"big_{i}" for i in range(250)])
    kvs = (await d.client.get("/registry/jobs/big_", prefix=True)).kvs
    assert len(kvs) == 250 and len({kv.mod_revision for kv in kvs}) == 3
    await nodes(d, "n1", "n2")
    await steps(d, 2)
    assert len(await _bound(d)) == 10  # 16 GPUs free, the limit says 10
    assert json.loads((await d.client.get("/registry/jobs/big_249")).kvs[0].value)["array"]["count"] == 250
    rc, out, _ = await asyncio.to_thread(_jobctl, eps, capsys, "get", "jobs", "big")
    assert rc == 0 and [line.split()[0] for line in out.splitlines()[1:]] == [f"big_{i}" for i in range(10)] + [
        "big_[10-249%10]"], out
    rc, out, _ = await asyncio.to_thread(_jobctl, eps, capsys, "get", "jobs", "big", "-r")
    assert rc == 0 and [line.split()[0] for line in out.splitlines()[1:]] == [f"big_{i}" for i in range(250)]


async def test_without_a_limit_elements_start_by_index_not_by_name(
        daemon: SchedulerDaemon, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:  # noqa: F811
    """One node, room for one element at a time: big_2 before big_10 (their names sort the
    other way; the core's queues break ties by submission time, then by name)."""
    d, eps = daemon, list(daemon.config.endpoints)
    path = tmp_path / "a.yaml"
    path.write_text("name: big\narray: '2,10'\ntasks: [{name: w, command: x, resources: {gpus: 8}}]\n")
    assert (await asyncio.to_thread(_jobctl, eps, capsys, "submit", "-f", str(path)))[0] == 0
    await nodes(d, "n1")
    await steps(d, 2)
    assert await _bound(d) == {"big_2"}
    await _finish(d, "big_2", "Succeeded")
    await steps(d, 3)
    assert await _bound(d) == {"big_10"}


async def test_requeue_by_the_arrays_name_requeues_its_running_elements(
        daemon: SchedulerDaemon, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:  # noqa: F811
    """`jobctl requeue sweep` said `jobs "sweep" not found` of an array that `get jobs sweep`
    lists, and cancel, suspend, resume and update all take (Slurm's scontrol requeue does)."""
    d, eps = daemon, list(daemon.config.endpoints)
    path = tmp_path / "sweep.yaml"
    path.write_text(SWEEP)
    assert (await asyncio.to_thread(_jobctl, eps, capsys, "submit", "-f", str(path)))[0] == 0
    rc, out, err = await asyncio.to_thread(_jobctl, eps, capsys, "requeue", "sweep")
    assert (rc, out, err) == (0, "job array sweep: no element is running: nothing to requeue\n", "")
    await nodes(d, "n1", "n2")
    await steps(d, 2)
    assert await _bound(d) == {"sweep_0", "sweep_1"}
    rc, out, err = await asyncio.to_thread(_jobctl, eps, capsys, "requeue", "sweep")
    assert (rc, err) == (0, "") and out == "job/sweep_0 requeue requested\njob/sweep_1 requeue requested\n", out
    assert {kv.key for kv in (await d.client.get("/registry/evictions/", prefix=True)).kvs} == {
        b"/registry/evictions/sweep_0", b"/registry/evictions/sweep_1"}
    assert (await asyncio.to_thread(_jobctl, eps, capsys, "requeue", "nope"))[:2] == (1, "")
