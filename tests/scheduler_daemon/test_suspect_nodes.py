"""One restart per lost node: a gang whose world aborted because a node's agent died is not
bound onto that node again while its lease is still live (scheduler/suspects.py), and a live
agent is kept out only until its lease is seen renewed.

The pure part is driven by a simulated lessor (``ceil`` of the remaining seconds, as
kvraft's TimeToLive) and agents renewing with random phases, periods and latencies, by seed;
the daemon part runs the real scheduler on a real 3-member kvraft with fake agents."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
from harness import Procs, job, jobctl, no_double_allocation, wait_for

from kvraft.client import Compare, Op, SyncClient
from scheduler import keys
from scheduler.suspects import Suspects

# --- the pure rule, against a simulated lessor ---------------------------------------------------


class _Lease:
    """A lease of ``ttl`` s renewed at the given times (none: its agent is dead)."""

    def __init__(self, ttl: int, renewals: list[float]) -> None:
        self.ttl = ttl
        self.renewals = renewals

    def time_to_live(self, t: float) -> int:
        last = max((r for r in self.renewals if r <= t), default=0.0)
        left = last + self.ttl - t
        return math.ceil(left - 1e-9) if left > 0 else -1


def _run(seed: int, alive: bool) -> tuple[float | None, float]:
    """Suspect a node at a random moment and probe it as the daemon does (requests with random
    latencies, the server reading its clock somewhere inside them). Returns when it was
    cleared by a renewal (None: never) and when its lease ends."""
    rng = random.Random(seed)
    ttl = rng.choice([3, 5, 10, 30])
    period = rng.choice([ttl / 3, 2.0 if ttl >= 5 else 1.0, 0.4])
    t, renewals = 0.0, []
    while t < 200:
        renewals.append(t)
        t += period + rng.uniform(0, 0.05)  # the agent sleeps, then renews (one RTT)
    death = rng.uniform(20, 40)
    if not alive:
        renewals = [r for r in renewals if r <= death]
    lease = _Lease(ttl, renewals)
    end = max(renewals) + ttl
    sus = Suspects(probe_interval_s=rng.choice([0.1, 0.5]))
    now = death + rng.uniform(0.0, 1.5)  # the world aborts, the daemon suspects the node
    sus.suspect("n", lease_id=7, heartbeat_revision=1, ttl_s=ttl, renew_interval_s=period, now=now, reason="test")
    while now < end + 5:
        for node, lease_id in sus.due(now):
            assert (node, lease_id) == ("n", 7)
            sent = now
            served = sent + rng.uniform(0.0005, 0.2)
            received = served + rng.uniform(0.0005, 0.2)
            answer = lease.time_to_live(served)
            if answer < 0:
                return None, end
            if sus.observe("n", answer, sent, received):
                return received, end
            now = received
        now += rng.uniform(0.01, 0.3)  # the daemon's loop runs again
    return None, end


@pytest.mark.parametrize("seed", range(300))
def test_a_dead_agents_lease_is_never_taken_for_renewed(seed: int) -> None:
    cleared, end = _run(seed, alive=False)
    assert cleared is None, f"cleared at {cleared}, the lease ends at {end}"


@pytest.mark.parametrize("seed", range(300))
def test_a_live_agent_is_cleared_within_a_renewal_and_a_probe(seed: int) -> None:
    rng = random.Random(seed)
    ttl = rng.choice([3, 5, 10, 30])
    period = rng.choice([ttl / 3, 2.0 if ttl >= 5 else 1.0, 0.4])
    cleared, _ = _run(seed, alive=True)
    assert cleared is not None
    # suspected at most 1.5 s after `death` (20-40 s), cleared within two renewal periods or
    # the 1 s granularity of the answers plus two probes and request times
    assert cleared <= 41.5 + 2 * max(period + 0.05, 1.0) + 2 * 0.5 + 0.8


def test_heartbeat_gone_or_replaced_and_give_up() -> None:
    sus = Suspects()
    for n, rev in (("a", 10), ("b", 11), ("c", 12)):
        assert sus.suspect(n, lease_id=1, heartbeat_revision=rev, ttl_s=10, renew_interval_s=2, now=0.0, reason="x")
    assert not sus.suspect("a", lease_id=1, heartbeat_revision=10, ttl_s=10, renew_interval_s=2, now=1.0, reason="x")
    # a's heartbeat is gone (lease expired), b's was written again by a new registration
    assert sorted(sus.heartbeats({"b": 20, "c": 12})) == ["a", "b"]
    assert sus.names() == {"c"}
    assert sus.expire(15.9) == [] and "c" in sus
    assert sus.next_wakeup() == 0.0  # never probed yet
    assert sus.expire(16.0) == ["c"] and len(sus) == 0  # TTL + 2 renewals + 2 s
    assert sus.next_wakeup() is None


def test_an_unknown_or_ended_lease_is_no_renewal() -> None:
    sus = Suspects(probe_interval_s=0.5)
    sus.suspect("n", lease_id=3, heartbeat_revision=1, ttl_s=10, renew_interval_s=2, now=0.0, reason="x")
    assert not sus.observe("n", 9, 0.0, 0.01)
    assert sus.due(0.2) == [] and sus.due(0.51) == [("n", 3)]
    assert not sus.observe("n", -1, 3.0, 3.01) and not sus.observe("n", 0, 4.0, 4.01)
    assert not sus.observe("n", 9, 0.5, 0.52)  # same second: no evidence either way
    assert sus.observe("n", 9, 2.0, 2.02)  # 2 s later still 9: renewed meanwhile


# --- the daemon, end to end -------------------------------------------------------------------


def _gang(name: str, workers: int, **extra: object) -> str:
    lines = [f"name: {name}", "tasks:", f"  - {{name: worker, replicas: {workers}, command: [serve], "
             "resources: {gpus: 8, cpu: 1, memory: 1Gi}}"]
    lines += [f"{k}: {json.dumps(v)}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


def _fail_task_on(eps: list[str], name: str, node: str) -> None:
    """What the agent of ``node`` writes when the gang's world aborts: its task Failed."""
    with SyncClient(eps, request_timeout_s=15.0) as c:
        kv = c.get(keys.binding_key(name)).kvs[0]
        task = next(t["task"] for t in json.loads(kv.value)["tasks"] if t["node"] == node)
        doc = {"job": name, "task": task, "node": node, "assignment_revision": kv.create_revision, "phase": "Failed",
               "attempt": 1, "exit_code": 1, "reason": "Error", "log_tail": "the MPI world failed"}
        resp = c.txn().if_(Compare.create(keys.assignment_key(node, f"{name}/{task}"), "=", kv.create_revision)).then(
            Op.put(keys.status_key(f"{name}/{task}"), json.dumps(doc).encode())).commit()
        assert resp.succeeded


