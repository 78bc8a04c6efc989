"""ResourceFit: does a task fit on the node (health, GPUs, CPU, memory), how many tasks fit,
and (optionally) a Kubernetes-style allocation score.

``scoring``: ``least_allocated`` prefers the emptiest node after placing (spreads, the
kube-scheduler default), ``most_allocated`` the fullest (packs), ``none`` gives no score.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from scheduler.framework.args import decode_args
from scheduler.framework.cycle_state import CycleState
from scheduler.framework.interfaces import (
    MAX_SCORE,
    CapacityPlugin,
    EnqueueExtensions,
    FilterPlugin,
    Handle,
    ScorePlugin,
)
from scheduler.framework.status import SUCCESS, Status
from scheduler.state import ClusterEvent, JobInfo, NodeInfo

__all__ = ["NAME", "ResourceFit", "ResourcesArgs", "new"]

NAME = "resources"
_MANY = 1 << 20

UNHEALTHY = Status.unresolvable("node unhealthy", NAME)
CORDONED = Status.unresolvable("node cordoned", NAME)
NO_GPUS = Status.unschedulable("insufficient free GPUs", NAME)
NO_CPU = Status.unschedulable("insufficient free CPU", NAME)
NO_MEMORY = Status.unschedulable("insufficient free memory", NAME)


@dataclass(frozen=True)
class ResourcesArgs:
    scoring: str = "least_allocated"


class ResourceFit:
    name = NAME

    def __init__(self, args: ResourcesArgs) -> None:
        if args.scoring not in ("least_allocated", "most_allocated", "none"):
            raise ValueError(f"resources: unknown scoring {args.scoring!r}")
        self.scoring = args.scoring

    def filter(self, cs: CycleState, info: JobInfo, node: NodeInfo) -> Status:
        spec = node.node
        if not spec.healthy:
            return UNHEALTHY
        if not spec.schedulable:
            return CORDONED
        job = info.job
        if node.free_gpus < job.gpus_per_task:
            return NO_GPUS
        if node.free_cpu < job.cpu_milli_per_task:
            return NO_CPU
        if node.free_mem < job.memory_mib_per_task:
            return NO_MEMORY
        return SUCCESS

    def capacity(self, cs: CycleState, info: JobInfo, node: NodeInfo) -> int:
        job = info.job
        cap = node.free_gpus // job.gpus_per_task if job.gpus_per_task else _MANY
        if job.cpu_milli_per_task:
            cap = min(cap, node.free_cpu // job.cpu_milli_per_task)
        if job.memory_mib_per_task:
            cap = min(cap, node.free_mem // job.memory_mib_per_task)
        return cap

    def score(self, cs: CycleState, info: JobInfo, node: NodeInfo, tasks_here: int) -> int:
        if self.scoring == "none":
            return 0
        job = info.job
        shares: list[float] = []
        if job.gpus_per_task and node.node.gpus:
            shares.append((node.free_gpus - tasks_here * job.gpus_per_task) / node.node.gpus)
        if job.cpu_milli_per_task and node.node.cpu_milli:
            shares.append((node.free_cpu - tasks_here * job.cpu_milli_per_task) / node.node.cpu_milli)
        if job.memory_mib_per_task and node.node.memory_mib:
            shares.append((node.free_mem - tasks_here * job.memory_mib_per_task) / node.node.memory_mib)
        if not shares:
            return 0
        free_share = max(0.0, sum(shares) / len(shares))
        if self.scoring == "most_allocated":
            free_share = 1.0 - free_share
        return round(MAX_SCORE * free_share)

    def events_to_register(self) -> frozenset[ClusterEvent]:
        return frozenset({
            ClusterEvent.RESOURCES_FREED,  # a gang ended: its GPUs, CPU and memory are free
            ClusterEvent.NODE_ADDED,  # a new, grown, healed or uncordoned node has room
        })


def new(args: Mapping[str, Any], handle: Handle) -> ResourceFit:
    return ResourceFit(decode_args(ResourcesArgs, args))


_check_filter: FilterPlugin = ResourceFit(ResourcesArgs())
_check_capacity: CapacityPlugin = ResourceFit(ResourcesArgs())
_check_score: ScorePlugin = ResourceFit(ResourcesArgs())
_check_events: EnqueueExtensions = ResourceFit(ResourcesArgs())
