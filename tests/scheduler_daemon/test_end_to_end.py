"""The daemon end to end on a real 3-member kvraft with fake agents: binding, gangs,
pending reasons, completion, failure restarts, node loss, preemption, cancel."""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from pathlib import Path

from harness import Procs, job, jobctl, no_double_allocation, phase, wait_for, write_yaml

from agent.spec import parse_assignment
from kvraft.client import SyncClient


def gang(name: str, workers: int, gpus: int, command: str = "sleep 600", **extra: object) -> str:
    cmd = json.dumps(command.split())
    lines = [f"name: {name}", "tasks:", f"  - {{name: worker, replicas: {workers}, command: {cmd}, "
             f"resources: {{gpus: {gpus}, cpu: 1, memory: 1Gi}}}}"]
    lines += [f"{k}: {json.dumps(v)}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


def test_bind_gang_pending_reason_complete(procs: Procs, tmp_path: Path) -> None:
    eps = procs.endpoints
    procs.agent("agents", "--nodes", "4", "--gpus-per-node", "8", "--racks", "2")
    url = procs.scheduler("sched-a")
    # a 2 x 8 GPU gang and a 1-GPU job that finishes
    rc, out, err = jobctl(eps, "submit", "-f", write_yaml(tmp_path / "g.yaml", gang("g1", 2, 8, topology={"level": "rack"})))
    assert rc == 0, err
    assert out.strip() == "job/g1 submitted"
    rc, out, err = jobctl(eps, "submit", "-f", "-", "-o", "name", stdin=gang("short", 1, 1, "sleep 1"))
    assert (rc, out.strip()) == (0, "short"), err
    wait_for(lambda: phase(eps, "g1") == "Running", what="g1 running")
    g1 = job(eps, "g1")
    assert g1 is not None
    placement = g1["status"]["placement"]
    assert len(placement) == 2 and {p["rack"] for p in placement} == {placement[0]["rack"]}
    assert sorted(len(p["gpus"]) for p in placement) == [8, 8]
    # the assignments are exactly what the agent parses
    with SyncClient(eps) as c:
        kvs = c.get("/registry/assignments/", prefix=True).kvs
    assert kvs
    for kv in kvs:
        a = parse_assignment(kv.key.decode(), kv.create_revision, json.loads(kv.value))
        assert a.spec is not None, a.error
    wait_for(lambda: phase(eps, "short") == "Succeeded", what="short succeeded")
    # too big for any rack: pending with a reason users can read
    rc, _, err = jobctl(eps, "submit", "-f", "-", stdin=gang("huge", 3, 8, topology={"level": "rack"}))
    assert rc == 0, err
    j = wait_for(lambda: (x := job(eps, "huge")) and x["status"]["reason"] not in ("Queued",) and x, what="reason")
    assert j["status"]["phase"] == "Pending"
    assert j["status"]["message"]
    rc, out, _ = jobctl(eps, "describe", "job", "huge")
    assert rc == 0 and "Why pending:" in out and j["status"]["message"] in out
    rc, out, _ = jobctl(eps, "describe", "job", "g1")
    assert "Scheduled" in out and placement[0]["node"] in out
    # each task of the run with what its agent reports (kubectl describe's container state)
    rows = out[out.index("Placement:"):out.index("Progress:")].splitlines()
    assert rows[1].split() == ["RACK", "NODE", "GPUS", "TASK", "STATE"]
    assert [r.split()[-1] for r in rows[2:]] == ["Running", "Running"], out
    rc, out, _ = jobctl(eps, "get", "nodes")
    assert rc == 0 and "Ready" in out
    no_double_allocation(eps)
    # cordon: the node is shown unschedulable and gets nothing new
    free = next(n for n in ("node-0", "node-1", "node-2", "node-3") if n not in {p["node"] for p in placement})
    assert jobctl(eps, "cordon", free)[0] == 0
    rc, out, _ = jobctl(eps, "get", "nodes", free)
    assert "SchedulingDisabled" in out
    rc, out, _ = jobctl(eps, "top", "nodes")
    assert rc == 0 and "16/32" not in out and "8/8" in out
    assert jobctl(eps, "uncordon", free)[0] == 0
    rc, _, err = jobctl(eps, "cordon", "no-such-node")
    assert rc == 1 and 'nodes "no-such-node" not found' in err
    rc, out, _ = jobctl(eps, "get", "queues")
    assert rc == 0 and "default" in out
    # cancel frees the GPUs
    rc, out, _ = jobctl(eps, "cancel", "g1")
    assert rc == 0
    wait_for(lambda: phase(eps, "g1") == "Cancelled", what="g1 cancelled")
    no_double_allocation(eps)
    rc, out, err = jobctl(eps, "cancel", "nope")
    assert rc == 1 and 'jobs "nope" not found' in err
    health = json.loads(urllib.request.urlopen(url + "/health", timeout=10).read())
    assert health["status"] == "ok" and health["leader"] is True
    metrics = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
    assert "kvraft_scheduler_decisions_total" in metrics and 'kvraft_scheduler_queue_depth{queue="active"}' in metrics
    decisions = [ln for ln in metrics.splitlines() if ln.startswith("kvraft_scheduler_decisions_total ")]
    assert float(decisions[0].split()[1]) >= 2
    assert procs.kill("sched-a", signal.SIGTERM) == 0  # clean shutdown


def test_failure_restart_and_node_loss(procs: Procs, tmp_path: Path) -> None:
    eps = procs.endpoints
    procs.agent("rack0", "--nodes", "2", "--racks", "1", "--rack", "rack-0", "--prefix", "a")
    procs.agent("rack1", "--nodes", "2", "--racks", "1", "--rack", "rack-1", "--prefix", "b")
    procs.scheduler("sched-a")
    jobctl(eps, "submit", "-f", "-", stdin=gang("flaky", 1, 8, "exit 3", restart_policy="OnFailure", max_restarts=2))
    j = wait_for(lambda: (x := job(eps, "flaky")) and x["status"]["phase"] == "Failed" and x, timeout_s=90, what="flaky failed")
    assert j["status"]["restarts"] == 2 and j["status"]["reason"] == "TaskFailed"
    # a gang on one rack; that rack's agent dies; the gang restarts on the other rack
    jobctl(eps, "submit", "-f", "-", stdin=gang("mover", 2, 8, restart_policy="OnFailure", max_restarts=3,
                                                 topology={"level": "rack"}, checkpoint_dir="/ckpt/mover"))
    j = wait_for(lambda: (x := job(eps, "mover")) and x["status"]["phase"] == "Running" and x, what="mover running")
    rack = j["status"]["placement"][0]["rack"]
    procs.kill("rack0" if rack == "rack-0" else "rack1")
    j = wait_for(lambda: (x := job(eps, "mover")) and x["status"]["phase"] == "Running" and x["status"]["restarts"] == 1
                 and x["status"]["placement"] and x, timeout_s=90, what="mover restarted")
    assert {p["rack"] for p in j["status"]["placement"]} == {"rack-1" if rack == "rack-0" else "rack-0"}
    rc, out, _ = jobctl(eps, "describe", "job", "mover")
    assert "Lost" in out and "Restarted" in out and "/ckpt/mover" in out
    rc, out, _ = jobctl(eps, "get", "nodes")
    assert "NotReady" in out
    no_double_allocation(eps)


def test_priority_preemption(procs: Procs, tmp_path: Path) -> None:
    eps = procs.endpoints
    procs.agent("agents", "--nodes", "2", "--gpus-per-node", "8")
    procs.scheduler("sched-a")
    rc, out, err = jobctl(eps, "apply", "-f", "-", stdin=(
        "kind: PriorityClass\nname: high\nvalue: 1000\n---\nkind: PriorityClass\nname: low\nvalue: 0\n"))
    assert rc == 0, err
    assert "priorityclass/high created" in out
    for i in range(2):
        jobctl(eps, "submit", "-f", "-", stdin=gang(f"low{i}", 1, 8, priority_class="low", grace_s=1))
    wait_for(lambda: phase(eps, "low0") == "Running" and phase(eps, "low1") == "Running", what="low jobs running")
    jobctl(eps, "submit", "-f", "-", stdin=gang("urgent", 1, 8, priority_class="high"))
    wait_for(lambda: phase(eps, "urgent") == "Running", timeout_s=90, what="urgent running")
    lows = [job(eps, f"low{i}") for i in range(2)]
    preempted = [j for j in lows if j and j["status"]["preemptions"] == 1]
    assert len(preempted) == 1 and preempted[0]["status"]["phase"] == "Pending"
    rc, out, _ = jobctl(eps, "describe", "job", preempted[0]["name"])
    assert "Preempted" in out and "urgent" in out
    no_double_allocation(eps)


def test_failover_and_racing_schedulers(procs: Procs, tmp_path: Path) -> None:
    eps = procs.endpoints
    procs.agent("agents", "--nodes", "4", "--gpus-per-node", "8", "--racks", "2")
    procs.scheduler("sched-a", ttl_s=2)
    wait_for(lambda: _leader(eps), what="a leader")
    procs.scheduler("sched-b", ttl_s=2)
    for i in range(6):
        jobctl(eps, "submit", "-f", "-", stdin=gang(f"j{i}", 1, 4))
    wait_for(lambda: all(phase(eps, f"j{i}") == "Running" for i in range(6)), what="6 jobs running")
    leader = _leader(eps)
    procs.kill(leader)  # SIGKILL the leading scheduler
    t0 = time.monotonic()
    for i in range(6, 10):
        jobctl(eps, "submit", "-f", "-", stdin=gang(f"j{i}", 1, 2))
    wait_for(lambda: all(phase(eps, f"j{i}") == "Running" for i in range(6, 10)), timeout_s=90, what="standby binds")
    assert _leader(eps) != leader
    assert time.monotonic() - t0 < 90
    no_double_allocation(eps)
    # restart: a new scheduler rebuilds from kvraft and binds nothing twice
    procs.scheduler("sched-c", ttl_s=2)
    assert jobctl(eps, "cancel", "j6")[0] == 0  # the cluster is full (32 GPUs); free 2
    jobctl(eps, "submit", "-f", "-", stdin=gang("late", 1, 2))
    wait_for(lambda: phase(eps, "late") == "Running", timeout_s=90, what="late running")
    no_double_allocation(eps)
    # two schedulers without election race on the same jobs; the alloc compares keep them apart
    for name in list(procs.procs):
        if name.startswith("sched"):
            procs.kill(name)
    assert jobctl(eps, "cancel", *[f"j{i}" for i in range(6)])[0] == 0  # the cluster is full again
    procs.scheduler("race-a", "--election", "false")
    procs.scheduler("race-b", "--election", "false")
    for i in range(8):
        jobctl(eps, "submit", "-f", "-", stdin=gang(f"r{i}", 1, 1))
    wait_for(lambda: all(phase(eps, f"r{i}") == "Running" for i in range(8)), timeout_s=90, what="race jobs running")
    assert all(phase(eps, f"j{i}") == "Cancelled" for i in range(6))
    no_double_allocation(eps)


def _leader(eps: list[str]) -> str:
    with SyncClient(eps) as c:
        resp = c.get("/registry/scheduler/leader/", prefix=True, sort_target="CREATE", sort_order="ASCEND", limit=1)
    return resp.kvs[0].value.decode() if resp.kvs else ""
