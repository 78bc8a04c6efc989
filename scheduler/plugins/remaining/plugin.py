"""RemainingTimeFirst: preemptive shortest *expected remaining* time first, learned online.

The QueueSort of the ``remaining`` profile. A job's expected remaining run time comes from
``RunTimeHistory`` (history.py): the run times of the jobs that finished so far (the plugin
learns them from ``JobFinished``, never from a job's future), conditioned on the run time the
job has already received (its attained GPU-seconds / its GPUs), per tenant and size class.
Before any job finished it uses the job's own estimate (``runtime_hint_s``) minus what it ran;
without either it ranks last.

- ``by = "gpu_time"`` (default) multiplies the remaining run time by the GPU count
  (shortest remaining GPU-time first); ``"runtime"`` does not.
- ``aging_s``: the work is divided by ``1 + (now - submit) / aging_s``, for the sort order and
  the rank alike, so a job that has been in the system long (waiting or running) climbs and,
  once running, is not preempted by newcomers with the same expected work. None: no aging.
- ``preempt_ratio`` r (> 1): the rank is (priority, -k) with k = ceil(log_r(work)), so a job
  may preempt only gangs expected to need more than about r x its own work (Tiresias-style
  discretisation: fewer, more worthwhile preemptions as r grows). None: non-preemptive (the
  rank is the priority only).
- ``preempt_margin`` m (>= 1): on top of the rank, a pairwise test (``may_evict``): a job evicts
  a gang of its own priority only if that gang's work is at least m x its own. The buckets
  alone let a job evict a gang just across a bucket's edge (work 1.9 against 2.1 with r = 2)
  and forbid nothing the margin allows, so with m = r each eviction is worth at least r x.
  None: the buckets alone.
- ``min_samples``, ``window``, ``stat`` (``"mean"``, ``"median"`` or ``"gittins"``),
  ``quantile``, ``overrun_factor``: the history's (history.py); ``relative``: learn run time
  over the job's own estimate rather than run time (``LearnedRemaining``).

- ``min_run_s``: a gang that started less than this ago ranks above every job of its priority,
  so it runs at least that long each time before a job of its priority may evict it (fewer
  preemptions: a minimum quantum), ``min_run_growth``^(times evicted) x longer after each
  eviction (so evictions per job grow only with the log of its run time);
  ``next_rank_change_s`` says when that ends. ``min_run_single_s``: the same for jobs of at
  most one GPU (default: ``min_run_s``); their evictions help only other small jobs.

- ``starve_s``: a job pending longer than this (since it was submitted or last evicted) has
  work 0: it goes first and may preempt (Tiresias' STARVELIMIT, in time). None: off.

Scale-free guards (session 20): the absolute hours above were chosen on one cluster. Relative
to the job's own expected run E (``expected_run_s``: the learned expected remaining run time,
the same estimate the order uses, never the job's true duration):

- ``min_run_frac`` f: the quantum is max(floor, f x E), E taken when the run starts (memoised
  per run, so the announced rank change holds), the floor being ``min_run_s``
  (``min_run_single_s`` for one-GPU jobs), capped by ``min_run_max_s`` when set; then x
  ``min_run_growth``^evictions as before. None: the floor alone (the absolute quantum).
- ``starve_factor`` k: a pending job starves after k x E of waiting (E now), at most
  ``starve_s`` when that is set (a cap); None: ``starve_s`` alone.
- ``guard_basis``: ``"expected"`` (E as above) or ``"estimate"``: E is the job's own estimate
  (``runtime_hint_s``, the whole run; the learned E without one), which the heavy tail of the
  learned ratio does not inflate.

Eviction budget (session 28; in no profile, benchmarks): ``evict_budget`` b (evictions per
job): while the evictions so far (preemptions and defragmentation moves, ``ClusterState``'s
counters since the scheduler started) exceed b x the jobs added (at least
``evict_budget_min_jobs``), the rank falls back to LAS's: a gang may preempt only gangs of a
lower priority, or of its priority that have attained ``evict_budget_las_gpu_h`` GPU-hours
while it has not (the order stays the learned one). Checked at the start of each pass. None:
no budget.

Ties: submit time, then job id. Otherwise ranks move with attained service and with what is
learned, unannounced; a parked job is retried on the queue's events and flushes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from scheduler.framework.args import decode_args
from scheduler.framework.interfaces import (
    FinishPlugin,
    ForgetPlugin,
    Handle,
    PassPlugin,
    PreemptGuardPlugin,
    QueueSortPlugin,
)
from scheduler.plugins.remaining.history import LearnedRemaining
from scheduler.state import ClusterState, JobInfo, Phase

__all__ = ["NAME", "RemainingArgs", "RemainingTimeFirst", "new"]

NAME = "remaining"

_UNKNOWN = float("inf")


@dataclass(frozen=True)
class RemainingArgs:
    by: str = "gpu_time"
    aging_s: float | None = None
    preempt_ratio: float | None = None
    min_samples: int = 10
    window: int = 500
    stat: str = "mean"
    quantile: float = 0.5
    overrun_factor: float = 1.0
    relative: bool = False
    min_run_s: float = 0.0
    min_run_growth: float = 1.0
    min_run_single_s: float | None = None
    starve_s: float | None = None
    min_run_frac: float | None = None
    min_run_max_s: float | None = None
    starve_factor: float | None = None
    guard_basis: str = "expected"
    preempt_margin: float | None = None
    evict_budget: float | None = None
    evict_budget_min_jobs: int = 200
    evict_budget_las_gpu_h: float = 128.0


class RemainingTimeFirst:
    name = NAME

    def __init__(self, args: RemainingArgs) -> None:
        if args.by not in ("runtime", "gpu_time"):
            raise ValueError(f"remaining: by must be 'runtime' or 'gpu_time', not {args.by!r}")
        if args.aging_s is not None and args.aging_s <= 0:
            raise ValueError("remaining: aging_s must be positive")
        if args.preempt_ratio is not None and args.preempt_ratio <= 1:
            raise ValueError("remaining: preempt_ratio must be > 1")
        self.by_gpu_time = args.by == "gpu_time"
        self.aging_s = args.aging_s
        self.log_ratio = None if args.preempt_ratio is None else math.log(args.preempt_ratio)
        self.learned = LearnedRemaining(
            relative=args.relative, window=args.window, min_samples=args.min_samples, stat=args.stat,
            quantile=args.quantile, overrun_factor=args.overrun_factor,
        )
        self.history = self.learned.absolute
        if args.min_run_s < 0:
            raise ValueError("remaining: min_run_s must be >= 0")
        self.min_run_s = args.min_run_s
        if args.min_run_growth < 1:
            raise ValueError("remaining: min_run_growth must be >= 1")
        self.growth = args.min_run_growth
        if args.min_run_single_s is not None and args.min_run_single_s < 0:
            raise ValueError("remaining: min_run_single_s must be >= 0")
        self.min_run_single_s = args.min_run_s if args.min_run_single_s is None else args.min_run_single_s
        if args.starve_s is not None and args.starve_s <= 0:
            raise ValueError("remaining: starve_s must be positive")
        self.starve_s = args.starve_s
        if args.min_run_frac is not None and not 0 < args.min_run_frac <= 100:
            raise ValueError(f"remaining: min_run_frac must be in (0, 100], not {args.min_run_frac!r}")
        self.min_run_frac = args.min_run_frac
        if args.min_run_max_s is not None:
            if args.min_run_max_s <= 0:
                raise ValueError("remaining: min_run_max_s must be positive")
            if args.min_run_max_s < max(self.min_run_s, self.min_run_single_s):
                raise ValueError(
                    f"remaining: min_run_max_s ({args.min_run_max_s}) is below the quantum's floor "
                    f"(min_run_s {self.min_run_s}, min_run_single_s {self.min_run_single_s})")
        self.min_run_max_s = args.min_run_max_s
        if args.starve_factor is not None and args.starve_factor <= 0:
            raise ValueError("remaining: starve_factor must be positive")
        self.starve_factor = args.starve_factor
        if args.guard_basis not in ("expected", "estimate"):
            raise ValueError(f"remaining: guard_basis must be 'expected' or 'estimate', not {args.guard_basis!r}")
        self.basis_estimate = args.guard_basis == "estimate"
        if args.preempt_margin is not None and args.preempt_margin < 1:
            raise ValueError(f"remaining: preempt_margin must be >= 1, not {args.preempt_margin!r}")
        self.margin = args.preempt_margin
        # job id -> (bound_at_s, quantum_s): a relative quantum is fixed when the run starts
        self._quanta: dict[str, tuple[float, float]] = {}
        if args.evict_budget is not None and args.evict_budget <= 0:
            raise ValueError(f"remaining: evict_budget must be positive, not {args.evict_budget!r}")
        if args.evict_budget_min_jobs < 1:
            raise ValueError("remaining: evict_budget_min_jobs must be >= 1")
        if args.evict_budget_las_gpu_h <= 0:
            raise ValueError("remaining: evict_budget_las_gpu_h must be positive")
        self.evict_budget = args.evict_budget
        self.budget_min_jobs = args.evict_budget_min_jobs
        self.budget_las_gpu_s = args.evict_budget_las_gpu_h * 3600.0
        self.budget_spent = False  # set by begin_pass: the rank is LAS's

    def begin_pass(self, state: ClusterState, now_s: float) -> None:
        """Whether the eviction budget is spent, for this pass."""
        if self.evict_budget is not None:
            jobs = max(state.jobs_added, self.budget_min_jobs)
            self.budget_spent = state.evictions_total > self.evict_budget * jobs

    # --- learning ---------------------------------------------------------------------------

    def job_finished(self, info: JobInfo, at_s: float) -> None:
        self._quanta.pop(info.job.job_id, None)
        self.learned.job_finished(info, at_s)

    def job_deleted(self, info: JobInfo) -> None:
        self._quanta.pop(info.job.job_id, None)

    # --- ordering ---------------------------------------------------------------------------

    def remaining_s(self, info: JobInfo, now_s: float) -> float:
        """Expected run time left (inf when nothing is known)."""
        left = self.learned.remaining_s(info, now_s)
        return _UNKNOWN if left is None else left

    def work(self, info: JobInfo, now_s: float) -> float:
        """The ordering quantity: expected remaining (GPU-)time, aged."""
        job = info.job
        work = self.remaining_s(info, now_s)  # pending: attained is fixed, so this is E
        if info.phase is Phase.PENDING and now_s - info.pending_since_s > self._starve_limit(
                self.expected_run_s(info) if self.basis_estimate else work):
            return 0.0
        if work == _UNKNOWN:
            return work
        if self.by_gpu_time:
            work *= max(job.gpus, 1)
        if self.aging_s is not None:
            work /= 1.0 + max(0.0, now_s - job.submit_s) / self.aging_s
        return work

    def sort_key(self, info: JobInfo, now_s: float) -> tuple[float | str, ...]:
        job = info.job
        return (-job.priority, self.work(info, now_s), job.submit_s, job.job_id)

    def rank(self, info: JobInfo, now_s: float) -> tuple[float, ...]:
        if self.log_ratio is None:
            return (info.job.priority,)
        if info.phase is Phase.RUNNING and info.bound_at_s is not None \
                and now_s - info.bound_at_s < self.quantum_s(info):
            return (info.job.priority, math.inf)  # its guaranteed run: no equal-priority job evicts it
        if self.budget_spent:  # LAS's two queues
            return (info.job.priority, -1.0 if info.attained_at(now_s) >= self.budget_las_gpu_s else 0.0)
        work = self.work(info, now_s)
        if work == _UNKNOWN:
            return (info.job.priority, -math.inf)
        return (info.job.priority, -float(math.ceil(math.log(work + 1.0) / self.log_ratio)))

    def may_evict(self, preemptor: JobInfo, victim: JobInfo, now_s: float) -> bool:
        """The pairwise margin (the victim already ranks below the preemptor): a gang of the
        preemptor's priority is evicted only for a job with 1 / ``preempt_margin`` of its work."""
        if self.margin is None or victim.job.priority != preemptor.job.priority:
            return True
        return self.work(victim, now_s) >= self.margin * self.work(preemptor, now_s)

    def next_rank_change_s(self, info: JobInfo, now_s: float) -> float | None:
        if self.log_ratio is not None and info.phase is Phase.RUNNING \
                and info.bound_at_s is not None and now_s < info.bound_at_s + self.quantum_s(info):
            return info.bound_at_s + self.quantum_s(info)
        return None

    def expected_run_s(self, info: JobInfo) -> float:
        """E, what the scale-free guards scale with: the expected remaining run time given the
        service banked so far (for a running job, at the start of its run), from the learned
        estimate (inf when nothing is known). The job's true duration is never an input."""
        if self.basis_estimate and info.job.runtime_hint_s is not None:
            return info.job.runtime_hint_s
        at_s = info.bound_at_s if info.phase is Phase.RUNNING and info.bound_at_s is not None else 0.0
        return self.remaining_s(info, at_s)

    def quantum_s(self, info: JobInfo) -> float:
        """The run a gang is guaranteed each time it starts: the floor min_run_s
        (min_run_single_s for a job of at most one GPU), or with ``min_run_frac`` f
        max(floor, f x E) capped by ``min_run_max_s`` (E at the run's start, kept for the run),
        x growth^evictions."""
        floor = self.min_run_single_s if info.job.gpus <= 1 else self.min_run_s
        base = floor
        if self.min_run_frac is not None:
            key = info.job.job_id
            bound = info.bound_at_s if info.phase is Phase.RUNNING else None
            kept = self._quanta.get(key) if bound is not None else None
            if kept is not None and kept[0] == bound:
                base = kept[1]
            else:
                expected = self.expected_run_s(info)  # unknown: the floor alone
                if expected != _UNKNOWN:
                    base = max(floor, self.min_run_frac * expected)
                if self.min_run_max_s is not None:
                    base = min(base, self.min_run_max_s)
                if bound is not None:
                    self._quanta[key] = (bound, base)
        if not base:
            return 0.0
        return base * self.growth ** min(info.evictions, 30)

    def starve_limit_s(self, info: JobInfo) -> float:
        """How long a job may wait (since submitted or last evicted) before it goes first:
        ``starve_s``, or with ``starve_factor`` k min(k x E, starve_s); inf: never."""
        return self._starve_limit(self.expected_run_s(info))

    def _starve_limit(self, expected_s: float) -> float:
        limit = math.inf if self.starve_s is None else self.starve_s
        if self.starve_factor is not None and expected_s != _UNKNOWN:
            limit = min(limit, self.starve_factor * expected_s)
        return limit


def new(args: Mapping[str, Any], handle: Handle) -> RemainingTimeFirst:
    return RemainingTimeFirst(decode_args(RemainingArgs, args))


_check_queue_sort: QueueSortPlugin = RemainingTimeFirst(RemainingArgs())
_check_finish: FinishPlugin = RemainingTimeFirst(RemainingArgs())
_check_forget: ForgetPlugin = RemainingTimeFirst(RemainingArgs())
_check_guard: PreemptGuardPlugin = RemainingTimeFirst(RemainingArgs())
_check_pass: PassPlugin = RemainingTimeFirst(RemainingArgs())
