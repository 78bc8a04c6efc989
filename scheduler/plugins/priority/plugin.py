"""PrioritySort: higher priority first, then first come first served."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from scheduler.framework.args import decode_args
from scheduler.framework.interfaces import Handle, QueueSortPlugin
from scheduler.state import JobInfo

__all__ = ["NAME", "PriorityArgs", "PrioritySort", "new"]

NAME = "priority"


@dataclass(frozen=True)
class PriorityArgs:
    pass


class PrioritySort:
    name = NAME

    def sort_key(self, info: JobInfo, now_s: float) -> tuple[float | str, ...]:
        job = info.job
        return (-job.priority, job.submit_s, job.job_id)

    def rank(self, info: JobInfo, now_s: float) -> tuple[float, ...]:
        return (info.job.priority,)

    def next_rank_change_s(self, info: JobInfo, now_s: float) -> float | None:
        return None


def new(args: Mapping[str, Any], handle: Handle) -> PrioritySort:
    decode_args(PriorityArgs, args)
    return PrioritySort()


_check_queue_sort: QueueSortPlugin = PrioritySort()
