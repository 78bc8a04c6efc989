"""Job dependencies (``depends_on``, ``scheduler.dependencies``) through the daemon's own pass
(``SchedulerDaemon.step``) on a real one-member kvraft, in this process: a job waits, held
out of the core, while its dependency runs, and is bound once it succeeds; a failed
dependency fails its dependents along the chain, and a ``finished`` dependent runs after it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from test_malformed import daemon, doc, nodes, one_member, put, spec, steps  # noqa: F401  (fixtures)

from scheduler.service import SchedulerDaemon


async def _finish(d: SchedulerDaemon, job: str, phase: str) -> None:
    """Every task of the job's run ends ``phase``, as its agents would write it."""
    kv = (await d.client.get(f"/registry/bindings/{job}")).kvs[0]
    for t in json.loads(kv.value)["tasks"]:
        await put(d, f"/registry/tasks/{job}/{t['task']}/status", {
            "job": job, "task": t["task"], "node": t["node"], "assignment_revision": kv.create_revision,
            "phase": phase, "exit_code": 0 if phase == "Succeeded" else 1,
            "reason": "Completed" if phase == "Succeeded" else "Error"})


async def _status(d: SchedulerDaemon, job: str) -> dict[str, Any]:
    st = await doc(d, f"/registry/jobstatus/{job}")
    assert st is not None, job
    return st  # type: ignore[no-any-return]


async def _events(d: SchedulerDaemon, job: str) -> list[tuple[str, str]]:
    kvs = (await d.client.get(f"/registry/events/{job}/", prefix=True)).kvs
    return [(e["type"], e["message"]) for e in (json.loads(kv.value) for kv in kvs)]


async def _allocated(d: SchedulerDaemon) -> set[str]:
    kvs = (await d.client.get("/registry/alloc/", prefix=True)).kvs
    return {j for kv in kvs for j in json.loads(kv.value)["jobs"]}


async def test_a_pipeline_waits_out_of_the_core_then_runs_after_its_dependency_succeeds(
        daemon: SchedulerDaemon) -> None:  # noqa: F811
    """Two free nodes: train would fit beside prep, but it holds nothing while prep runs."""
    d = daemon
    await nodes(d, "n1", "n2")
    await put(d, "/registry/jobs/prep", spec("prep"))
    await put(d, "/registry/jobs/train", spec("train", depends_on=[{"job": "prep"}]))
    await steps(d, 2)
    assert (await doc(d, "/registry/bindings/prep")) is not None
    assert (await doc(d, "/registry/bindings/train")) is None
    st = await _status(d, "train")
    assert (st["phase"], st["reason"], st["message"]) == (
        "Pending", "Dependency", "waiting for job prep to succeed (Running)"), st
    assert await _allocated(d) == {"prep"}  # no GPUs, and no reservation: the core was never told of it
    assert d.core is not None and "train" not in d.core.state.jobs and "train" not in d.feed.jobs
    assert d.pending_by_reason["Dependency"] == 1

    await _finish(d, "prep", "Succeeded")
    await steps(d, 2)
    assert (await _status(d, "prep"))["phase"] == "Succeeded"
    assert (await doc(d, "/registry/bindings/train")) is not None
    st = await _status(d, "train")
    assert (st["phase"], st["dependencies"]) == ("Running", {"prep": "Succeeded"}), st


async def test_a_failed_dependency_fails_the_chain_and_a_finished_dependent_runs(
        daemon: SchedulerDaemon) -> None:  # noqa: F811
    d = daemon
    await nodes(d, "n1")
    await put(d, "/registry/jobs/prep", spec("prep"))
    await put(d, "/registry/jobs/train", spec("train", depends_on=[{"job": "prep"}]))
    await put(d, "/registry/jobs/evaluate", spec("evaluate", depends_on=[{"job": "train"}]))
    await put(d, "/registry/jobs/report", spec("report", depends_on=[{"job": "prep", "condition": "finished"}]))
    await steps(d, 2)
    assert [(await _status(d, j))["reason"] for j in ("train", "evaluate", "report")] == ["Dependency"] * 3
    assert (await _status(d, "report"))["message"] == "waiting for job prep to finish (Running)"

    await _finish(d, "prep", "Failed")
    await steps(d, 3)
    assert (await _status(d, "prep"))["phase"] == "Failed"
    for job, why in (("train", "job prep ended Failed"), ("evaluate", "job train ended Failed")):
        st = await _status(d, job)
        assert (st["phase"], st["reason"], st["message"]) == ("Failed", "DependencyNeverSatisfied", why), st
        assert ("DependencyNeverSatisfied", why) in await _events(d, job)
    assert (await doc(d, "/registry/bindings/report")) is not None  # afterany: it runs after the failure
    assert (await _status(d, "report"))["dependencies"] == {"prep": "Failed"}
    assert await _allocated(d) == {"report"}


