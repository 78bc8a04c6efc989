"""LeastAttainedService: Tiresias' discretised two-dimensional LAS.

A job's attained service is GPUs x seconds it has run (over all attempts). Thresholds split
jobs into queues: queue 0 below the first threshold, queue 1 below the second, ... Jobs are
ordered by priority, then queue, then submit time (FIFO inside a queue, as Tiresias does to
avoid thrashing). The rank used by preemption is (priority, -queue): a gang in a lower queue
may preempt gangs in higher queues. With ``starvation_factor`` set, a pending job that has
waited longer than ``starvation_factor`` x its run time so far goes back to queue 0
(Tiresias' STARVELIMIT); off by default.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from scheduler.framework.args import decode_args
from scheduler.framework.interfaces import Handle, QueueSortPlugin
from scheduler.state import JobInfo, Phase

__all__ = ["NAME", "LasArgs", "LeastAttainedService", "new"]

NAME = "las"


@dataclass(frozen=True)
class LasArgs:
    thresholds_gpu_h: tuple[float, ...] = (8.0,)
    starvation_factor: float | None = None


class LeastAttainedService:
    name = NAME

    def __init__(self, args: LasArgs) -> None:
        if list(args.thresholds_gpu_h) != sorted(args.thresholds_gpu_h) or any(
            t <= 0 for t in args.thresholds_gpu_h
        ):
            raise ValueError(f"las: thresholds must be positive and increasing: {args.thresholds_gpu_h}")
        self.thresholds_gpu_s = tuple(t * 3600.0 for t in args.thresholds_gpu_h)
        self.starvation_factor = args.starvation_factor

    def queue_of(self, info: JobInfo, now_s: float) -> int:
        attained = info.attained_at(now_s)
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
            and now_s - info.pending_since_s > self.starvation_factor * attained / info.job.gpus
        ):
            return 0
        return level

    def sort_key(self, info: JobInfo, now_s: float) -> tuple[float | str, ...]:
        job = info.job
        return (-job.priority, self.queue_of(info, now_s), job.submit_s, job.job_id)

    def rank(self, info: JobInfo, now_s: float) -> tuple[float, ...]:
        return (info.job.priority, -self.queue_of(info, now_s))

    def next_rank_change_s(self, info: JobInfo, now_s: float) -> float | None:
        if info.phase is not Phase.RUNNING or not info.job.gpus:
            return None
        attained = info.attained_at(now_s)
        for threshold in self.thresholds_gpu_s:
            if attained < threshold:
                return now_s + (threshold - attained) / info.job.gpus
        return None


def new(args: Mapping[str, Any], handle: Handle) -> LeastAttainedService:
    return LeastAttainedService(decode_args(LasArgs, args))


_check_queue_sort: QueueSortPlugin = LeastAttainedService(LasArgs())
