"""Topology: keep gangs inside the tightest domain, and pack to keep big domains whole.

PreFilter turns the job's requirement (or this plugin's defaults, for jobs without one) into
the levels the placement tries, tightest first, and rejects with a precise reason when even
the best domain of the widest allowed level is too small::

    required node : "needs 8 GPUs in one node; the largest free node has 6"
    required rack : "needs 16 GPUs in one rack; the largest free rack has 12"

ScoreDomain (least fragmentation, best fit): the rack or spine that would have the fewest
GPUs left after taking the gang scores highest, so emptier racks stay free for big gangs.
Score: ``node_weight`` x node best fit (fewest GPUs left on the node) + the rest x rack
packing (fewest GPUs left in the node's rack).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from scheduler.framework.args import decode_args
from scheduler.framework.cycle_state import CycleState
from scheduler.framework.interfaces import (
    MAX_SCORE,
    Domain,
    EnqueueExtensions,
    FilterPlugin,
    Handle,
    PreFilterPlugin,
    QueueingHintPlugin,
    ScoreDomainPlugin,
    ScorePlugin,
)
from scheduler.framework.status import SUCCESS, Status
from scheduler.model import Level, Mode, Topology
from scheduler.state import ClusterEvent, ClusterState, JobInfo, NodeInfo


def _gpus(count: int) -> str:
    return f"{count} GPU" if count == 1 else f"{count} GPUs"


__all__ = ["NAME", "TopologyArgs", "TopologyPlugin", "new"]

NAME = "topology"

_LEVELS = {"island": Level.ISLAND, "node": Level.NODE, "rack": Level.RACK,
           "spine": Level.SPINE, "cluster": Level.CLUSTER}
_WHERE = {Level.ISLAND: "one NVLink island", Level.NODE: "one node", Level.RACK: "one rack",
          Level.SPINE: "one spine", Level.CLUSTER: "the cluster"}
_CAPACITY_EVENTS = frozenset({ClusterEvent.RESOURCES_FREED, ClusterEvent.NODE_ADDED})
_WIDER = (Level.NODE, Level.RACK, Level.SPINE, Level.CLUSTER)
_NOUN = {Level.RACK: "rack", Level.SPINE: "spine"}
NO_ISLAND = Status.unschedulable("no NVLink island with enough free GPUs", NAME)


@dataclass(frozen=True)
class TopologyArgs:
    small_level: str = "node"  # default for gangs that fit in one node
    large_level: str = "rack"  # default for larger gangs
    mode: str = "required"
    fewest_nodes: bool = False
    node_weight: float = 0.5


class TopologyPlugin:
    name = NAME
    writes_levels = True  # must be the first PreFilter (the framework checks)

    def __init__(self, args: TopologyArgs) -> None:
        for level in (args.small_level, args.large_level):
            if level not in _LEVELS:
                raise ValueError(f"topology: unknown level {level!r}; use one of {sorted(_LEVELS)}")
        if args.mode not in ("required", "preferred"):
            raise ValueError(f"topology: mode must be required or preferred, not {args.mode!r}")
        if not 0.0 <= args.node_weight <= 1.0:
            raise ValueError("topology: node_weight must be in [0, 1]")
        mode = Mode(args.mode)
        self.small = Topology(_LEVELS[args.small_level], mode, args.fewest_nodes)
        self.large = Topology(_LEVELS[args.large_level], mode, args.fewest_nodes)
        self.node_weight = args.node_weight

    def requirement(self, info: JobInfo, fits_node: bool) -> Topology:
        return info.job.topology or (self.small if fits_node else self.large)

    # --- PreFilter --------------------------------------------------------------------------

    def pre_filter(self, cs: CycleState, info: JobInfo) -> Status:
        job = info.job
        if not job.gpus_per_task:
            return SUCCESS
        state = cs.state
        largest = state.largest_node_gpus(job.gpu_type)
        fits_node = job.gpus <= largest
        req = self.requirement(info, fits_node)
        start = Level.NODE if fits_node else Level.RACK
        required = req.mode is Mode.REQUIRED
        if required and req.level == Level.ISLAND:
            island = state.largest_island_gpus(job.gpu_type)
            if job.gpus > island:
                return Status.infeasible(
                    f"needs {_gpus(job.gpus)} in {_WHERE[req.level]}; the largest island has {island}", NAME)
            cs.levels = (Level.ISLAND,)
        elif required and req.level < start:
            return Status.infeasible(
                f"needs {_gpus(job.gpus)} in {_WHERE[req.level]}; the largest node has {largest}", NAME)
        else:
            top = req.level if required else Level.CLUSTER
            cs.levels = tuple(lv for lv in _WIDER if start <= lv <= top)
        cs.fewest_nodes = req.fewest_nodes
        if required:
            return self._upper_bound(state, info, req.level)
        return SUCCESS

    def queueing_hint(self, state: ClusterState, info: JobInfo, events: set[ClusterEvent]) -> bool:
        """Freed GPUs help a required-level gang only once some domain has room for it."""
        if events - _CAPACITY_EVENTS or not info.job.gpus_per_task:
            return True
        job = info.job
        req = self.requirement(info, job.gpus <= state.largest_node_gpus(job.gpu_type))
        return req.mode is not Mode.REQUIRED or self._upper_bound(state, info, req.level).ok

    def _upper_bound(self, state: ClusterState, info: JobInfo, level: Level) -> Status:
        job = info.job
        per_task, kind = job.gpus_per_task, job.gpu_type
        if level <= Level.NODE:
            best = state.index.max_free(kind)
            if best >= job.gpus:
                return SUCCESS
            return Status.unschedulable(
                f"needs {_gpus(job.gpus)} in {_WHERE[level]}; the largest free node has {best}", NAME)
        if level == Level.CLUSTER:
            return SUCCESS
        groups: dict[str, list[Any]] = {}
        for rack in state.racks.values():
            groups.setdefault(rack.name if level == Level.RACK else rack.spine, []).append(rack)
        best_tasks = 0
        best_total = 0
        for racks in groups.values():
            tasks = sum(r.task_capacity(per_task, kind) for r in racks)
            if tasks >= job.tasks:
                return SUCCESS
            best_tasks = max(best_tasks, tasks)
            best_total = max(best_total, sum(r.total_gpus(kind) for r in racks))
        name = _WHERE[level]
        if best_total < job.gpus:
            return Status.infeasible(
                f"needs {_gpus(job.gpus)} in {name}; the largest has {best_total}", NAME)
        return Status.unschedulable(
            f"needs {_gpus(job.gpus)} in {name}; the largest free {_NOUN[level]} has {best_tasks * per_task}",
            NAME)

    # --- Filter (island requirement only) ---------------------------------------------------

    def filter(self, cs: CycleState, info: JobInfo, node: NodeInfo) -> Status:
        if cs.levels[-1] != Level.ISLAND:
            return SUCCESS
        need = info.job.gpus
        for island in node.island_masks:
            if (node.free_mask & island).bit_count() >= need:
                return SUCCESS
        return NO_ISLAND

    # --- scores -----------------------------------------------------------------------------

    def score_domain(self, cs: CycleState, info: JobInfo, domain: Domain, tasks_fit: int) -> int:
        capacity = domain.capacity_gpus
        if not capacity:
            return 0
        left = (tasks_fit - info.job.tasks) * info.job.gpus_per_task
        return round(MAX_SCORE * (1.0 - min(1.0, left / capacity)))

    def score(self, cs: CycleState, info: JobInfo, node: NodeInfo, tasks_here: int) -> int:
        need = tasks_here * info.job.gpus_per_task
        size = node.node.gpus
        if not size or not need:
            return 0
        node_left = max(0, node.free_gpus - need) / size
        rack = node.rack
        rack_left = max(0, rack.free_gpus - need) / rack.capacity_gpus if rack.capacity_gpus else 1.0
        w = self.node_weight
        return round(MAX_SCORE * (w * (1.0 - node_left) + (1.0 - w) * (1.0 - rack_left)))

    def events_to_register(self) -> frozenset[ClusterEvent]:
        return frozenset({
            ClusterEvent.RESOURCES_FREED,  # a node or rack may now have room for the gang
            ClusterEvent.NODE_ADDED,  # a new node may complete a rack
        })


def new(args: Mapping[str, Any], handle: Handle) -> TopologyPlugin:
    return TopologyPlugin(decode_args(TopologyArgs, args))


_check_pre_filter: PreFilterPlugin = TopologyPlugin(TopologyArgs())
_check_filter: FilterPlugin = TopologyPlugin(TopologyArgs())
_check_score: ScorePlugin = TopologyPlugin(TopologyArgs())
_check_score_domain: ScoreDomainPlugin = TopologyPlugin(TopologyArgs())
_check_events: EnqueueExtensions = TopologyPlugin(TopologyArgs())
_check_hint: QueueingHintPlugin = TopologyPlugin(TopologyArgs())
