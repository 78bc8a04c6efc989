"""Simulated cluster specs: uniform (N nodes x G GPUs in R racks) or node shapes from a CSV.

Racks are contiguous blocks of nodes; spines group ``racks_per_spine`` racks. From a CSV,
``sample`` GPU nodes are drawn with the seed (all GPU nodes when None), sorted by GPU type so
that racks are mostly homogeneous, as real racks are.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from scheduler.model import Node
from scheduler.sim.trace import NodeShape

__all__ = ["ClusterSpec", "build_nodes"]


@dataclass(frozen=True)
class ClusterSpec:
    nodes: int = 48
    gpus_per_node: int = 8
    racks: int = 6
    racks_per_spine: int = 0  # 0: one spine
    shapes: tuple[NodeShape, ...] = ()  # from a node CSV; overrides nodes x gpus_per_node

    def describe(self) -> str:
        """The cluster as ``build_nodes`` builds it (never more racks than nodes)."""
        if self.shapes:
            gpus = sum(s.gpus for s in self.shapes)
            return f"{len(self.shapes)} CSV nodes ({gpus} GPUs) in {min(self.racks, len(self.shapes))} racks"
        return f"{self.nodes}x{self.gpus_per_node} GPUs in {min(self.racks, self.nodes)} racks"


def sample_shapes(shapes: list[NodeShape], count: int | None, seed: int) -> tuple[NodeShape, ...]:
    gpu_nodes = [s for s in shapes if s.gpus > 0]
    if count is not None and count < len(gpu_nodes):
        gpu_nodes = random.Random(seed).sample(gpu_nodes, count)
    return tuple(sorted(gpu_nodes, key=lambda s: (s.gpu_type, -s.gpus, s.name)))


def build_nodes(spec: ClusterSpec) -> list[Node]:
    if spec.shapes:
        shapes = list(spec.shapes)
    else:
        shapes = [NodeShape(f"node-{i:04d}", spec.gpus_per_node, "", 0, 0) for i in range(spec.nodes)]
    racks = max(1, min(spec.racks, len(shapes)))
    per_rack = -(-len(shapes) // racks)
    nodes: list[Node] = []
    for i, shape in enumerate(shapes):
        rack = i // per_rack
        spine = rack // spec.racks_per_spine if spec.racks_per_spine else 0
        nodes.append(Node(
            name=shape.name, gpus=shape.gpus, gpu_type=shape.gpu_type,
            cpu_milli=shape.cpu_milli, memory_mib=shape.memory_mib,
            rack=f"rack-{rack:02d}", spine=f"spine-{spine}",
        ))
    return nodes