async def test_cancelling_a_dependency_fails_its_dependents(daemon: SchedulerDaemon) -> None:  # noqa: F811
    """jobctl cancel sets the spec's ``cancelled``; no flag is needed for the dependents."""
    d = daemon
    await nodes(d, "n1")
    await put(d, "/registry/jobs/prep", spec("prep", grace_s=0))
    await put(d, "/registry/jobs/train", spec("train", depends_on=[{"job": "prep"}]))
    await steps(d, 1)
    await put(d, "/registry/jobs/prep", dict(spec("prep", grace_s=0), cancelled=True))
    await steps(d, 2)
    assert (await _status(d, "prep"))["phase"] == "Cancelled"
    st = await _status(d, "train")
    assert (st["phase"], st["reason"], st["message"]) == ("Failed", "DependencyNeverSatisfied", "job prep ended Cancelled")
    assert await _allocated(d) == set()


async def test_a_missing_dependency_is_never_met_unless_its_outcome_was_recorded(
        daemon: SchedulerDaemon) -> None:  # noqa: F811
    d = daemon
    await nodes(d, "n1", "n2")
    await put(d, "/registry/jobs/lost", spec("lost", depends_on=[{"job": "gone"}]))
    await put(d, "/registry/jobs/kept", spec("kept", depends_on=[{"job": "gone"}]))
    await put(d, "/registry/jobstatus/kept", {"name": "kept", "phase": "Pending", "dependencies": {"gone": "Succeeded"}})
    await steps(d, 2)
    st = await _status(d, "lost")
    assert (st["phase"], st["reason"], st["message"]) == ("Failed", "DependencyNeverSatisfied", "job gone not found")
    assert (await doc(d, "/registry/bindings/lost")) is None
    assert (await doc(d, "/registry/bindings/kept")) is not None


async def test_a_dependency_collected_at_once_after_it_ends_does_not_strand_its_dependent(
        daemon: SchedulerDaemon) -> None:  # noqa: F811
    """prep's TTL after finishing is 0: the pass that ends it would collect it before train
    recorded the outcome, and train would fail with "job prep not found". The collection
    waits until train has recorded it."""
    d = daemon
    await nodes(d, "n1")
    await put(d, "/registry/jobs/prep", spec("prep", ttl_seconds_after_finished=0))
    await put(d, "/registry/jobs/train", spec("train", depends_on=[{"job": "prep"}]))
    await steps(d, 1)
    await _finish(d, "prep", "Succeeded")
    await steps(d, 1)  # prep ends; not collected: train has not recorded it yet
    assert (await _status(d, "prep"))["phase"] == "Succeeded"
    assert (await _status(d, "train"))["dependencies"] == {"prep": "Succeeded"}
    await steps(d, 2)
    assert (await doc(d, "/registry/jobs/prep")) is None and d.collected == 1  # collected once recorded
    st = await _status(d, "train")
    assert (st["phase"], st["dependencies"]) == ("Running", {"prep": "Succeeded"}), st


