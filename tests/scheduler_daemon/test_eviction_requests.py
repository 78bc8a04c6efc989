"""Eviction requests (``/registry/evictions/<job>``) through the daemon's own pass
(``SchedulerDaemon.step``) on a real one-member kvraft, in this process: a drain evicts the
run it names once, a new leader that finds the request again does not evict the next run, and
requests that are not to be acted on are dropped (or, malformed, skipped and kept)."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from test_malformed import daemon, doc, nodes, one_member, put, spec, steps  # noqa: F401  (fixtures)

from scheduler.evictions import request_doc
from scheduler.service import SchedulerDaemon
from scheduler.service_config import SchedulerConfig


async def _binding(d: SchedulerDaemon, job: str) -> Any:
    resp = await d.client.get(f"/registry/bindings/{job}")
    return resp.kvs[0] if resp.kvs else None


async def _events(d: SchedulerDaemon, job: str) -> list[dict[str, Any]]:
    return [json.loads(kv.value) for kv in (await d.client.get(f"/registry/events/{job}/", prefix=True)).kvs]


def _logged(caplog: pytest.LogCaptureFixture, msg: str) -> list[dict[str, Any]]:
    return [r.fields for r in caplog.records if r.getMessage() == msg]  # type: ignore[attr-defined]


async def test_a_drain_evicts_the_run_once_and_a_new_leader_never_evicts_the_next_run(
        daemon: SchedulerDaemon, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    """The job is not preemptible and has restart_policy Never: a drain is the operator's
    decision, and a requeue is not a restart (as a preemption)."""
    caplog.set_level(logging.INFO, logger="kvraft.scheduler")
    d = daemon
    await nodes(d, "n1", "n2")
    await put(d, "/registry/jobs/t", spec("t", grace_s=0, preemptible=False, checkpoint_dir="/ckpt/t"))
    await steps(d, 1)
    kv = await _binding(d, "t")
    run, drained = kv.create_revision, json.loads(kv.value)["tasks"][0]["node"]
    other = "n2" if drained == "n1" else "n1"
    await put(d, f"/registry/cordons/{drained}", {"node": drained})
    request = request_doc("t", "drain", drained, run, "jobctl", 1.0)
    await put(d, "/registry/evictions/t", request)
    await steps(d, 1)
    # evicting: the binding marked with why, the tasks stopped, the request deleted in that txn
    b = json.loads((await _binding(d, "t")).value)
    assert b["evicting_until"] is not None
    assert b["eviction"] == {"reason": "drain", "message": f"node {drained} drained by jobctl"}
    assert (await doc(d, "/registry/evictions/t")) is None
    stopping = [json.loads(kv.value)["stopping"] for kv in (await d.client.get(f"/registry/assignments/{drained}/t/",
                                                                                prefix=True)).kvs]
    assert [s["reason"] for s in stopping] == ["drain"]  # the agent stops the task (rule 6 of agent/reconcile.py)
    st = await doc(d, "/registry/jobstatus/t")
    assert (st["phase"], st["reason"], st["message"]) == (
        "Running", "Evicting", f"Evicted: node {drained} drained by jobctl; stopping with a 0 s grace period")
    assert d.evictions == {"drain": 1} and [f["job"] for f in _logged(caplog, "evicting")] == ["t"]

    # the leader dies; the request is found again (as if that leader had deleted it only later)
    await put(d, "/registry/evictions/t", request)
    new = SchedulerDaemon(SchedulerConfig(name="t2", election=False, endpoints=d.config.endpoints), d.client)
    await steps(new, 1)
    assert (await doc(d, "/registry/evictions/t")) is None
    dropped = _logged(caplog, "eviction request dropped")
    assert [(f["job"], f["why"]) for f in dropped] == [
        ("t", f"the run is already being evicted (node {drained} drained by jobctl)")]
    # ... and the grace period over, it released the run once and bound the job again, not on the cordoned node
    kv = await _binding(d, "t")
    assert kv is not None and kv.create_revision != run
    assert [t["node"] for t in json.loads(kv.value)["tasks"]] == [other]
    st = await doc(d, "/registry/jobstatus/t")
    assert (st["phase"], st["evictions"], st["restarts"], st["preemptions"]) == ("Running", 1, 0, 0), st
    assignment = json.loads((await d.client.get(f"/registry/assignments/{other}/t/w-0")).kvs[0].value)
    assert (assignment["spec"]["env"]["KVRAFT_RESTARTS"], assignment["spec"]["env"]["KVRAFT_CHECKPOINT_DIR"]) == (
        "0", "/ckpt/t")
    types = [e["type"] for e in await _events(d, "t")]
    assert (types.count("Evicted"), types.count("Requeued"), types.count("Scheduled")) == (1, 1, 2), types
    requeued = next(e for e in await _events(d, "t") if e["type"] == "Requeued")
    assert requeued["message"] == f"grace period over; back in the queue (evicted: node {drained} drained by jobctl)"
    assert dict(new.releases) == {"evicted": 1} and not new.evictions

    # the stale request once more, now that the job runs again: that run is left alone
    await put(d, "/registry/evictions/t", request)
    before = await _binding(d, "t")
    await steps(new, 1)
    assert (await doc(d, "/registry/evictions/t")) is None
    after = await _binding(d, "t")
    assert (after.mod_revision, json.loads(after.value).get("evicting_until")) == (before.mod_revision, None)
    assert _logged(caplog, "eviction request dropped")[-1]["why"] == (
        f"it is for the run bound at revision {run}, which has ended; the run bound at revision "
        f"{before.create_revision} is left alone")
    assert 'kvraft_scheduler_evictions_total{reason="drain"} 1.0' in d.metrics_text()
    assert 'kvraft_scheduler_evictions_total{reason="drain"} 0.0' in new.metrics_text()


async def test_a_run_is_released_as_soon_as_every_task_reported_its_end_not_when_the_grace_period_is_over(
        daemon: SchedulerDaemon) -> None:  # noqa: F811
    """Kubernetes' graceful deletion: the grace period bounds the stop, it is not a wait. The
    GPUs stay held until the last task has ended (one report is not enough)."""
    d = daemon
    await nodes(d, "n1")
    await put(d, "/registry/jobs/t", spec("t", gpus=4, replicas=2, grace_s=600))
    await steps(d, 1)
    run = (await _binding(d, "t")).create_revision
    await put(d, "/registry/evictions/t", request_doc("t", "requeue", None, run, "jobctl", 1.0))
    await steps(d, 1)
    assert json.loads((await _binding(d, "t")).value)["evicting_until"] is not None

    async def ended(task: str, phase: str, reason: str) -> None:  # what the agent writes (rule 6)
        await put(d, f"/registry/tasks/t/{task}/status", {"job": "t", "task": task, "node": "n1", "phase": phase,
                                                          "reason": reason, "assignment_revision": run, "attempt": 1})

    await ended("w-0", "Failed", "Killed")
    await steps(d, 1)
    kv = await _binding(d, "t")
    assert kv.create_revision == run and json.loads(kv.value)["evicting_until"] is not None  # w-1 still stopping
    await ended("w-1", "Succeeded", "Completed")  # it checkpointed and exited 0 on SIGTERM
    await steps(d, 1)
    requeued = [e["message"] for e in await _events(d, "t") if e["type"] == "Requeued"]
    assert requeued == ["all tasks stopped; back in the queue (evicted: requeued by jobctl)"]
    kv = await _binding(d, "t")
    assert kv is not None and kv.create_revision != run  # bound again at once, 600 s early
    st = await doc(d, "/registry/jobstatus/t")
    assert (st["phase"], st["evictions"], st["restarts"]) == ("Running", 1, 0)
    assert dict(d.releases) == {"evicted": 1}


async def test_a_cancelled_or_restarted_run_holds_its_gpus_until_its_tasks_have_ended(
        daemon: SchedulerDaemon) -> None:  # noqa: F811
    """Kubernetes counts a terminating pod's resources, Volcano's RestartJob waits for the
    pods: a run that ends for good (cancel) or restarts its gang (a task failed) shows its new
    status at once, but its GPUs go to no one until every task has reported its end."""
    d = daemon
    await nodes(d, "n1")
    await put(d, "/registry/jobs/t", spec("t", gpus=4, replicas=2, grace_s=600, restart_policy="OnFailure",
                                          max_restarts=1))
    await steps(d, 1)
    run = (await _binding(d, "t")).create_revision

    async def report(task: str, phase: str, reason: str, revision: int) -> None:  # what the agent writes
        await put(d, f"/registry/tasks/t/{task}/status", {"job": "t", "task": task, "node": "n1", "phase": phase,
                                                          "reason": reason, "assignment_revision": revision,
                                                          "attempt": 1})

    await report("w-0", "Failed", "Error", run)  # one task fails: the gang restarts, w-1 must stop first
    await steps(d, 1)
    st = await doc(d, "/registry/jobstatus/t")
    assert (st["phase"], st["reason"], st["restarts"]) == ("Pending", "TaskFailed", 1), st
    b = json.loads((await _binding(d, "t")).value)
    assert b["eviction"]["reason"] == "restart" and b["evicting_until"] is not None
    stopping = {kv.key.decode().rsplit("/", 1)[1]: json.loads(kv.value)["stopping"]["reason"]
                for kv in (await d.client.get("/registry/assignments/n1/t/", prefix=True)).kvs}
    assert stopping == {"w-0": "restart", "w-1": "restart"}
    assert (await doc(d, "/registry/alloc/n1"))["jobs"]["t"]["gpus"]  # still held
    await report("w-1", "Failed", "Killed", run)
    await steps(d, 1)
    again = await _binding(d, "t")
    assert again.create_revision != run and json.loads(again.value).get("evicting_until") is None  # the next run
    types = [e["type"] for e in await _events(d, "t")]
    assert types == ["Scheduled", "Failed", "Restarted", "Stopping", "Stopped", "Scheduled"], types

    await put(d, "/registry/jobs/t", dict(spec("t", gpus=4, replicas=2, grace_s=600), cancelled=True))
    await steps(d, 1)
    st = await doc(d, "/registry/jobstatus/t")
    assert (st["phase"], st["reason"]) == ("Cancelled", "Cancelled")  # at once
    assert json.loads((await _binding(d, "t")).value)["eviction"]["reason"] == "cancel"
    for task in ("w-0", "w-1"):
        await report(task, "Failed", "Killed", again.create_revision)
    await steps(d, 1)
    assert await _binding(d, "t") is None and await doc(d, "/registry/alloc/n1") is None
    assert [e["message"] for e in await _events(d, "t") if e["type"] == "Stopped"] == ["all tasks stopped"] * 2
    assert dict(d.releases) == {"restarted": 1, "cancelled": 1}


async def test_requests_not_to_act_on_are_dropped_and_malformed_ones_skipped(
        daemon: SchedulerDaemon, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    caplog.set_level(logging.INFO, logger="kvraft.scheduler")
    d = daemon
    await nodes(d, "n1", "n2")
    await put(d, "/registry/jobs/run", spec("run", grace_s=0))
    await put(d, "/registry/jobs/wait", spec("wait", replicas=3))  # 24 GPUs on 16: pending
    await steps(d, 1)
    kv = await _binding(d, "run")
    run = kv.create_revision
    await put(d, "/registry/evictions/wait", request_doc("wait", "requeue", None, 1, "jobctl", 1.0))
    await put(d, "/registry/evictions/gone", request_doc("gone", "requeue", None, 1, "jobctl", 1.0))
    await put(d, "/registry/evictions/run", request_doc("run", "drain", "n9", run, "jobctl", 1.0))
    # under a key its writer may be allowed, a request naming another job (rbac.sh grants by prefix)
    await put(d, "/registry/evictions/thief", request_doc("run", "requeue", None, run, "mallory", 1.0))
    await steps(d, 2)
    for job in ("wait", "gone", "run"):
        assert (await doc(d, f"/registry/evictions/{job}")) is None, job
    assert (await doc(d, "/registry/evictions/thief")) is not None  # skipped, not acted on, not ours to delete
    assert {f["job"]: f["why"] for f in _logged(caplog, "eviction request dropped")} == {
        "wait": "the job is not running (Pending): nothing to evict", "gone": "no such job",
        "run": "the run does not use node n9"}
    assert [(f["key"], f["why"]) for f in _logged(caplog, "malformed value skipped")] == [
        ("/registry/evictions/thief", "job: 'run' is not the key's name 'thief' (the request is not acted on)")]
    assert (await _binding(d, "run")).mod_revision == kv.mod_revision and not d.evictions

    # jobctl requeue: the same path, said as a requeue (nothing is cordoned: any node will do)
    await put(d, "/registry/evictions/run", request_doc("run", "requeue", None, run, "jobctl (user alice)", 1.0))
    await steps(d, 2)
    st = await doc(d, "/registry/jobstatus/run")
    assert (st["phase"], st["evictions"], st["restarts"]) == ("Running", 1, 0), st
    assert (await _binding(d, "run")).create_revision != run and d.evictions == {"requeue": 1}
    evicted = [e for e in await _events(d, "run") if e["type"] == "Evicted"]
    assert [e["message"] for e in evicted] == [
        "Evicted: requeued by jobctl (user alice); stopping with a 0 s grace period"]


async def _run_id(d: SchedulerDaemon, job: str) -> str:
    """The ``KVRAFT_RUN_ID`` the agent gives rank 0 of the job's current run (agent.rankenv,
    with the job uid read as the agent reads it)."""
    from agent.rankenv import NodeFacts, rank_env

    binding = json.loads((await _binding(d, job)).value)
    node, task = binding["tasks"][0]["node"], binding["tasks"][0]["task"]
    env = json.loads((await d.client.get(f"/registry/assignments/{node}/{job}/{task}")).kvs[0].value)["spec"]["env"]
    uid = (await d.client.get(f"/registry/jobs/{job}")).kvs[0].create_revision
    return (env | rank_env(env, NodeFacts(node, "r0", ("http://127.0.0.1:2379",), ""), binding, uid))["KVRAFT_RUN_ID"]


async def test_a_requeued_run_rendezvous_apart_from_the_run_it_replaces(daemon: SchedulerDaemon) -> None:  # noqa: F811
    """A requeue (as a preemption) is not a restart, so KVRAFT_RESTARTS stays; the run id
    must still change, or the new ranks would read the old run's rendezvous keys (rank 0's
    address), which live on up to their lease's TTL after a rank is killed."""
    d = daemon
    await nodes(d, "n1", "n2")
    await put(d, "/registry/jobs/r", spec("r", grace_s=0))
    await steps(d, 1)
    first = await _run_id(d, "r")
    kv = await _binding(d, "r")
    await put(d, "/registry/evictions/r", request_doc("r", "requeue", None, kv.create_revision, "jobctl", 1.0))
    await steps(d, 2)
    assert (await _binding(d, "r")).create_revision != kv.create_revision
    second = await _run_id(d, "r")
    assert second != first, second
