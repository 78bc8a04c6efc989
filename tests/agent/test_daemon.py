"""kvraft-agent against a real kvraft cluster: registration, tasks, status, lease loss."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.agent.conftest import assign, status, unassign, wait_for, wait_status

DATA = Path(__file__).parent / "data"


async def test_registers_runs_and_reports(agents, kv) -> None:
    a = agents("n-basic").start()

    async def registered():
        resp = await kv.get("/registry/nodes/n-basic")
        lease = await kv.get("/registry/leases/n-basic")
        return json.loads(resp.kvs[0].value) if resp.kvs and lease.kvs and lease.kvs[0].lease else None

    node = await wait_for(registered, 60, "node registered", a)
    assert node["cpu_milli"] > 0 and node["memory_mib"] > 0
    assert {c["type"] for c in node["conditions"]} >= {"Ready", "MemoryPressure", "DiskPressure", "GPUHealthy"}
    await assign(kv, "n-basic", "j1", "ok", {"command": ["sh", "-c", "echo hello; exit 0"]})
    await assign(kv, "n-basic", "j1", "bad", {"command": ["sh", "-c", "echo oops >&2; exit 3"]})
    ok = await wait_status(kv, "j1", "ok", "Succeeded", agent=a)
    bad = await wait_status(kv, "j1", "bad", "Failed", agent=a)
    assert (ok["exit_code"], ok["reason"], ok["node"]) == (0, "Completed", "n-basic")
    assert (bad["exit_code"], bad["reason"]) == (3, "Error")
    assert "oops" in bad["log_tail"]
    await unassign(kv, "n-basic", "j1", "ok")
    await unassign(kv, "n-basic", "j1", "bad")
    assert (await status(kv, "j1", "ok"))["phase"] == "Succeeded"


async def test_restart_policy_on_failure_counts_attempts(agents, kv) -> None:
    a = agents("n-restart").start()
    script = 'n=$(cat "$KVRAFT_WORKDIR/n" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "$KVRAFT_WORKDIR/n"; echo attempt $n; [ $n -ge 3 ]'
    await assign(kv, "n-restart", "jr", "t", {"command": ["sh", "-c", script], "restart_policy": "OnFailure"})
    s = await wait_status(kv, "jr", "t", "Succeeded", agent=a)
    assert (s["attempt"], s["restarts"], s["exit_code"]) == (3, 2, 0)
    await assign(kv, "n-restart", "jr", "never", {"command": ["sh", "-c", "exit 9"], "restart_policy": "OnFailure",
                                                    "max_restarts": 1})
    s = await wait_status(kv, "jr", "never", "Failed", agent=a)
    assert (s["attempt"], s["restarts"], s["exit_code"]) == (2, 1, 9) and "restart limit" in s["message"]


async def test_bad_specs_fail_with_reasons_and_do_not_stall_the_agent(agents, kv) -> None:
    a = agents("n-bad").start()
    await kv.put("/registry/assignments/n-bad/jb/json", b"{not json")
    await assign(kv, "n-bad", "jb", "empty", {"command": []})
    await assign(kv, "n-bad", "jb", "gpu", {"command": ["true"], "resources": {"gpus": [5]}})
    await assign(kv, "n-bad", "jb", "bin", {"command": ["/no/such/program"]})
    await assign(kv, "n-bad", "jb", "mem", {"command": ["true"], "resources": {"memory_mib": 1}})
    await assign(kv, "n-bad", "jb", "policy", {"command": ["true"], "restart_policy": "Sometimes"})
    got = {t: await wait_status(kv, "jb", t, "Failed", agent=a) for t in ("json", "empty", "gpu", "bin", "mem", "policy")}
    assert got["json"]["reason"] == "InvalidSpec" and "invalid JSON" in got["json"]["message"]
    assert got["empty"]["reason"] == "InvalidSpec" and "spec.command" in got["empty"]["message"]
    assert got["gpu"]["reason"] == "InvalidSpec" and "GPU index [5]" in got["gpu"]["message"]
    assert got["bin"]["reason"] == "StartError" and got["bin"]["exit_code"] == 127
    assert got["mem"]["reason"] == "InvalidSpec" and "memory_mib" in got["mem"]["message"]
    assert got["policy"]["reason"] == "InvalidSpec" and "restart_policy" in got["policy"]["message"]
    await assign(kv, "n-bad", "jb", "good", {"command": ["true"]})
    assert (await wait_status(kv, "jb", "good", "Succeeded", agent=a))["exit_code"] == 0


async def test_status_compare_never_overwrites_a_newer_placement(agents, kv, kvraft_cluster, tmp_path) -> None:
    """A stale agent's report (older assignment revision) is dropped by the txn compare."""
    from agent.agent import Agent
    from agent.config import AgentConfig
    from agent.reconcile import Phase, Report, TaskStatus
    from agent.runtime.fake import FakeRuntime
    from tests.agent.conftest import endpoints

    cfg = AgentConfig(endpoints=endpoints(kvraft_cluster), name="n-stale", data_dir=tmp_path / "stale")
    agent = Agent(cfg, FakeRuntime())
    await agent.client.open()
    try:
        old_rev = await assign(kv, "n-stale", "js", "t", {"command": ["fake", "run"]})
        await agent._write_status(Report("js/t", old_rev, TaskStatus(Phase.RUNNING, 1, 0), "s1"))
        assert (await status(kv, "js", "t"))["phase"] == "Running"
        # the scheduler moves the task: a new placement (new create_revision) writes its own status
        await unassign(kv, "n-stale", "js", "t")
        new_rev = await assign(kv, "n-stale", "js", "t", {"command": ["fake", "run"]})
        await kv.put("/registry/tasks/js/t/status", json.dumps({"phase": "Running", "attempt": 1,
                                                                 "assignment_revision": new_rev, "node": "elsewhere"}).encode())
        await agent._write_status(Report("js/t", old_rev, TaskStatus(Phase.FAILED, 1, 0, exit_code=1), "s2"))
        s = await status(kv, "js", "t")
        assert (s["node"], s["phase"], s["assignment_revision"]) == ("elsewhere", "Running", new_rev)
        assert agent.status_writes["stale_assignment"] == 1
        # same placement, but the status moved on meanwhile: never regress the phase
        await kv.put("/registry/tasks/js/t/status", json.dumps({"phase": "Succeeded", "attempt": 1,
                                                                 "assignment_revision": new_rev, "node": "n-stale"}).encode())
        await agent._write_status(Report("js/t", new_rev, TaskStatus(Phase.RUNNING, 1, 0), "s3"))
        assert (await status(kv, "js", "t"))["phase"] == "Succeeded"
        assert agent.status_writes["superseded"] == 1
    finally:
        await agent.client.close()


