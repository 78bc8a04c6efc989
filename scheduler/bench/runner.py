"""Throughput of the real scheduling core: decisions per second and pass latency.

For a workload, a cluster is built and partly filled with background gangs (a node is, with
probability ``fill``, fully busy; otherwise half the time partly busy, 1-7 GPUs, else free),
then, for each measured pass: ``batch`` jobs are submitted, one ``Scheduler.schedule`` pass
runs (timed), and the measured jobs bound ``keep_passes`` passes earlier finish, so the
cluster stays in a steady state. No store, no network: this is the core the daemon runs
between watch events and the store txn, measured alone (the reference's section 6.3 #7).
"""

from __future__ import annotations

import random
import time
from collections import deque
from dataclasses import dataclass

from scheduler.bench.workloads import Workload
from scheduler.cycle import Scheduler
from scheduler.model import (
    Job,
    JobAdded,
    JobDeleted,
    JobFinished,
    Node,
    NodeAdded,
    Placement,
    TaskAssignment,
)
from scheduler.profiles import profile
from scheduler.sim.metrics import percentile

__all__ = ["BenchResult", "run_workload"]

WARMUP_PASSES = 3


@dataclass(frozen=True)
class BenchResult:
    workload: str
    profile: str
    nodes: int
    submitted: int
    placed: int
    decisions_per_s: float
    pass_ms_p50: float
    pass_ms_p99: float
    decision_ms_mean: float
    setup_s: float

    def row(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _background(workload: Workload, nodes: list[Node], rng: random.Random) -> list[JobAdded]:
    events: list[JobAdded] = []
    for i, node in enumerate(nodes):
        draw = rng.random()
        if draw < workload.fill:
            busy = node.gpus
        elif draw < workload.fill + (1 - workload.fill) / 2:
            busy = rng.randint(1, node.gpus - 1)
        else:
            continue
        gpus = sorted(rng.sample(range(node.gpus), busy))
        job = Job(job_id=f"bg-{i}", tasks=busy, gpus_per_task=1, est_runtime_s=1e6)
        placement = Placement(tuple(TaskAssignment(k, node.name, (g,)) for k, g in enumerate(gpus)))
        events.append(JobAdded(job, placement, 0.0))
    return events


def run_workload(workload: Workload, profile_name: str = "default", seed: int = 0, keep_passes: int = 5) -> BenchResult:
    rng = random.Random(seed)
    started = time.perf_counter()
    per_rack = workload.nodes_per_rack
    nodes = [
        Node(f"n{i:05d}", workload.gpus_per_node, rack=f"rack-{i // per_rack:04d}",
             spine=f"spine-{i // (per_rack * 16):03d}")
        for i in range(workload.nodes)
    ]
    sched = Scheduler(profile(profile_name), seed=seed)
    sched.handle(*(NodeAdded(n) for n in nodes))
    sched.handle(*_background(workload, nodes, rng))
    setup_s = time.perf_counter() - started
    bound: deque[list[str]] = deque()
    latencies: list[float] = []
    placed = submitted = 0
    busy_s = 0.0
    now = 0.0
    for number in range(WARMUP_PASSES + workload.passes):
        now += 1.0
        jobs = [
            Job(job_id=f"p{number}-{k}", tasks=rng.choice(workload.tasks), gpus_per_task=workload.gpus_per_task,
                est_runtime_s=rng.uniform(600, 36_000), submit_s=now)
            for k in range(workload.batch)
        ]
        sched.handle(*(JobAdded(j) for j in jobs))
        t0 = time.perf_counter()
        result = sched.schedule(now)
        elapsed = time.perf_counter() - t0
        bound.append([b.job_id for b in result.bindings])
        leftover = [JobDeleted(j.job_id) for j in jobs if j.job_id in sched.state.pending]
        finished = [JobFinished(j, now) for j in bound.popleft()] if len(bound) > keep_passes else []
        sched.handle(*leftover, *finished)
        if number >= WARMUP_PASSES:
            latencies.append(elapsed)
            busy_s += elapsed
            placed += len(result.bindings)
            submitted += len(jobs)
    return BenchResult(
        workload=workload.name, profile=profile_name, nodes=workload.nodes, submitted=submitted, placed=placed,
        decisions_per_s=placed / busy_s if busy_s else float("nan"),
        pass_ms_p50=1000 * percentile(latencies, 50), pass_ms_p99=1000 * percentile(latencies, 99),
        decision_ms_mean=1000 * busy_s / placed if placed else float("nan"), setup_s=setup_s,
    )
