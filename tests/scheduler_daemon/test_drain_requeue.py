"""``jobctl drain NODE --requeue`` end to end (a real 3-member kvraft, fake agents, the daemon
and jobctl as processes): a 2-task gang with a checkpoint dir is evicted from the drained
node with its grace period and bound again on other nodes only, from its checkpoint; the node
stays cordoned and the request is gone. Requests for a pending job, malformed requests and
``--cancel --requeue`` are refused the way the docs say."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

from harness import Procs, job, jobctl, no_double_allocation, phase, wait_for
from test_end_to_end import gang

from kvraft.client import SyncClient
from scheduler.evictions import request_doc

GRACE_S = 2.0


def _log(procs: Procs, name: str) -> list[dict[str, Any]]:
    out = []
    for line in (procs.base / f"{name}.log").read_text(errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def test_drain_requeue_moves_the_gang_off_the_node(procs: Procs, tmp_path: Path) -> None:
    eps = procs.endpoints
    procs.agent("agents", "--nodes", "3", "--gpus-per-node", "8")
    url = procs.scheduler("sched-a")
    rc, _, err = jobctl(eps, "submit", "-f", "-", stdin=gang("train", 2, 8, restart_policy="OnFailure", max_restarts=1,
                                                             checkpoint_dir="/ckpt/train", grace_s=GRACE_S))
    assert rc == 0, err
    rc, _, err = jobctl(eps, "submit", "-f", "-", stdin=gang("big", 4, 8))  # 32 GPUs of 24: pending
    assert rc == 0, err
    first = wait_for(lambda: (x := job(eps, "train")) and x["status"]["phase"] == "Running" and x, what="train running")
    nodes = sorted({p["node"] for p in first["status"]["placement"]})
    assert len(nodes) == 2
    drained = nodes[0]
    with SyncClient(eps) as c:
        run = c.get("/registry/bindings/train").kvs[0].create_revision

    # not running: said so, nothing written; unknown: NotFound; --cancel with --requeue: usage
    rc, out, err = jobctl(eps, "requeue", "big")
    assert (rc, out) == (0, "job/big is not running (Pending): nothing to requeue\n"), err
    rc, _, err = jobctl(eps, "requeue", "nope")
    assert rc == 1 and 'jobs "nope" not found' in err
    rc, _, err = jobctl(eps, "drain", drained, "--cancel", "--requeue")
    assert rc == 2 and "not allowed with argument" in err
    # a malformed request (under big's key, it names train): skipped with the warning, kept
    with SyncClient(eps) as c:
        assert not c.get("/registry/evictions/", prefix=True).kvs
        c.put("/registry/evictions/big", json.dumps(request_doc("train", "requeue", None, run, "mallory", 1.0)).encode())
    wait_for(lambda: any(e.get("msg") == "malformed value skipped" and e.get("key") == "/registry/evictions/big"
                         for e in _log(procs, "sched-a")), what="the warning")

    rc, out, err = jobctl(eps, "drain", drained, "--requeue")
    assert rc == 0, err
    assert out == f"node/{drained} cordoned\njob/train requeue requested\nnode/{drained} drained\n"
    moved = wait_for(lambda: (x := job(eps, "train")) and x["status"]["phase"] == "Running"
                     and x["status"]["evictions"] == 1 and x["status"]["placement"] and x, timeout_s=90,
                     what="train bound again")
    s = moved["status"]
    assert drained not in {p["node"] for p in s["placement"]} and len(s["placement"]) == 2
    assert (s["restarts"], s["preemptions"]) == (0, 0)  # not a restart, not a preemption
    with SyncClient(eps) as c:
        assignments = [(kv.key.decode(), json.loads(kv.value)) for kv in c.get("/registry/assignments/", prefix=True).kvs]
        events = [json.loads(kv.value) for kv in c.get("/registry/events/train/", prefix=True).kvs]
        left = {kv.key.decode(): kv.value for kv in c.get("/registry/evictions/", prefix=True).kvs}
        assert c.get(f"/registry/cordons/{drained}").kvs  # still cordoned
    assert len(assignments) == 2
    for key, a in assignments:
        assert key.split("/")[3] != drained and key.split("/")[4] == "train", key
        env = a["spec"]["env"]
        assert (env["KVRAFT_RESTARTS"], env["KVRAFT_CHECKPOINT_DIR"]) == ("0", "/ckpt/train"), env
    # through the eviction: Evicted, then Requeued once the tasks have stopped
    kinds = [e["type"] for e in events]
    assert kinds == ["Scheduled", "Evicted", "Requeued", "Scheduled"], kinds
    evicted, requeued = events[1], events[2]
    assert evicted["message"] == (f"Evicted: node {drained} drained by jobctl; stopping with a {GRACE_S:g} s grace "
                                  "period")
    # the fake agent reports the stopped tasks at once: released then, not when the grace period is over
    assert requeued["message"] == f"all tasks stopped; back in the queue (evicted: node {drained} drained by jobctl)"
    # the request is gone; the malformed one is left as it was, and evicted nothing
    assert list(left) == ["/registry/evictions/big"] and json.loads(left["/registry/evictions/big"])["by"] == "mallory"
    assert phase(eps, "big") == "Pending"

    rc, out, _ = jobctl(eps, "describe", "job", "train")
    assert rc == 0 and "Evictions:      1 (drain, requeue)" in out and f"node {drained} drained by jobctl" in out
    assert "SchedulingDisabled" in jobctl(eps, "get", "node", drained)[1]
    metrics = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
    assert 'kvraft_scheduler_evictions_total{reason="drain"} 1.0' in metrics
    assert 'kvraft_scheduler_releases_total{kind="evicted"} 1.0' in metrics
    # draining it again: nothing runs there any more
    rc, out, _ = jobctl(eps, "drain", drained, "--requeue")
    assert (rc, out) == (0, f"node/{drained} already cordoned\nnode/{drained} drained\n")

    # a request for the pending job, written by hand: dropped (deleted) with a log line
    with SyncClient(eps) as c:
        c.put("/registry/evictions/big", json.dumps(request_doc("big", "requeue", None, 1, "kvctl", time.time())).encode())
        wait_for(lambda: not c.get("/registry/evictions/big").kvs, what="the request for a pending job dropped")
    # (the scheduler logs once its delete is answered: the line may follow the key's deletion)
    dropped = wait_for(lambda: [e for e in _log(procs, "sched-a") if e.get("msg") == "eviction request dropped"],
                       what="the dropped request's log line")
    assert [(e["job"], e["why"]) for e in dropped] == [("big", "the job is not running (Pending): nothing to evict")]
    assert phase(eps, "big") == "Pending" and job(eps, "train")["status"]["evictions"] == 1  # type: ignore[index]
    no_double_allocation(eps)