def _nodes(j: dict[str, object]) -> set[str]:
    st = j["status"]
    assert isinstance(st, dict)
    return {p["node"] for p in st["placement"]}


def _log_lines(path: Path, msg: str) -> list[dict[str, object]]:
    out = []
    for ln in path.read_text().splitlines():
        try:
            doc = json.loads(ln)
        except ValueError:
            continue
        if doc.get("msg") == msg or doc.get("message") == msg:
            out.append(doc)
    return out


def test_a_lost_node_costs_one_restart_and_a_live_agent_is_cleared(procs: Procs, tmp_path: Path) -> None:
    eps = procs.endpoints
    one = ("--nodes", "1", "--gpus-per-node", "8", "--rack", "rack-0")
    procs.agent("agent-c", *one, "--first", "2")
    procs.scheduler("sched-a")
    assert jobctl(eps, "submit", "-f", "-", stdin=_gang("filler", 1))[0] == 0
    wait_for(lambda: (x := job(eps, "filler")) and x["status"]["phase"] == "Running", what="filler on node-2")
    procs.agent("agent-a", *one, "--first", "0", "--lease-ttl-s", "8")
    procs.agent("agent-b", *one, "--first", "1")
    assert jobctl(eps, "submit", "-f", "-", stdin=_gang("g", 2, restart_policy="OnFailure", max_restarts=3,
                                                       topology={"level": "rack"}))[0] == 0
    j = wait_for(lambda: (x := job(eps, "g")) and x["status"]["reason"] == "Running" and x, what="g running")
    assert _nodes(j) == {"node-0", "node-1"}

    # node-0's machine is lost: its agent dies (its lease lives 8 s more), the world aborts
    # and node-1's agent reports its task Failed
    procs.kill("agent-a")
    _fail_task_on(eps, "g", "node-1")
    wait_for(lambda: (x := job(eps, "g")) and x["status"]["restarts"] == 1, what="the restart")
    # the only place for the gang is node-1 + node-2, once the filler is gone
    assert jobctl(eps, "cancel", "filler")[0] == 0
    j = wait_for(lambda: (x := job(eps, "g")) and x["status"]["reason"] == "Running" and x, what="g running again")
    assert _nodes(j) == {"node-1", "node-2"} and j["status"]["restarts"] == 1
    # node-0's lease expires; the gang is not on it, so it is not Lost: still one restart
    with SyncClient(eps, request_timeout_s=15.0) as c:
        wait_for(lambda: not c.get(keys.lease_key("node-0")).kvs, timeout_s=30, what="node-0's lease expiry")
    rc, out, _ = jobctl(eps, "get", "nodes")
    assert rc == 0 and "NotReady" in out
    j = job(eps, "g")
    assert j is not None and j["status"]["restarts"] == 1 and _nodes(j) == {"node-1", "node-2"}
    rc, out, _ = jobctl(eps, "describe", "job", "g")
    assert "Lost" not in out

    # a live agent that had not reported yet (node-1 here) is suspect only until its lease is
    # seen renewed, then the gang goes back onto it
    _fail_task_on(eps, "g", "node-2")
    j = wait_for(lambda: (x := job(eps, "g")) and x["status"]["restarts"] == 2 and x["status"]["reason"] == "Running"
                 and x, what="g running after the second failure")
    assert _nodes(j) == {"node-1", "node-2"}
    no_double_allocation(eps)

    log = tmp_path / "sched-a.log"
    suspected = [str(d.get("node")) for d in _log_lines(log, "node suspected")]
    assert suspected == ["node-0", "node-1"], suspected
    cleared = {str(d.get("node")): str(d.get("why")) for d in _log_lines(log, "node no longer suspected")}
    assert cleared["node-0"] == "heartbeat gone or registered again"
    assert cleared["node-1"] == "lease renewed"
