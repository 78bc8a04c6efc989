"""A slice of the Philly trace driven through ``kvraft-scheduler`` places every job where the
simulator (``scheduler.sim.Simulation``, the same core and profile) places it on the same
events: the same nodes (read back from what the fake agent registered, through the daemon's
own ``ClusterView``), the same jobs, all submitted at one instant, before any finishes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from harness import ROOT, Procs, wait_for

from kvraft.client import Op, SyncClient
from scheduler import keys
from scheduler.informer_view import ClusterView
from scheduler.jobs import normalize_job
from scheduler.model import Placement
from scheduler.profiles import profile
from scheduler.sim import Estimator, Simulation, TraceJob, read_trace

TRACE = ROOT.parent / "shared" / "traces" / "philly_jobs_busiest_week.csv"


class RecordingSimulation(Simulation):
    """The simulator, remembering where each job was started."""

    placements: dict[str, Placement]

    def _start(self, rec, placement, now):  # type: ignore[no-untyped-def]
        self.placements = getattr(self, "placements", {})
        self.placements.setdefault(rec.job.job_id, placement)
        return super()._start(rec, placement, now)


def _canonical(tasks: list[tuple[str, tuple[int, ...]]]) -> list[tuple[str, tuple[int, ...]]]:
    """Per node, the GPUs the job holds (task numbering is not part of a placement)."""
    by_node: dict[str, list[int]] = {}
    for node, gpus in tasks:
        by_node.setdefault(node, []).extend(gpus)
    return sorted((n, tuple(sorted(g))) for n, g in by_node.items())


@pytest.mark.skipif(not TRACE.exists(), reason=f"trace not found: {TRACE}")
def test_trace_slice_places_like_the_simulator(procs: Procs, tmp_path: Path) -> None:
    eps = procs.endpoints
    procs.agent("agents", "--nodes", "6", "--gpus-per-node", "8", "--racks", "2")
    trace = [t for t in read_trace(TRACE, limit=400) if t.gpus <= 16][:40]
    assert len(trace) == 40 and len({t.gpus for t in trace}) > 2  # a mix of gang sizes
    base = time.time()
    docs = []
    for t in trace:
        doc = {"name": t.job_id, "tenant": t.vc, "estimate_s": t.duration_s,
               "tasks": [{"name": "w", "replicas": max(t.gpus, 1), "command": ["sleep", "3600"],
                          "resources": {"gpus": 1 if t.gpus else 0}}]}
        docs.append(normalize_job(doc, submitted_at=base))
    with SyncClient(eps, request_timeout_s=15.0) as c:
        c.txn().then(*(Op.put(keys.job_key(d["name"]), json.dumps(d).encode()) for d in docs)).commit()
        listed = c.get("/registry/", prefix=True)
    view = ClusterView()
    view.replace(listed.kvs, listed.header.revision)
    nodes = [m for n in sorted(view.nodes) if (m := view.node_model(n)) is not None]
    assert len(nodes) == 6 and all(n.healthy for n in nodes)
    # the daemon: one pass over all forty (they are all there when it starts leading)
    procs.scheduler("sched-a")

    def decided() -> dict[str, dict] | None:
        with SyncClient(eps, request_timeout_s=15.0) as c:
            statuses = {kv.key.decode().rsplit("/", 1)[1]: json.loads(kv.value)
                        for kv in c.get(keys.JOBSTATUS, prefix=True).kvs}
        if all(statuses.get(t.job_id, {}).get("reason", "Queued") != "Queued" for t in trace):
            return statuses
        return None
    statuses = wait_for(decided, 90, "every job bound or pending with a reason")
    with SyncClient(eps, request_timeout_s=15.0) as c:
        bindings = {kv.key.decode().rsplit("/", 1)[1]: json.loads(kv.value)
                    for kv in c.get(keys.BINDINGS, prefix=True).kvs}
    daemon = {job: _canonical([(t["node"], tuple(t["gpus"])) for t in b["tasks"]]) for job, b in bindings.items()}
    # the simulator: same nodes, same jobs (submitted at 0, none finishing inside the horizon)
    sim = RecordingSimulation([TraceJob(t.job_id, t.vc, 0.0, t.gpus, t.duration_s) for t in trace], nodes,
                              profile("default"), seed=0, estimator=Estimator("oracle"), horizon_s=0.0)
    result = sim.run()
    assert result.bindings == len(getattr(sim, "placements", {}))
    simulated = {job: _canonical([(a.node, tuple(a.gpus)) for a in p.tasks])
                 for job, p in getattr(sim, "placements", {}).items()}
    assert 0 < len(simulated) < len(trace), "the slice should both place and leave jobs pending"
    assert daemon == simulated, {j: (daemon.get(j), simulated.get(j)) for j in set(daemon) | set(simulated)
                                 if daemon.get(j) != simulated.get(j)}
    pending = {t.job_id for t in trace} - set(simulated)
    assert all(statuses[j]["phase"] == "Pending" for j in pending)
