"""Summary metrics of a replay (the reference's section 6.3), one flat dict per policy.

JCT = finish - submit; queueing = first start - submit; utilisation = allocated GPU-hours
inside the window (the 7 trace days) / (capacity x window); effective utilisation = ideal
GPU-hours / allocated GPU-hours. Locality counts a job as "in one node" (2-8 GPUs) or "in one
rack" (> 8 GPUs) only if every one of its runs was. Finish-time fairness per VC is the mean
of JCT / ideal duration (Themis' rho with the isolated run time taken as the trace duration).
Idle while waiting = GPU-hours free (not allocated, whatever the reason: scattered, held for a
reservation, of the wrong type, over a quota) while at least one submitted job is pending, over
the whole replay: what fragmentation and holds cost.
"""

from __future__ import annotations

from collections import defaultdict
from statistics import fmean

from scheduler.sim.engine import JobRecord, RunResult

__all__ = ["idle_gpu_s_while_waiting", "percentile", "summarize"]


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile of ``values`` (q in [0, 100]); NaN when empty."""
    if not values:
        return float("nan")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _frac(records: list[JobRecord], ok: str) -> float:
    if not records:
        return float("nan")
    return sum(1 for r in records if r.levels and all(lv == ok or lv == "node" for lv in r.levels)) / len(records)


def idle_gpu_s_while_waiting(result: RunResult) -> float:
    """GPU-seconds free while at least one submitted job was pending (waiting for a first start
    or to restart after an eviction), from every job's runs; unfinished jobs wait to the end."""
    steps: list[tuple[float, int, int]] = []  # (time, change of allocated GPUs, change of waiting jobs)
    for r in result.records:
        gpus, since = r.trace.gpus, r.trace.submit_s
        for start, stop in r.runs:
            if start > since:
                steps += [(since, 0, 1), (start, 0, -1)]
            steps += [(start, gpus, 0), (stop, -gpus, 0)]
            since = stop
        if r.finish_s is None and result.end_s > since:
            steps += [(since, 0, 1), (result.end_s, 0, -1)]
    steps.sort()
    idle = 0.0
    allocated = waiting = 0
    last = steps[0][0] if steps else 0.0
    for at, d_alloc, d_wait in steps:
        if waiting > 0:
            idle += max(result.capacity_gpus - allocated, 0) * (at - last)
        allocated += d_alloc
        waiting += d_wait
        last = at
    return idle


def summarize(policy: str, result: RunResult) -> dict[str, object]:
    done = [r for r in result.records if r.finish_s is not None]
    jct_h = [(r.finish_s - r.trace.submit_s) / 3600 for r in done if r.finish_s is not None]
    queue_h = [((r.first_start_s or 0.0) - r.trace.submit_s) / 3600 for r in done]
    small = [r for r in done if 2 <= r.trace.gpus <= 8]
    large = [r for r in done if r.trace.gpus > 8]
    small_in_node = (sum(1 for r in small if all(lv == "node" for lv in r.levels)) / len(small)) if small else float("nan")
    busy = sum(r.busy_gpu_s for r in result.records)
    ideal = sum(r.trace.duration_s * r.trace.gpus for r in done)
    allocated = sum(r.ran_s * r.trace.gpus for r in done)
    preemptions = sum(r.preemptions for r in result.records)
    factors = [f for r in done if r.trace.gpus > 1 for f in r.factors]
    rho_by_vc: dict[str, list[float]] = defaultdict(list)
    for r in done:
        if r.trace.duration_s > 0 and r.finish_s is not None:
            rho_by_vc[r.trace.vc].append((r.finish_s - r.trace.submit_s) / r.trace.duration_s)
    rho = [fmean(v) for v in rho_by_vc.values()]
    jain = (sum(rho) ** 2 / (len(rho) * sum(x * x for x in rho))) if rho else float("nan")
    buckets = {"1": [r for r in done if r.trace.gpus <= 1], "2-8": small, ">8": large}
    out: dict[str, object] = {
        "policy": policy,
        "jobs": len(done),
        "unfinished": len(result.unfinished),
        "avg_jct_h": fmean(jct_h) if jct_h else float("nan"),
        "p50_jct_h": percentile(jct_h, 50),
        "p95_jct_h": percentile(jct_h, 95),
        "p99_jct_h": percentile(jct_h, 99),
        "avg_queue_h": fmean(queue_h) if queue_h else float("nan"),
        "p95_queue_h": percentile(queue_h, 95),
        "max_queue_h": max(queue_h, default=float("nan")),
        "util": busy / (result.capacity_gpus * result.window_s) if result.capacity_gpus else float("nan"),
        "effective_util": ideal / allocated if allocated else float("nan"),
        "frac_small_in_one_node": small_in_node,
        "frac_large_in_one_rack": _frac(large, "rack"),
        "mean_slowdown": fmean(factors) if factors else 1.0,
        "preemptions_per_job": preemptions / len(result.records) if result.records else 0.0,
        "moves_per_job": sum(r.moves for r in result.records) / len(result.records) if result.records else 0.0,
        "idle_gpu_h_while_waiting": idle_gpu_s_while_waiting(result) / 3600,
        "gpu_h_lost_to_restarts": sum(r.restart_s * r.trace.gpus for r in result.records) / 3600,
        "gpu_h_lost_to_slowdown": (allocated - ideal) / 3600
        - sum(r.restart_s * r.trace.gpus for r in done) / 3600,
        "max_vc_rho": max(rho, default=float("nan")),
        "jain_vc_rho": jain,
        "makespan_h": result.end_s / 3600,
        "decisions_per_s": result.bindings / result.sched_wall_s if result.sched_wall_s else float("nan"),
        "passes": result.passes,
        "sched_cpu_s": result.sched_wall_s,
        "wall_s": result.wall_s,
    }
    for name, group in buckets.items():
        out[f"avg_jct_h_{name}"] = fmean(
            [(r.finish_s - r.trace.submit_s) / 3600 for r in group if r.finish_s is not None]
        ) if group else float("nan")
    return out
