"""GpuType: a job that names a GPU type runs only on nodes of that type; a job's node
selector must match the node's labels. Infeasible when no usable node has the type."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from scheduler.framework.args import decode_args
from scheduler.framework.cycle_state import CycleState
from scheduler.framework.interfaces import EnqueueExtensions, FilterPlugin, Handle, PreFilterPlugin
from scheduler.framework.status import SUCCESS, Status
from scheduler.state import ClusterEvent, JobInfo, NodeInfo

__all__ = ["NAME", "GpuType", "GpuTypeArgs", "new"]

NAME = "gputype"

WRONG_TYPE = Status.unresolvable("wrong GPU type", NAME)
NO_MATCH = Status.unresolvable("node selector does not match", NAME)


@dataclass(frozen=True)
class GpuTypeArgs:
    pass


class GpuType:
    name = NAME

    def pre_filter(self, cs: CycleState, info: JobInfo) -> Status:
        wanted = info.job.gpu_type
        if wanted is None or not info.job.gpus_per_task:
            return SUCCESS
        if cs.state.total_gpus(wanted) == 0:
            known = ", ".join(sorted(k for k in cs.state.type_totals() if k)) or "none"
            return Status.infeasible(f"no usable node has GPU type {wanted} (types: {known})", NAME)
        return SUCCESS

    def filter(self, cs: CycleState, info: JobInfo, node: NodeInfo) -> Status:
        job = info.job
        if job.gpu_type is not None and job.gpus_per_task and node.node.gpu_type != job.gpu_type:
            return WRONG_TYPE
        for key, value in job.node_selector:
            if node.node.label(key) != value:
                return NO_MATCH
        return SUCCESS

    def events_to_register(self) -> frozenset[ClusterEvent]:
        return frozenset({
            ClusterEvent.NODE_ADDED,  # a node of the wanted type joined
            ClusterEvent.NODE_CHANGED,  # labels or type of a node changed
        })


def new(args: Mapping[str, Any], handle: Handle) -> GpuType:
    decode_args(GpuTypeArgs, args)
    return GpuType()


_check_pre_filter: PreFilterPlugin = GpuType()
_check_filter: FilterPlugin = GpuType()
_check_events: EnqueueExtensions = GpuType()
