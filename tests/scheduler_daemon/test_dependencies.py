"""Job dependencies (``depends_on``, ``scheduler.dependencies``) through the daemon's own pass
(``SchedulerDaemon.step``) on a real one-member kvraft, in this process: a job waits, held
out of the core, while its dependency runs, and is bound once it succeeds; a failed
dependency fails its dependents along the chain, and a ``finished`` dependent runs after it."""

from __future__ import annotations

import json
from typing import Any

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
