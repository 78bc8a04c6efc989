"""PURE per-node and per-rack views of the cluster, and the free-GPU index.

``NodeInfo`` is what the cycle filters and scores (like Kubernetes' NodeInfo): free GPUs as a
bit mask, free CPU and memory, the gangs running there and the GPUs held for reservations.
``RackInfo`` aggregates usable nodes; ``FreeIndex`` buckets usable nodes by free GPUs. Only
``ClusterState`` (state.py) mutates them.
"""

from __future__ import annotations

from collections.abc import Iterator

from scheduler.model import Node

__all__ = ["FreeIndex", "NodeInfo", "RackInfo"]


class NodeInfo:
    """Mutable per-node view: what is free, who runs here, what is held for reservations."""

    __slots__ = (
        "node",
        "full_mask",
        "free_mask",
        "free_gpus",
        "free_cpu",
        "free_mem",
        "jobs",
        "holds",
        "held_gpus",
        "rack",
        "indexed",
        "island_masks",
    )

    def __init__(self, node: Node, rack: RackInfo) -> None:
        self.node = node
        self.full_mask = (1 << node.gpus) - 1
        self.free_mask = self.full_mask
        self.free_gpus = node.gpus
        self.free_cpu = node.cpu_milli
        self.free_mem = node.memory_mib
        self.jobs: dict[str, int] = {}  # job id -> GPUs it holds here
        self.holds: dict[str, int] = {}  # reservation owner -> GPUs held here
        self.held_gpus = 0
        self.rack = rack
        self.indexed = False
        self.island_masks = node.island_masks()

    @property
    def name(self) -> str:
        return self.node.name

    def copy(self) -> NodeInfo:
        """A detached copy for what-if checks (preemption); shares the node and rack."""
        other = NodeInfo.__new__(NodeInfo)
        other.node = self.node
        other.full_mask = self.full_mask
        other.free_mask = self.free_mask
        other.free_gpus = self.free_gpus
        other.free_cpu = self.free_cpu
        other.free_mem = self.free_mem
        other.jobs = dict(self.jobs)
        other.holds = dict(self.holds)
        other.held_gpus = self.held_gpus
        other.rack = self.rack
        other.indexed = False
        other.island_masks = self.island_masks
        return other

    @property
    def usable(self) -> bool:
        return self.node.healthy and self.node.schedulable


class RackInfo:
    """Per-rack aggregates over usable nodes: GPU capacity, free GPUs, free-count histogram."""

    __slots__ = ("name", "spine", "nodes", "capacity_gpus", "free_gpus", "hist", "max_node_gpus", "capacity_by_type")

    def __init__(self, name: str, spine: str) -> None:
        self.name = name
        self.spine = spine
        self.nodes: dict[str, NodeInfo] = {}
        self.capacity_gpus = 0
        self.free_gpus = 0
        self.hist: dict[str, list[int]] = {}  # gpu type -> count of usable nodes by free GPUs
        self.max_node_gpus = 0
        self.capacity_by_type: dict[str, int] = {}

    def total_gpus(self, gpu_type: str | None) -> int:
        """GPUs of usable nodes (of ``gpu_type``), free or not."""
        if gpu_type is None:
            return self.capacity_gpus
        return self.capacity_by_type.get(gpu_type, 0)

    def task_capacity(self, gpus_per_task: int, gpu_type: str | None) -> int:
        """Upper bound on tasks of ``gpus_per_task`` GPUs that fit (ignores CPU, memory, holds)."""
        total = 0
        for kind, hist in self.hist.items():
            if gpu_type is not None and kind != gpu_type:
                continue
            if gpus_per_task == 0:
                total += sum(hist) * 1_000_000
                continue
            for free in range(gpus_per_task, len(hist)):
                count = hist[free]
                if count:
                    total += count * (free // gpus_per_task)
        return total

    def largest_free_node(self, gpu_type: str | None) -> int:
        best = 0
        for kind, hist in self.hist.items():
            if gpu_type is not None and kind != gpu_type:
                continue
            for free in range(len(hist) - 1, best, -1):
                if hist[free]:
                    best = free
                    break
        return best


class FreeIndex:
    """Usable nodes bucketed by (GPU type, free GPUs); iteration is tightest-first."""

    __slots__ = ("buckets",)

    def __init__(self) -> None:
        self.buckets: dict[str, list[dict[str, NodeInfo]]] = {}

    def add(self, info: NodeInfo) -> None:
        kind = info.node.gpu_type
        buckets = self.buckets.setdefault(kind, [])
        while len(buckets) <= info.node.gpus:
            buckets.append({})
        buckets[info.free_gpus][info.name] = info

    def remove(self, info: NodeInfo) -> None:
        del self.buckets[info.node.gpu_type][info.free_gpus][info.name]

    def max_free(self, gpu_type: str | None) -> int:
        """The most free GPUs on any usable node (of ``gpu_type``)."""
        best = 0
        for kind, buckets in self.buckets.items():
            if gpu_type is not None and kind != gpu_type:
                continue
            for free in range(len(buckets) - 1, best, -1):
                if buckets[free]:
                    best = free
                    break
        return best

    def candidates(self, min_free: int, gpu_type: str | None) -> Iterator[NodeInfo]:
        """Usable nodes with at least ``min_free`` free GPUs, fewest free first.

        Do not allocate or release while iterating."""
        kinds = (
            [self.buckets[gpu_type]] if gpu_type is not None and gpu_type in self.buckets
            else [] if gpu_type is not None
            else list(self.buckets.values())
        )
        top = max((len(b) for b in kinds), default=0)
        for free in range(min_free, top):
            for buckets in kinds:
                if free < len(buckets) and buckets[free]:
                    yield from buckets[free].values()
