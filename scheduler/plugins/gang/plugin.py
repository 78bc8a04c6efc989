"""Gang: all or nothing. A gang is only ever placed whole.

PreFilter rejects early when the cluster cannot hold the gang: INFEASIBLE when the usable
cluster (of the wanted GPU type) has fewer GPUs than the gang or no node can hold one task,
UNSCHEDULABLE when fewer GPUs are free than it needs. Permit is the all-or-nothing guard on
the final placement: every task assigned exactly once, with its GPUs, no GPU twice; anything
else is a bug and raises.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from scheduler.framework.args import decode_args
from scheduler.framework.cycle_state import CycleState
from scheduler.framework.interfaces import (
    EnqueueExtensions,
    Handle,
    PermitPlugin,
    PreFilterPlugin,
    QueueingHintPlugin,
)
from scheduler.framework.status import SUCCESS, Status
from scheduler.model import Placement
from scheduler.state import ClusterEvent, ClusterState, JobInfo


def _gpus(count: int) -> str:
    return f"{count} GPU" if count == 1 else f"{count} GPUs"


__all__ = ["NAME", "Gang", "GangArgs", "new"]

NAME = "gang"

_CAPACITY_EVENTS = frozenset({ClusterEvent.RESOURCES_FREED, ClusterEvent.NODE_ADDED})


@dataclass(frozen=True)
class GangArgs:
    pass


def _of_type(gpu_type: str | None) -> str:
    return f" of type {gpu_type}" if gpu_type else ""


class Gang:
    name = NAME

    def pre_filter(self, cs: CycleState, info: JobInfo) -> Status:
        job = info.job
        if not job.gpus_per_task:
            return SUCCESS
        state = cs.state
        free = state.free_gpus(job.gpu_type)
        if free < job.gpus:
            total = state.total_gpus(job.gpu_type)
            if total < job.gpus:
                return Status.infeasible(
                    f"needs {_gpus(job.gpus)}{_of_type(job.gpu_type)}; the cluster has {total}", NAME)
            return Status.unschedulable(
                f"needs {_gpus(job.gpus)}{_of_type(job.gpu_type)}; {free} free in the cluster", NAME)
        largest = state.largest_node_gpus(job.gpu_type)
        if job.gpus_per_task > largest:
            return Status.infeasible(
                f"a task needs {_gpus(job.gpus_per_task)}{_of_type(job.gpu_type)}; "
                f"the largest node has {largest}", NAME)
        return SUCCESS

    def permit(self, cs: CycleState, info: JobInfo, placement: Placement) -> Status:
        job = info.job
        indices = sorted(t.task for t in placement.tasks)
        if indices != list(range(job.tasks)):
            raise AssertionError(f"{job.job_id}: partial gang {indices} of {job.tasks} tasks")
        seen: set[tuple[str, int]] = set()
        for task in placement.tasks:
            if len(task.gpus) != job.gpus_per_task:
                raise AssertionError(f"{job.job_id}: task {task.task} got GPUs {task.gpus}")
            for gpu in task.gpus:
                if (task.node, gpu) in seen:
                    raise AssertionError(f"{job.job_id}: GPU {gpu} of {task.node} given twice")
                seen.add((task.node, gpu))
        return SUCCESS

    def queueing_hint(self, state: ClusterState, info: JobInfo, events: set[ClusterEvent]) -> bool:
        """Freed or added GPUs help only once enough are free in total."""
        if events - _CAPACITY_EVENTS:
            return True
        job = info.job
        return not job.gpus_per_task or state.free_gpus(job.gpu_type) >= job.gpus

    def events_to_register(self) -> frozenset[ClusterEvent]:
        return frozenset({
            ClusterEvent.RESOURCES_FREED,  # enough GPUs may now be free in total
            ClusterEvent.NODE_ADDED,  # the cluster grew: an infeasible gang may now fit
        })


def new(args: Mapping[str, Any], handle: Handle) -> Gang:
    decode_args(GangArgs, args)
    return Gang()


_check_pre_filter: PreFilterPlugin = Gang()
_check_permit: PermitPlugin = Gang()
_check_events: EnqueueExtensions = Gang()
_check_hint: QueueingHintPlugin = Gang()