async def test_unassign_stops_the_task_with_its_grace_period(agents, kv) -> None:
    import aiohttp

    a = agents("n-stop").start()
    await assign(kv, "n-stop", "jst", "t", {"command": ["sh", "-c", "trap '' TERM; while true; do sleep 1; done"],
                                              "grace_s": 1})
    await wait_status(kv, "jst", "t", "Running", agent=a)
    await unassign(kv, "n-stop", "jst", "t")
    async with aiohttp.ClientSession() as http:
        async def gone():
            async with http.get(f"{a.url}/tasks") as r:
                return await r.json() == []
        await wait_for(gone, 60, "task stopped and removed", a)
    assert (await status(kv, "jst", "t"))["phase"] == "Running"  # the status belongs to the (gone) placement
    assert not list(a.data_dir.glob("tasks/jst/*/*"))


async def test_a_stopping_assignment_stops_the_task_and_reports_its_end_at_once(agents, kv) -> None:
    """What a preemption relies on (agent/reconcile.py rule 6): the scheduler puts the
    assignment again with ``stopping``; the task gets SIGTERM, and its end is reported as soon
    as it has exited, long before its 600 s grace period is over, so the scheduler can release
    the GPUs then. Its restart policy does not start it again; a task assigned already
    stopping never starts."""
    a = agents("n-stopping").start()
    spec = {"command": ["sh", "-c", "trap 'echo checkpointed; exit 0' TERM; while true; do sleep 0.1; done"],
            "grace_s": 600, "restart_policy": "Always"}
    await assign(kv, "n-stopping", "jp", "t", spec)
    await wait_status(kv, "jp", "t", "Running", agent=a)
    stopping = {"reason": "preempted", "since": 1.0}
    await kv.put("/registry/assignments/n-stopping/jp/t",
                 json.dumps({"job": "jp", "task": "t", "spec": spec, "stopping": stopping}).encode())
    s = await wait_status(kv, "jp", "t", "Succeeded", "Failed", agent=a)
    assert (s["phase"], s["attempt"], s["message"]) == ("Succeeded", 1, "stopped by the scheduler (preempted)"), s
    assert "checkpointed" in s["log_tail"]
    await kv.put("/registry/assignments/n-stopping/jp/late",
                 json.dumps({"job": "jp", "task": "late", "spec": spec, "stopping": stopping}).encode())
    s = await wait_status(kv, "jp", "late", "Failed", agent=a)
    assert (s["attempt"], s["reason"], s["message"]) == (0, "Killed", "stopped before it started (preempted)")
    assert (await status(kv, "jp", "t"))["attempt"] == 1  # not restarted


