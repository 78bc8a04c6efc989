"""The discrete-event replay: trace jobs through the real ``Scheduler``.

Events are submissions (from the trace), completions (from the slowdown model) and wake-ups
(``Scheduler.next_wakeup_s``: LAS demotions, queue flushes). At each event time the engine
feeds the events to the scheduler, runs a pass and applies its decisions:

- a binding starts the job: it runs ``remaining work x slowdown(placement)``, plus the restart
  overhead if it ran before (it resumes from a checkpoint taken when it was preempted);
- a preemption stops the victim at once (its progress so far is kept, minus the restart
  overhead it was still paying) and the pass is repeated so the preemptor starts now.

Time never comes from a clock; the only wall-clock reading is the scheduler's own CPU time,
reported as decisions per second.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from scheduler.cycle import Scheduler
from scheduler.framework.registry import Profile
from scheduler.model import (
    Job,
    JobAdded,
    JobEvicted,
    JobFinished,
    JobUpdated,
    Node,
    NodeAdded,
    Placement,
    Tenant,
    TenantUpdated,
)
from scheduler.sim.estimate import Estimator
from scheduler.sim.slowdown import SlowdownModel
from scheduler.sim.trace import TraceJob

__all__ = ["STUCK_AFTER_S", "JobRecord", "RunResult", "Simulation"]

SUBMIT, FINISH, WAKE = 0, 1, 2

# Once every job is submitted and none runs, the replay stops after this much simulated time:
# the jobs still pending then (``RunResult.unfinished``) fit nowhere even on the idle cluster.
# Two days outlast every timer of the shipped profiles (24 h starvation and reservation limits,
# 600 s holds, 300 s retries).
STUCK_AFTER_S = 2 * 86400.0


@dataclass(slots=True)
class JobRecord:
    trace: TraceJob
    job: Job
    remaining_s: float  # ideal (consolidated) work left
    first_start_s: float | None = None
    finish_s: float | None = None
    run_start_s: float = 0.0
    run_factor: float = 1.0
    run_overhead_s: float = 0.0
    token: int = 0
    starts: int = 0
    preemptions: int = 0  # evictions, defragmentation moves included
    moves: int = 0  # of which defragmentation moves
    levels: list[str] = field(default_factory=list)
    factors: list[float] = field(default_factory=list)
    busy_gpu_s: float = 0.0  # allocated GPU-seconds inside the utilisation window
    ran_s: float = 0.0
    restart_s: float = 0.0  # time spent paying restart overheads (after preemptions)
    runs: list[tuple[float, float]] = field(default_factory=list)  # (start, stop) of every run


@dataclass
class RunResult:
    records: list[JobRecord]
    window_s: float
    capacity_gpus: int
    sched_wall_s: float
    wall_s: float
    passes: int
    bindings: int
    end_s: float
    unfinished: list[str]


class Simulation:
    def __init__(
        self,
        trace: list[TraceJob],
        nodes: list[Node],
        profile: Profile,
        *,
        seed: int = 0,
        tenants: list[Tenant] | None = None,
        estimator: Estimator | None = None,
        slowdown: SlowdownModel | None = None,
        restart_overhead_s: float = 30.0,
        window_s: float = 7 * 86400.0,
        gpu_types: dict[str, str] | None = None,
        horizon_s: float | None = None,
    ) -> None:
        self.trace = trace
        self.nodes = nodes
        self.profile = profile
        self.seed = seed
        self.tenants = tenants or []
        self.estimator = estimator or Estimator("history")
        self.slowdown = slowdown or SlowdownModel(nodes, seed)
        self.restart_s = restart_overhead_s
        self.window_s = window_s
        self.gpu_types = gpu_types or {}
        self.horizon_s = horizon_s
        self.rack_of = {n.name: n.rack for n in nodes}

    def _job(self, t: TraceJob) -> Job:
        return Job(
            job_id=t.job_id, tenant=t.vc, tasks=max(t.gpus, 1), gpus_per_task=1 if t.gpus else 0,
            gpu_type=self.gpu_types.get(t.job_id),
            est_runtime_s=self.estimator.estimate(t.vc, t.gpus, t.duration_s), submit_s=t.submit_s,
        )

    def run(self, progress: Callable[[int, int, float], None] | None = None) -> RunResult:
        started = time.perf_counter()
        sched = Scheduler(self.profile, seed=self.seed)
        sched.handle(*(NodeAdded(n) for n in self.nodes), *(TenantUpdated(t) for t in self.tenants))
        for t in self.trace:
            self.slowdown.assign(t.job_id, t.gpus)
        records: dict[str, JobRecord] = {}
        heap: list[tuple[float, int, int, str, int]] = []
        seq = 0
        submit_at = 0
        trace = self.trace
        wake_at = float("inf")
        sched_wall = 0.0
        done = 0
        now = 0.0
        horizon = self.horizon_s if self.horizon_s is not None else float("inf")
        running = 0
        idle_since: float | None = None  # all submitted, nothing running, some job still pending
        while submit_at < len(trace) or heap:
            if submit_at == len(trace) and done == len(trace):
                break  # every job finished: the scheduler's timers (flushes, aging) change nothing now
            now = min(trace[submit_at].submit_s if submit_at < len(trace) else float("inf"),
                      heap[0][0] if heap else float("inf"))
            if now > horizon:
                break
            if submit_at >= len(trace) and running == 0:
                # Only the scheduler's own timers are left (retries, aging, starvation limits,
                # holds): a job that fits in none of their changes within STUCK_AFTER_S on an
                # idle cluster never will, and the replay would wake up forever.
                if idle_since is None:
                    idle_since = now
                elif now - idle_since > STUCK_AFTER_S:
                    now = idle_since
                    break
            else:
                idle_since = None
            events: list[JobAdded | JobFinished] = []
            while submit_at < len(trace) and trace[submit_at].submit_s <= now:
                t = trace[submit_at]
                submit_at += 1
                job = self._job(t)
                records[t.job_id] = JobRecord(t, job, t.duration_s)
                events.append(JobAdded(job, stimulus_id=f"submit:{t.job_id}"))
            while heap and heap[0][0] <= now:
                _, _, kind, job_id, token = heapq.heappop(heap)
                if kind == WAKE:
                    wake_at = float("inf")
                    continue
                rec = records[job_id]
                if token != rec.token or rec.finish_s is not None:
                    continue
                self._stop(rec, now, finished=True)
                running -= 1
                rec.finish_s = now
                done += 1
                self.estimator.observe(rec.trace.vc, rec.trace.gpus, rec.ran_s)
                events.append(JobFinished(job_id, now, stimulus_id=f"finish:{job_id}"))
            if events:
                sched.handle(*events)
            for _ in range(100):
                t0 = time.perf_counter()
                result = sched.schedule(now)
                sched_wall += time.perf_counter() - t0
                progressed = []  # estimates that the jobs' first progress reports change
                for binding in result.bindings:
                    seq += 1
                    rec = records[binding.job_id]
                    if rec.starts == 0 and (new := self.estimator.on_start(rec.job.job_id, rec.trace.gpus,
                                                                            rec.trace.duration_s)) is not None:
                        rec.job = replace(rec.job, est_runtime_s=new)
                        progressed.append(JobUpdated(rec.job, stimulus_id=f"progress:{rec.job.job_id}"))
                    end = self._start(rec, binding.placement, now)
                    running += 1
                    heapq.heappush(heap, (end, seq, FINISH, rec.job.job_id, rec.token))
                if progressed:
                    sched.handle(*progressed)
                if not result.preemptions:
                    break
                evictions = []
                for preemption in result.preemptions:
                    rec = records[preemption.victim_id]
                    self._stop(rec, now, finished=False)
                    running -= 1
                    rec.preemptions += 1
                    rec.moves += preemption.migration
                    evictions.append(JobEvicted(rec.job.job_id, now, stimulus_id=f"preempt:{preemption.preemptor_id}"))
                sched.handle(*evictions)
            wake = sched.next_wakeup_s()
            if wake is not None and now < wake < wake_at:
                wake_at = wake
                seq += 1
                heapq.heappush(heap, (wake, seq, WAKE, "", 0))
            if progress is not None:
                progress(done, len(trace), now)
        stats = sched.statistics()
        unfinished = [j for j, r in records.items() if r.finish_s is None]
        return RunResult(
            records=list(records.values()), window_s=self.window_s,
            capacity_gpus=sum(n.gpus for n in self.nodes), sched_wall_s=sched_wall,
            wall_s=time.perf_counter() - started, passes=stats.passes, bindings=stats.bindings,
            end_s=now, unfinished=unfinished,
        )

    def _start(self, rec: JobRecord, placement: Placement, now: float) -> float:
        factor = self.slowdown.factor(rec.job.job_id, placement)
        overhead = self.restart_s if rec.starts else 0.0
        rec.starts += 1
        rec.token += 1
        rec.run_start_s = now
        rec.run_factor = factor
        rec.run_overhead_s = overhead
        if rec.first_start_s is None:
            rec.first_start_s = now
        rec.levels.append(SlowdownModel.level(placement, self.rack_of))
        rec.factors.append(factor)
        return now + overhead + rec.remaining_s * factor

    def _stop(self, rec: JobRecord, now: float, *, finished: bool) -> None:
        elapsed = now - rec.run_start_s
        rec.restart_s += min(elapsed, rec.run_overhead_s)
        rec.runs.append((rec.run_start_s, now))
        if finished:
            rec.remaining_s = 0.0
        else:
            useful = max(0.0, elapsed - rec.run_overhead_s) / rec.run_factor
            rec.remaining_s = max(0.0, rec.remaining_s - useful)
        rec.ran_s += elapsed
        rec.token += 1
        overlap = max(0.0, min(now, self.window_s) - max(rec.run_start_s, 0.0))
        rec.busy_gpu_s += overlap * rec.trace.gpus
