"""``jobctl suspend`` / ``resume`` (Kubernetes' Job ``.spec.suspend``) through jobctl and the
daemon's own pass on a real one-member kvraft, in this process: a job submitted suspended
holds nothing and waits (Pending/Suspended) until resumed; a running one is stopped with its
grace period (Running/Suspending), released (its GPUs free, a ``preempted`` accounting record),
held, and bound again on resume as its next run; an array's name suspends its elements and
its limit passes over a held one; finished jobs and unknown names are errors. ``jobctl update``
(scontrol update): priority, time limit and estimate of jobs that have not ended."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from test_arrays import _bound
from test_dependencies import _allocated, _events, _finish, _jobctl, _status
from test_malformed import daemon, doc, nodes, one_member, put, spec, steps  # noqa: F401  (fixtures)

from scheduler.service import SUSPENDED, SchedulerDaemon


def _submit(eps: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(text)
    rc, _, err = _jobctl(eps, capsys, "submit", "-f", str(path))
    assert (rc, err) == (0, ""), err


async def test_submitted_suspended_it_holds_nothing_until_resumed(
        daemon: SchedulerDaemon, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:  # noqa: F811
    d, eps = daemon, list(daemon.config.endpoints)
    await asyncio.to_thread(_submit, eps, capsys, tmp_path,
                            "name: held\nsuspend: true\ntasks: [{name: w, command: x, resources: {gpus: 8}}]\n")
    assert (await doc(d, "/registry/jobs/held"))["suspend"] is True
    await nodes(d, "n1")  # room enough: only the suspension keeps it back
    await steps(d, 2)
    assert await _bound(d) == set()
    st = await _status(d, "held")
    assert (st["phase"], st["reason"], st["message"]) == ("Pending", "Suspended", SUSPENDED), st
    assert d.core is not None and "held" not in d.core.state.jobs  # the core never hears of it
    assert d.pending_by_reason["Suspended"] == 1
    rc, out, _ = await asyncio.to_thread(_jobctl, eps, capsys, "suspend", "held")
    assert (rc, out) == (0, "job/held unchanged (already suspended)\n")

    rc, out, _ = await asyncio.to_thread(_jobctl, eps, capsys, "resume", "held")
    assert (rc, out) == (0, "job/held resumed\n")
    assert "suspend" in (await doc(d, "/registry/jobs/held")) and not (await doc(d, "/registry/jobs/held"))["suspend"]
    await steps(d, 2)
    assert await _bound(d) == {"held"}
    rc, out, _ = await asyncio.to_thread(_jobctl, eps, capsys, "resume", "held")
    assert (rc, out) == (0, "job/held unchanged (not suspended)\n")


async def test_a_running_job_is_stopped_with_its_grace_period_then_held_and_resumed_as_its_next_run(
        daemon: SchedulerDaemon, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:  # noqa: F811
    d, eps = daemon, list(daemon.config.endpoints)
    await nodes(d, "n1")
    await asyncio.to_thread(_submit, eps, capsys, tmp_path,
                            "name: train\ngrace_s: 0.5\ncheckpoint_dir: /ckpt/train\n"
                            "tasks: [{name: w, command: x, resources: {gpus: 8}}]\n")
    await steps(d, 2)
    assert await _bound(d) == {"train"}
    await put(d, "/registry/jobs/other", spec("other"))  # waits for the GPUs train holds
    await steps(d, 1)
    first = (await d.client.get("/registry/bindings/train")).kvs[0].create_revision

    rc, out, _ = await asyncio.to_thread(_jobctl, eps, capsys, "suspend", "train")
    assert (rc, out) == (0, "job/train suspended\n")
    await steps(d, 1)
    st = await _status(d, "train")
    assert (st["phase"], st["reason"]) == ("Running", "Suspending"), st
    assert "stopping with a 0.5 s grace period" in st["message"]
    assert (await doc(d, "/registry/bindings/train"))["eviction"]["reason"] == "suspend"
    stopping = [json.loads(kv.value)["stopping"]["reason"] for kv in (await d.client.get("/registry/assignments/", prefix=True)).kvs]
    assert stopping == ["suspend"]  # the agents stop the tasks (and report their end; none here)
    await asyncio.sleep(0.6)
    await steps(d, 2)
    st = await _status(d, "train")
    assert (st["phase"], st["reason"], st["message"]) == ("Pending", "Suspended", SUSPENDED), st
    assert (st["restarts"], st["preemptions"], st["evictions"], st["suspensions"]) == (0, 0, 0, 1)  # not a failure, nor a preemption
    assert [e for e in await _events(d, "train") if e[0] in ("Suspending", "Suspended")] == [
        ("Suspending", "suspended; stopping with a 0.5 s grace period"),
        ("Suspended", "grace period over; held until jobctl resume")]
    assert await _bound(d) == {"other"}  # the GPUs it freed went to the next job
    assert "train" not in await _allocated(d)
    records = [json.loads(kv.value) for kv in (await d.client.get("/accounting/", prefix=True)).kvs]
    assert [(r["job"], r["outcome"], r["kind"]) for r in records] == [("train", "preempted", "suspended")]
    assert d.core is not None and "train" not in d.core.state.jobs

    await _finish(d, "other", "Succeeded")
    rc, out, _ = await asyncio.to_thread(_jobctl, eps, capsys, "resume", "train")
    assert (rc, out) == (0, "job/train resumed\n")
    await steps(d, 3)
    assert await _bound(d) == {"train"}
    again = await d.client.get("/registry/bindings/train")
    assert again.kvs[0].create_revision != first  # a new run
    assignment = next(json.loads(kv.value) for kv in (await d.client.get("/registry/assignments/", prefix=True)).kvs)
    assert assignment["spec"]["env"]["KVRAFT_CHECKPOINT_DIR"] == "/ckpt/train"
    assert assignment["spec"]["env"]["KVRAFT_RUN"] == "1"  # its own run id: not the suspended run's rendezvous

    await _finish(d, "train", "Succeeded")
    await steps(d, 2)
    assert (await _status(d, "train"))["phase"] == "Succeeded"
    rc, _, err = await asyncio.to_thread(_jobctl, eps, capsys, "suspend", "train")
    assert (rc, err) == (1, "error: job train already finished (Succeeded): nothing to suspend\n")
    rc, _, err = await asyncio.to_thread(_jobctl, eps, capsys, "resume", "nope")
    assert rc == 1 and "nope" in err and "not found" in err


async def test_an_arrays_name_suspends_its_elements_and_its_limit_passes_over_a_held_one(
        daemon: SchedulerDaemon, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:  # noqa: F811
    d, eps = daemon, list(daemon.config.endpoints)
    await asyncio.to_thread(_submit, eps, capsys, tmp_path,
                            "name: sweep\narray: '0-3%1'\ntasks: [{name: w, command: x, resources: {gpus: 8}}]\n")
    rc, out, _ = await asyncio.to_thread(_jobctl, eps, capsys, "suspend", "sweep_0")
    assert (rc, out) == (0, "job/sweep_0 suspended\n")
    await nodes(d, "n1", "n2")
    await steps(d, 2)
    assert await _bound(d) == {"sweep_1"}  # the held sweep_0 neither runs nor blocks the next index
    assert (await _status(d, "sweep_0"))["reason"] == "Suspended"
    assert [(await _status(d, j))["reason"] for j in ("sweep_2", "sweep_3")] == ["JobArrayTaskLimit"] * 2

    rc, out, _ = await asyncio.to_thread(_jobctl, eps, capsys, "suspend", "sweep")
    assert rc == 0 and out.splitlines() == ["job/sweep_0 unchanged (already suspended)", "job/sweep_1 suspended",
                                            "job/sweep_2 suspended", "job/sweep_3 suspended"]
    await steps(d, 3)  # grace_s defaults to 30 s: sweep_1 is still stopping
    assert [(await _status(d, j))["reason"] for j in ("sweep_0", "sweep_1", "sweep_2", "sweep_3")] == [
        "Suspended", "Suspending", "Suspended", "Suspended"]
    rc, out, _ = await asyncio.to_thread(_jobctl, eps, capsys, "resume", "sweep")
    assert rc == 0 and out.splitlines() == [f"job/sweep_{i} resumed" for i in range(4)]
    await steps(d, 2)
    # sweep_1's run goes on stopping (a resume does not undo it); the others wait their turn
    assert [(await _status(d, j))["reason"] for j in ("sweep_0", "sweep_2", "sweep_3")] == ["JobArrayTaskLimit"] * 3


def test_suspend_in_a_job_file_is_a_boolean_and_is_stored_only_when_true() -> None:
    from scheduler.jobs import check_stored_job, normalize_job, validate_job

    job = {"name": "j", "tasks": [{"name": "w", "command": "x"}]}
    assert [str(p) for p in validate_job(dict(job, suspend="yes"))] == ["suspend: must be boolean, not str 'yes'"]
    assert "suspend" not in normalize_job(dict(job, suspend=False)) and "suspend" not in normalize_job(job)
    held = normalize_job(dict(job, suspend=True))
    assert held["suspend"] is True and check_stored_job("j", held) == []
    assert [p.path for p in check_stored_job("j", dict(held, suspend=1))] == ["suspend"]


async def test_update_reorders_the_queue_moves_a_deadline_and_is_held_to_admission(
        daemon: SchedulerDaemon, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:  # noqa: F811
    """``jobctl update`` (scontrol update): a raised priority runs first; a running job's
    new max_run stops it; a priority above the tenant's cap, an estimate above max_run and
    a finished job are refused with nothing written."""
    d, eps = daemon, list(daemon.config.endpoints)
    await put(d, "/registry/tenants/t", {"name": "t", "nominal_gpus": 64, "borrow_limit_gpus": None, "max_priority": 100})
    for name in ("first", "second"):
        await asyncio.to_thread(_submit, eps, capsys, tmp_path,
                                f"name: {name}\ntenant: t\ngrace_s: 0\n"  # no agent here: the run is released a pass after its stop
                                "tasks: [{name: w, command: x, resources: {gpus: 8}}]\n")
    rc, out, _ = await asyncio.to_thread(_jobctl, eps, capsys, "update", "second", "--priority", "50")
    assert (rc, out) == (0, "job/second updated\n")
    assert (await doc(d, "/registry/jobs/second"))["priority"] == 50
    rc, out, _ = await asyncio.to_thread(_jobctl, eps, capsys, "update", "second", "--priority", "50")
    assert (rc, out) == (0, "job/second unchanged\n")
    before = (await d.client.get("/registry/jobs/first")).kvs[0].mod_revision
    rc, _, err = await asyncio.to_thread(_jobctl, eps, capsys, "update", "first", "--priority", "500")
    assert rc == 1 and err.startswith("error: job first: not admitted: ") and "(nothing changed)" in err, err
    rc, _, err = await asyncio.to_thread(_jobctl, eps, capsys, "update", "first", "--max-run", "1h", "--estimate", "2h")
    assert (rc, err) == (1, "error: job first: estimate_s: must be <= max_run_s (3600) (nothing changed)\n")
    assert (await d.client.get("/registry/jobs/first")).kvs[0].mod_revision == before
    rc, _, err = await asyncio.to_thread(_jobctl, eps, capsys, "update", "first", "--max-run", "soon")
    assert rc == 1 and err.startswith("error: --max-run: ")
    rc, _, err = await asyncio.to_thread(_jobctl, eps, capsys, "update", "first")
    assert rc == 1 and "nothing to update" in err

    await nodes(d, "n1")  # room for one: the raised priority goes first
    await steps(d, 2)
    assert await _bound(d) == {"second"}
    rc, out, _ = await asyncio.to_thread(_jobctl, eps, capsys, "update", "second", "--max-run", "1s")
    assert (rc, out) == (0, "job/second updated\n")
    await asyncio.sleep(1.1)
    await steps(d, 2)
    st = await _status(d, "second")
    assert (st["phase"], st["reason"]) == ("Failed", "DeadlineExceeded"), st
    assert await _bound(d) == {"first"}
    rc, _, err = await asyncio.to_thread(_jobctl, eps, capsys, "update", "second", "--priority", "1")
    assert (rc, err) == (1, "error: job second already finished (Failed): nothing to update\n")
    await put(d, "/registry/priorityclasses/urgent", {"kind": "PriorityClass", "name": "urgent", "value": 90})
    rc, out, _ = await asyncio.to_thread(_jobctl, eps, capsys, "update", "first", "--priority-class", "urgent")
    assert (rc, out) == (0, "job/first updated\n")
    stored = await doc(d, "/registry/jobs/first")
    assert (stored["priority"], stored["priority_class"]) == (90, "urgent")
    rc, _, err = await asyncio.to_thread(_jobctl, eps, capsys, "update", "first", "--priority-class", "nope")
    assert rc == 1 and 'no priority class "nope"' in err


async def test_a_name_not_found_does_not_stop_the_names_after_it(
        daemon: SchedulerDaemon, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:  # noqa: F811
    """`jobctl cancel ghost a` stopped at ghost and left a running (`cancel a ghost` cancelled
    it): as kubectl delete, each name found is acted on, then the missing ones are the error."""
    eps = list(daemon.config.endpoints)
    for name in ("a", "b"):
        await put(daemon, f"/registry/jobs/{name}", spec(name))
    for verb, said in (("suspend", "suspended"), ("resume", "resumed"), ("cancel", "cancelled")):
        rc, out, err = await asyncio.to_thread(_jobctl, eps, capsys, verb, "ghost", "a", "nope", "b")
        assert (rc, out) == (1, f"job/a {said}\njob/b {said}\n"), (verb, out, err)
        assert err == 'Error from server (NotFound): jobs "ghost" not found\n' \
                      'Error from server (NotFound): jobs "nope" not found\n', err
    assert [(await doc(daemon, f"/registry/jobs/{n}"))["cancelled"] for n in ("a", "b")] == [True, True]