async def test_a_task_never_starts_on_a_gpu_a_stopping_task_still_holds(agents, kv, tmp_path) -> None:
    """GPUs the scheduler freed while a task still stops (its node was suspected, its grace
    period ran out; here its assignment is deleted) may be given to the next job: the new task
    waits (Pending, WaitingForGPUs) until the old one has exited, as kubelet's device manager
    does not hand out a terminating pod's devices."""
    inv = tmp_path / "gpus.yaml"
    inv.write_text((DATA / "fake_gpus.yaml").read_text().replace("TOPO", str(DATA / "topo_v100x8.txt")))
    a = agents("n-gpus", "process", "--gpu-inventory", str(inv)).start()
    marks = tmp_path / "marks"
    marks.mkdir()
    old = {"command": ["sh", "-c", f"trap 'sleep 3; date +%s.%N > {marks}/old-ended; exit 0' TERM; "
                                   "while true; do sleep 0.1; done"], "grace_s": 60, "resources": {"gpus": [0, 1]}}
    await assign(kv, "n-gpus", "jold", "t", old)
    await wait_status(kv, "jold", "t", "Running", agent=a)
    await unassign(kv, "n-gpus", "jold", "t")  # deleted: SIGTERM, and 3 s to exit
    new = {"command": ["sh", "-c", f"date +%s.%N > {marks}/new-started; sleep 600"], "resources": {"gpus": [1]}}
    await assign(kv, "n-gpus", "jnew", "t", new)
    s = await wait_status(kv, "jnew", "t", "Pending", agent=a)
    assert (s["reason"], s["message"]) == ("WaitingForGPUs", "GPU 1 still in use by jold/t"), s
    await wait_status(kv, "jnew", "t", "Running", agent=a)
    started = float(await wait_for(lambda: _read(marks / "new-started"), 30, "the new task's mark", a))
    assert started >= float((marks / "old-ended").read_text())
    await unassign(kv, "n-gpus", "jnew", "t")


async def test_reset_removes_the_cgroups_a_killed_agent_and_its_tasks_left(agents, kv) -> None:
    """``kvraft-agent reset NODE``: a node taken out of service for good after its agent and
    tasks were killed (``kvraft-local down``) keeps no ``kvraft-agent/<node>`` cgroups."""
    import subprocess
    import sys

    from agent.runtime.cgroups import CgroupLayout
    from tests.agent.conftest import kill_task_processes

    layout = CgroupLayout.detect()
    if not layout.usable:
        pytest.skip("cgroups are not writable here")
    a = agents("n-reset").start()
    await assign(kv, "n-reset", "jreset", "t", {"command": ["sleep", "600"], "resources": {"cpu_milli": 100}})
    await wait_status(kv, "jreset", "t", "Running", agent=a)
    a.kill()
    kill_task_processes(a.data_dir)
    assert any(d.is_dir() for d in layout.dirs("kvraft-agent/n-reset"))  # what the killed ones leave
    out = subprocess.run([sys.executable, "-m", "agent", "reset", "n-reset", "n-never"], capture_output=True,
                         text=True, timeout=60)
    assert (out.returncode, out.stdout) == (0, "n-reset: removed kvraft-agent/n-reset\n"
                                                "n-never: nothing left in kvraft-agent/n-never\n"), out
    assert not any(d.exists() for d in layout.dirs("kvraft-agent/n-reset"))


