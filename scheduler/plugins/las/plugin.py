"""LeastAttainedService: Tiresias' discretised two-dimensional LAS.

A job's attained service is GPUs x seconds it has run (over all attempts). Thresholds split
jobs into queues: queue 0 below the first threshold, queue 1 below the second, ... Jobs are
ordered by priority, then queue, then submit time (FIFO inside a queue, as Tiresias does to
avoid thrashing). The rank used by preemption is (priority, -queue): a gang in a lower queue
may preempt gangs in higher queues. With ``starvation_factor`` set, a pending job that has
waited longer than ``starvation_factor`` x its run time so far goes back to queue 0
(Tiresias' STARVELIMIT); off by default.

``within = "learned"`` orders a queue by the expected remaining GPU-time that the core learns
from finished jobs given each job's attained service (``remaining.history.RunTimeHistory``,
``learned_stat``: mean, median or Gittins index; the plugin learns through ``job_finished``),
instead of the job's own estimate: preemption still follows the queues, the order inside them
follows the learned estimate (the job's own estimate only before any job finished).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from scheduler.framework.args import decode_args
from scheduler.framework.interfaces import Handle, QueueSortPlugin
from scheduler.plugins.remaining.history import LearnedRemaining
from scheduler.state import JobInfo, Phase

__all__ = ["NAME", "LasArgs", "LeastAttainedService", "new"]

NAME = "las"
_UNKNOWN = float("inf")


@dataclass(frozen=True)
class LasArgs:
    thresholds_gpu_h: tuple[float, ...] = (8.0,)
    starvation_factor: float | None = None
    # Order inside a queue: "fifo" (Tiresias), "shortest" (least estimated GPU-time left) or
    # "shortest_runtime" (least estimated run time left).
    within: str = "fifo"
    # A job past its estimate: expected to run this x its run time more (0: "almost done").
    overrun_factor: float = 0.0
    # "gpu_time": 2D attained service in GPU-hours (Tiresias); "time": run hours, any width.
    service: str = "gpu_time"
    # With ``within`` shortest: divide the estimate by 1 + time since submission / aging_s, so
    # that wide or long jobs are not starved by a stream of small ones.
    aging_s: float | None = None
    # With ``within`` learned: the statistic of the learned conditional run-time distribution.
    learned_stat: str = "gittins"
    learned_min_samples: int = 10
    learned_relative: bool = False


class LeastAttainedService:
    name = NAME

    def __init__(self, args: LasArgs) -> None:
        if list(args.thresholds_gpu_h) != sorted(args.thresholds_gpu_h) or any(
            t <= 0 for t in args.thresholds_gpu_h
        ):
            raise ValueError(f"las: thresholds must be positive and increasing: {args.thresholds_gpu_h}")
        if args.within not in ("fifo", "shortest", "shortest_runtime", "learned"):
            raise ValueError(f"las: within must be fifo, shortest, shortest_runtime or learned, not {args.within!r}")
        self.thresholds_gpu_s = tuple(t * 3600.0 for t in args.thresholds_gpu_h)
        self.starvation_factor = args.starvation_factor
        self.shortest = args.within != "fifo"
        self.by_runtime = args.within == "shortest_runtime"
        self.overrun_factor = args.overrun_factor
        if args.service not in ("gpu_time", "time"):
            raise ValueError(f"las: service must be gpu_time or time, not {args.service!r}")
        self.per_gpu = args.service == "time"
        if args.aging_s is not None and args.aging_s <= 0:
            raise ValueError("las: aging_s must be positive")
        self.aging_s = args.aging_s
        self.learned = (LearnedRemaining(stat=args.learned_stat, min_samples=args.learned_min_samples,
                                         relative=args.learned_relative)
                        if args.within == "learned" else None)
        self.history = None if self.learned is None else self.learned.absolute

    def job_finished(self, info: JobInfo, at_s: float) -> None:
        if self.learned is not None:
            self.learned.job_finished(info, at_s)

    def _left_s(self, info: JobInfo, now_s: float) -> float | None:
        if self.learned is not None:
            return self.learned.remaining_s(info, now_s)
        return info.remaining_hint_s(now_s, self.overrun_factor)

    def queue_of(self, info: JobInfo, now_s: float) -> int:
        attained = info.attained_at(now_s)
        if self.per_gpu and info.job.gpus:
            attained /= info.job.gpus
        level = 0
        for threshold in self.thresholds_gpu_s:
            if attained < threshold:
                break
            level += 1
        if (
            level
            and self.starvation_factor is not None
            and info.phase is Phase.PENDING
            and info.job.gpus
            and now_s - info.pending_since_s
            > self.starvation_factor * (attained if self.per_gpu else attained / info.job.gpus)
        ):
            return 0
        return level

    def sort_key(self, info: JobInfo, now_s: float) -> tuple[float | str, ...]:
        job = info.job
        level = self.queue_of(info, now_s)
        if self.shortest:
            left = self._left_s(info, now_s)
            if left is None:
                left = _UNKNOWN
            elif not self.by_runtime:
                left *= job.gpus
            if self.aging_s is not None and left != _UNKNOWN:
                left /= 1.0 + max(0.0, now_s - job.submit_s) / self.aging_s
            return (-job.priority, level, left, job.submit_s, job.job_id)
        return (-job.priority, level, job.submit_s, job.job_id)

    def rank(self, info: JobInfo, now_s: float) -> tuple[float, ...]:
        return (info.job.priority, -self.queue_of(info, now_s))

    def next_rank_change_s(self, info: JobInfo, now_s: float) -> float | None:
        if info.phase is not Phase.RUNNING or not info.job.gpus:
            return None
        attained = info.attained_at(now_s)
        rate = float(info.job.gpus)
        if self.per_gpu:
            attained /= info.job.gpus
            rate = 1.0
        for threshold in self.thresholds_gpu_s:
            if attained < threshold:
                return now_s + (threshold - attained) / rate
        return None


def new(args: Mapping[str, Any], handle: Handle) -> LeastAttainedService:
    return LeastAttainedService(decode_args(LasArgs, args))


_check_queue_sort: QueueSortPlugin = LeastAttainedService(LasArgs())
