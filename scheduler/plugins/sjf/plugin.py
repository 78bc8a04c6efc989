"""ShortestJobFirst: priority, then the shortest estimated remaining work first.

The estimate is the job's ``est_runtime_s`` (else ``max_runtime_s``) minus the service it
already received; ``by = "gpu_time"`` multiplies by the GPU count (Helios' QSSF). Jobs without
an estimate go last, FIFO among themselves. ``aging_s`` divides the estimate by
``1 + waited / aging_s`` so that long jobs are not starved by a stream of short ones.
Non-preemptive by default: the rank is the priority only. With ``preempt_ratio`` r (> 1) it is
preemptive shortest-remaining-first, discretised as Tiresias discretises its priorities: the
rank is (priority, -k) with k = ceil(log_r(remaining work)), so a job may preempt only gangs
whose estimated remaining work is more than about r times its own; a job without an estimate
ranks lowest. ``overrun_factor``: a job past its estimate is expected to run this x its run
time so far more (0, the default: it is about to end; 1: as long again, the heavy-tailed guess
``JobInfo.remaining_hint_s`` makes).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from scheduler.framework.args import decode_args
from scheduler.framework.interfaces import Handle, QueueSortPlugin
from scheduler.state import JobInfo

__all__ = ["NAME", "SjfArgs", "ShortestJobFirst", "new"]

NAME = "sjf"

_UNKNOWN = float("inf")


@dataclass(frozen=True)
class SjfArgs:
    by: str = "runtime"
    aging_s: float | None = None
    preempt_ratio: float | None = None
    overrun_factor: float = 0.0


class ShortestJobFirst:
    name = NAME

    def __init__(self, args: SjfArgs) -> None:
        if args.by not in ("runtime", "gpu_time"):
            raise ValueError(f"sjf: by must be 'runtime' or 'gpu_time', not {args.by!r}")
        if args.aging_s is not None and args.aging_s <= 0:
            raise ValueError("sjf: aging_s must be positive")
        self.by_gpu_time = args.by == "gpu_time"
        self.aging_s = args.aging_s
        if args.preempt_ratio is not None and args.preempt_ratio <= 1:
            raise ValueError("sjf: preempt_ratio must be > 1")
        self.log_ratio = None if args.preempt_ratio is None else math.log(args.preempt_ratio)
        if args.overrun_factor < 0:
            raise ValueError("sjf: overrun_factor must be >= 0")
        self.overrun = args.overrun_factor

    def remaining_s(self, info: JobInfo) -> float:
        hint = info.job.runtime_hint_s
        if hint is None:
            return _UNKNOWN
        done = info.attained_gpu_s / info.job.gpus if info.job.gpus else 0.0
        return hint - done if hint > done else self.overrun * done

    def sort_key(self, info: JobInfo, now_s: float) -> tuple[float | str, ...]:
        job = info.job
        work = self.remaining_s(info)
        if self.by_gpu_time and work != _UNKNOWN:
            work *= max(job.gpus, 1)
        if self.aging_s is not None and work != _UNKNOWN:
            work /= 1.0 + max(0.0, now_s - job.submit_s) / self.aging_s
        return (-job.priority, work, job.submit_s, job.job_id)

    def rank(self, info: JobInfo, now_s: float) -> tuple[float, ...]:
        if self.log_ratio is None:
            return (info.job.priority,)
        hint = info.job.runtime_hint_s
        if hint is None:
            return (info.job.priority, -math.inf)
        gpus = max(info.job.gpus, 1)
        done = info.attained_at(now_s) / gpus
        work = hint - done if hint > done else self.overrun * done
        if self.by_gpu_time:
            work *= gpus
        return (info.job.priority, -float(math.ceil(math.log(work + 1.0) / self.log_ratio)))

    def next_rank_change_s(self, info: JobInfo, now_s: float) -> float | None:
        return None


def new(args: Mapping[str, Any], handle: Handle) -> ShortestJobFirst:
    return ShortestJobFirst(decode_args(SjfArgs, args))


_check_queue_sort: QueueSortPlugin = ShortestJobFirst(SjfArgs())
