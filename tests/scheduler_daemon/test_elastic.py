"""Elastic jobs through jobctl and the daemon's own pass on a real one-member kvraft: a job
with ``min_available`` below its replicas (Volcano's minAvailable) is bound with as many tasks
as fit; its assignments are those tasks, each told the world size; the run keeps that size
across passes (the view gives the core the bound size, so the binding is never taken for one
the core cannot hold); the next run may be bigger."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from test_dependencies import _finish, _jobctl, _status
from test_malformed import daemon, doc, nodes, one_member, put, spec, steps  # noqa: F401  (fixtures)
from test_suspend_update import _submit

from scheduler.service import SchedulerDaemon

ELASTIC = "name: el\nmin_available: 2\nrestart_policy: OnFailure\ntasks: [{name: w, replicas: 4, command: x, resources: {gpus: 4}}]\n"


async def _assignments(d: SchedulerDaemon) -> list[dict[str, object]]:
    return [json.loads(kv.value) for kv in (await d.client.get("/registry/assignments/", prefix=True)).kvs]


async def test_an_elastic_job_runs_with_the_tasks_that_fit_then_whole(
        daemon: SchedulerDaemon, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:  # noqa: F811
    d, eps = daemon, list(daemon.config.endpoints)
    await asyncio.to_thread(_submit, eps, capsys, tmp_path, ELASTIC)
    assert (await doc(d, "/registry/jobs/el"))["min_available"] == 2
    await nodes(d, "n1")  # 8 GPUs: 2 of the 4 tasks
    await steps(d, 3)
    st = await _status(d, "el")
    assert (st["phase"], len(st["placement"])) == ("Running", 2), st
    assert (await _events_scheduled(d)) == ["bound to n1:[0, 1, 2, 3, 4, 5, 6, 7]; 2 of 4 tasks (elastic, at least 2)"]
    got = await _assignments(d)
    assert sorted(a["spec"]["env"]["KVRAFT_RANK"] for a in got) == ["0", "1"]  # type: ignore[index]
    assert {a["spec"]["env"]["KVRAFT_WORLD_SIZE"] for a in got} == {"2"}  # type: ignore[index]
    assert sorted(a["task"] for a in got) == ["w-0", "w-1"]
    rc, out, _ = await asyncio.to_thread(_jobctl, eps, capsys, "get", "jobs", "-o", "json")
    (row,) = json.loads(out)["items"]
    assert (rc, row["gpus"], row["tasks"]) == (0, 8, 2)  # the run's size, not the spec's 16 GPUs
    assert not d.feed.unfit and d.core is not None and d.core.state.jobs["el"].job.tasks == 2
    assert d.core.state.jobs["el"].confirmed  # the core was told the stored run is the one it assumed
    d._rebuild()  # a new leader (or a restart) builds its core from the store: the run at its size
    await steps(d, 2)
    assert not d.feed.unfit and d.core is not None and d.core.state.jobs["el"].job.tasks == 2
    assert len((await _status(d, "el"))["placement"]) == 2
    await nodes(d, "n2")  # more room while it runs: the run keeps its size
    await steps(d, 2)
    assert len((await _status(d, "el"))["placement"]) == 2

    # a task fails: the gang restarts (OnFailure) and its next run takes all 4 tasks
    await _finish(d, "el", "Failed")
    await steps(d, 3)
    st = await _status(d, "el")
    assert (st["phase"], st["restarts"], len(st["placement"])) == ("Running", 1, 4), st
    assert {a["spec"]["env"]["KVRAFT_WORLD_SIZE"] for a in await _assignments(d)} == {"4"}  # type: ignore[index]
    assert d.core is not None and d.core.state.jobs["el"].job.tasks == 4


async def _events_scheduled(d: SchedulerDaemon) -> list[str]:
    kvs = (await d.client.get("/registry/events/el/", prefix=True)).kvs
    return [e["message"] for e in (json.loads(kv.value) for kv in kvs) if e["type"] == "Scheduled"]


def test_min_available_below_the_replicas_is_for_one_task_group() -> None:
    from scheduler.jobs import normalize_job, to_model, validate_job

    one = {"name": "j", "min_available": 2, "tasks": [{"name": "w", "replicas": 4, "command": "x"}]}
    assert validate_job(one) == [] and to_model(normalize_job(one)).min_tasks == 2
    assert "min_available" not in normalize_job(dict(one, min_available=4))  # = replicas: not elastic
    two = dict(one, tasks=[{"name": "a", "replicas": 3, "command": "x"}, {"name": "b", "command": "y"}])
    assert [p.path for p in validate_job(two)] == ["min_available"]
    assert [p.path for p in validate_job(dict(one, min_available=5))] == ["min_available"]


async def test_an_elastic_run_restarts_larger_when_room_frees(daemon: SchedulerDaemon) -> None:  # noqa: F811
    """The elastic plugin (here with no wait: ``--plugin-arg elastic.grow_after_s=0``) grows a
    run bound with 2 of 4 tasks once a node joins: its run stops as a preempted one does
    (status Resizing, the binding's eviction reason ``resize``), the new GPUs are held for it
    meanwhile, and the next run has all 4 tasks; it counts as a resize, not a restart or a
    preemption."""
    daemon.config.plugin_args = ["elastic.grow_after_s=0", "elastic.hold_s=60"]
    d = daemon
    await put(d, "/registry/jobs/el", spec("el", gpus=4, replicas=4, min_available=2, grace_s=0))
    await nodes(d, "n1")
    await steps(d, 2)
    assert len((await _status(d, "el"))["placement"]) == 2
    await nodes(d, "n2")
    await d.informer.list_once()
    await d.step()  # the pass finds room for 4: the run stops to restart larger
    st = await _status(d, "el")
    assert (st["phase"], st["reason"]) == ("Running", "Resizing"), st
    assert (await doc(d, "/registry/bindings/el"))["eviction"]["reason"] == "resize"
    assert d.core is not None and d.core.state.reservations["el"].kind == "resize"
    assert [a["stopping"]["reason"] for a in await _assignments(d)] == ["resize"] * 2  # the tasks are told to stop
    await steps(d, 3)
    st = await _status(d, "el")
    assert (st["phase"], len(st["placement"]), st.get("resizes"), st.get("restarts", 0), st.get("preemptions", 0)) \
        == ("Running", 4, 1, 0, 0), st
    envs = [a["spec"]["env"] for a in await _assignments(d)]  # type: ignore[index]
    assert {e["KVRAFT_WORLD_SIZE"] for e in envs} == {"4"}  # type: ignore[index]
    assert {e["KVRAFT_RUN"] for e in envs} == {"1"}  # a new run: rendezvous keys of its own  # type: ignore[index]
    kvs = (await d.client.get("/registry/events/el/", prefix=True)).kvs
    types = [json.loads(kv.value)["type"] for kv in kvs]
    assert "Resizing" in types and types.count("Scheduled") == 2, types
    assert d.core.state.jobs["el"].job.tasks == 4 and d.core.state.shrunk == set()
    await steps(d, 2)  # whole now: nothing more to grow
    assert (await doc(d, "/registry/bindings/el"))["evicting_until"] is None


async def test_a_preempted_elastic_run_restarts_at_once_on_the_node_it_keeps(daemon: SchedulerDaemon) -> None:  # noqa: F811
    """Shrink on contention: el runs 4 x 4 GPUs on n1 and n2; hi (8 GPUs, priority 100)
    preempts it for one node. el's tasks are told to stop (reason preempted), and once they
    have ended its next run, 2 of its 4 tasks with ``KVRAFT_WORLD_SIZE=2``, is bound on the node
    it kept, held for it meanwhile, while other (priority 50) waits."""
    d = daemon
    await nodes(d, "n1", "n2")
    await put(d, "/registry/jobs/el", spec("el", gpus=4, replicas=4, min_available=2, grace_s=600))
    await steps(d, 2)
    assert len((await _status(d, "el"))["placement"]) == 4
    await put(d, "/registry/jobs/hi", spec("hi", gpus=8, priority=100))
    await put(d, "/registry/jobs/other", spec("other", gpus=1, priority=50))
    await steps(d, 1)
    st = await _status(d, "el")
    assert (st["phase"], st["reason"]) == ("Running", "Preempting"), st
    assert st["message"].startswith("preempted by hi (rank (100, 0) > (0, 0)); elastic: restarts with 2 of 4 tasks on ")
    assert d.core is not None and d.core.state.reservations["el"].kind == "shrink"
    (kept,) = d.core.state.reservations["el"].holds
    assert f"elastic: restarts with 2 of 4 tasks on {kept}" in st["message"]
    stopping = await _assignments(d)
    assert {a["stopping"]["reason"] for a in stopping} == {"preempted"}  # type: ignore[index]
    for a in stopping:  # what the agents report once the tasks have ended (agent/reconcile.py rule 6)
        await put(d, f"/registry/tasks/el/{a['task']}/status",
                  {"job": "el", "task": a["task"], "phase": "Failed", "reason": "Killed",
                   "assignment_revision": (await d.client.get("/registry/bindings/el")).kvs[0].create_revision})
    await steps(d, 2)
    st = await _status(d, "el")
    assert (st["phase"], st["preemptions"]) == ("Running", 1), st
    assert {p["node"] for p in st["placement"]} == {kept} and len(st["placement"]) == 2
    envs = [a["spec"]["env"] for a in await _assignments(d) if a["job"] == "el"]  # type: ignore[index]
    assert {e["KVRAFT_WORLD_SIZE"] for e in envs} == {"2"}  # type: ignore[index]
    assert (await _status(d, "hi"))["phase"] == "Running"
    assert (await _status(d, "other"))["phase"] == "Pending"