def _jobctl(eps: list[str], capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    from scheduler.cli.main import main

    rc = main(["--endpoints", ",".join(eps), *argv])
    out, err = capsys.readouterr()
    return rc, out, err


PIPELINE = """\
name: evaluate
depends_on: [{job: train}, {job: report, condition: finished}]
tasks: [{name: w, command: x, resources: {gpus: 8}}]
---
name: train
depends_on: [{job: prep}]
tasks: [{name: w, command: x, resources: {gpus: 8}}]
---
name: prep
tasks: [{name: w, command: x, resources: {gpus: 8}}]
"""


async def test_jobctl_submits_a_pipeline_in_one_file_dependencies_first_and_describes_it(
        daemon: SchedulerDaemon, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:  # noqa: F811
    """The file names its jobs last-first; written in that order, a pass between two writes
    saw evaluate with no train and failed it ("job train not found")."""
    d, eps = daemon, list(daemon.config.endpoints)
    await put(d, "/registry/jobs/report", spec("report"))
    path = tmp_path / "pipeline.yaml"
    path.write_text(PIPELINE)
    rc, out, err = await asyncio.to_thread(_jobctl, eps, capsys, "submit", "-f", str(path))
    assert (rc, out, err) == (0, "job/prep submitted\njob/train submitted\njob/evaluate submitted\n", "")
    created = {j: (await d.client.get(f"/registry/jobs/{j}")).kvs[0].create_revision for j in ("prep", "train", "evaluate")}
    assert created["prep"] < created["train"] < created["evaluate"]
    await nodes(d, "n1", "n2")
    await steps(d, 2)
    rc, out, _ = await asyncio.to_thread(_jobctl, eps, capsys, "describe", "job", "evaluate")
    assert rc == 0
    assert ("Depends on:     train (succeeded): waiting, Pending\n"
            "                report (finished): waiting, Running\n") in out, out
    assert "Why pending: waiting for job train to succeed (Pending); job report to finish (Running)" in out
    rc, out, _ = await asyncio.to_thread(_jobctl, eps, capsys, "get", "jobs", "-o", "wide")
    row = next(line.split() for line in out.splitlines() if line.startswith("evaluate "))
    assert row[:8] == ["evaluate", "default", "Pending", "8", "0", row[5], "Dependency", "train,report"], row
    await put(d, "/registry/jobstatus/train", {"name": "train", "phase": "Pending", "dependencies": {"prep": "Succeeded"}})
    await d.client.delete("/registry/jobs/prep")
    rc, out, _ = await asyncio.to_thread(_jobctl, eps, capsys, "describe", "job", "train")
    assert "Depends on:     prep (succeeded): met, Succeeded (recorded)\n" in out, out


@pytest.mark.parametrize(("text", "want"), [
    ("name: train\ndepends_on: [{job: prep}]\ntasks: [{name: w, command: x}]\n",
     'error: job train: depends_on: no job "prep" (jobctl get jobs lists them; a job of the same file may be named too)\n'),
    ("name: a\ndepends_on: [{job: b}]\ntasks: [{name: w, command: x}]\n---\n"
     "name: b\ndepends_on: [{job: a}]\ntasks: [{name: w, command: x}]\n",
     "error: {path}: dependency cycle: a -> b -> a\n"),
    ("name: a\ndepends_on: [{job: a}]\ntasks: [{name: w, command: x}]\n",
     "error: invalid job\n  {path}: document 1 (job a): depends_on[0].job: a job cannot depend on itself (a)\n"),
], ids=["unknown", "cycle", "self"])
def test_jobctl_submit_refuses_bad_dependencies_and_writes_nothing(
        one_member: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str, want: str) -> None:  # noqa: F811
    from kvraft.client import SyncClient

    with SyncClient(one_member, request_timeout_s=10.0) as c:
        c.delete("/registry/", prefix=True)
    path = tmp_path / "job.yaml"
    path.write_text(text)
    assert _jobctl(one_member, capsys, "submit", "-f", str(path)) == (1, "", want.format(path=path))
    with SyncClient(one_member, request_timeout_s=10.0) as c:
        assert not c.get("/registry/jobs/", prefix=True).kvs


async def test_a_cycle_written_by_hand_fails_its_jobs_and_spares_the_rest(daemon: SchedulerDaemon) -> None:  # noqa: F811
    """jobctl refuses a cycle in a file; one put with kvctl would otherwise wait for ever. A
    job waiting on the cycle fails with it (a chain); one waiting on a running job waits on."""
    d = daemon
    await nodes(d, "n1", "n2")
    await put(d, "/registry/jobs/run", spec("run"))
    await put(d, "/registry/jobs/a", spec("a", depends_on=[{"job": "run"}, {"job": "b"}]))
    await put(d, "/registry/jobs/b", spec("b", depends_on=[{"job": "a"}]))
    await put(d, "/registry/jobs/c", spec("c", depends_on=[{"job": "b"}]))
    await put(d, "/registry/jobs/w", spec("w", depends_on=[{"job": "run"}]))
    await steps(d, 3)
    for job, cycle in (("a", "a -> b -> a"), ("b", "b -> a -> b")):
        st = await _status(d, job)
        assert (st["phase"], st["reason"]) == ("Failed", "DependencyNeverSatisfied"), st
        assert st["message"].endswith(f"dependency cycle: {cycle}"), st
    st = await _status(d, "c")
    assert (st["phase"], st["reason"]) == ("Failed", "DependencyNeverSatisfied"), st  # its dependency failed
    st = await _status(d, "w")
    assert (st["phase"], st["reason"]) == ("Pending", "Dependency"), st