async def _read(path) -> str | None:
    try:
        text = path.read_text()
    except OSError:
        return None
    return text if text.endswith("\n") else None


async def test_malformed_keys_and_values_do_not_stop_the_agent(agents, kv) -> None:
    """A key under the agent's assignments that is not UTF-8 raised out of kv.key.decode() and
    ended the assignment loop (nothing assigned later ever ran); a task status that was a JSON
    list or held 1e999 raised out of its decoding (AttributeError, OverflowError): at a list,
    the same end; at a status write, a report that failed for ever; a binding that was not an
    object failed every start of a ranked task (AttributeError in its rack lookup)."""
    await kv.put("/registry/tasks/jm/listed/status", b"[1]")
    await kv.put(b"/registry/assignments/n-mal/jm/\xff", b"{}")
    await assign(kv, "n-mal", "jm", "listed", {"command": ["true"]})
    a = agents("n-mal").start()
    assert (await wait_status(kv, "jm", "listed", "Succeeded", agent=a))["exit_code"] == 0
    await kv.put(b"/registry/assignments/n-mal/jm/\xfe", b"{}")  # while the agent watches
    await kv.put("/registry/bindings/jm", b'["not", "a", "binding"]')
    await assign(kv, "n-mal", "jm", "ranked", {"command": ["true"], "env": {
        "KVRAFT_JOB": "jm", "KVRAFT_PEERS": "ranked@n-mal", "KVRAFT_RANK": "0"}})
    await kv.put("/registry/tasks/jm/late/status", b'{"assignment_revision": 1e999, "phase": "Running"}')
    await assign(kv, "n-mal", "jm", "late", {"command": ["true"]})
    for task in ("ranked", "late"):
        assert (await wait_status(kv, "jm", task, "Succeeded", agent=a))["exit_code"] == 0
    # a NUL in the environment: no exec takes it (was: the supervisor died of ValueError and the
    # task failed without naming the field); now InvalidSpec before anything starts
    await assign(kv, "n-mal", "jm", "nul", {"command": ["true"], "env": {"A": "b\0c"}})
    nul = await wait_status(kv, "jm", "nul", "Failed", agent=a, timeout_s=20)
    assert (nul["reason"], nul["message"]) == ("InvalidSpec", "spec.env.A: contains a NUL character")


async def test_a_data_dir_removed_under_the_agent_stops_its_tasks_and_the_agent(agents, kv) -> None:
    """The attempts' state is in the data dir. Removed while the agent ran, the agent saw no
    attempts, reported the running task lost and (restart policy Always) started it again
    beside the copy still running; now it kills what runs of its tasks and exits 1."""
    import os
    import shutil

    from agent.runtime.cgroups import CgroupLayout

    if not CgroupLayout.detect().usable:
        pytest.skip("cgroups are not writable here (the sweep finds a task by its cgroup)")
    a = agents("n-gone").start()
    await assign(kv, "n-gone", "jgone", "t", {"command": ["sleep", "600"], "restart_policy": "Always",
                                               "resources": {"cpu_milli": 100}})
    await wait_status(kv, "jgone", "t", "Running", agent=a)
    [started] = a.data_dir.rglob("started.json")
    pid = json.loads(started.read_text())["pid"]
    shutil.rmtree(a.data_dir)
    assert a.proc is not None
    assert a.proc.wait(timeout=60) == 1, a.log_text()[-2000:]
    assert f"the data dir {a.data_dir} was removed while the agent ran" in a.log_text()
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    assert (await status(kv, "jgone", "t"))["attempt"] == 1  # no second copy was started
    os.makedirs(a.data_dir, exist_ok=True)
