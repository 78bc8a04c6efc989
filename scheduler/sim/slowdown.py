"""The placement slowdown model of the reference (section 4.3), per job, seeded.

Every multi-GPU job draws a sensitivity class once: compute-bound (40 %), medium (40 %) or
communication-heavy (20 %). Its run time is its trace duration (the ideal, consolidated run
time) times the factor of the widest level its placement spans:

============== ======== ========== ==========
class          one node one rack   cross-rack
============== ======== ========== ==========
compute-bound  1.0      1.05       1.10
medium         1.0      1.3        1.5
comm-heavy     1.0      2.0        3.0
============== ======== ========== ==========

Inside one node, a job split over several NVLink islands (nodes with ``islands``) pays the
intra-node factor (1.0 / 1.1 / 1.3). ``cross_rack_scale`` stretches the cross-rack penalty
(factor = 1 + scale x (table - 1)) for the sweep the reference asks for, since no public
measurement exists for it. Single-GPU jobs never slow down.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from scheduler.model import Node, Placement

__all__ = ["CLASSES", "SensitivityClass", "SlowdownModel"]


@dataclass(frozen=True, slots=True)
class SensitivityClass:
    name: str
    share: float
    split_node: float
    same_rack: float
    cross_rack: float


CLASSES = (
    SensitivityClass("compute-bound", 0.4, 1.0, 1.05, 1.10),
    SensitivityClass("medium", 0.4, 1.1, 1.3, 1.5),
    SensitivityClass("comm-heavy", 0.2, 1.3, 2.0, 3.0),
)


class SlowdownModel:
    def __init__(self, nodes: list[Node], seed: int, cross_rack_scale: float = 1.0, enabled: bool = True) -> None:
        self.rng = random.Random(f"slowdown-{seed}")
        self.rack = {n.name: n.rack for n in nodes}
        self.islands = {n.name: n.island_masks() for n in nodes}
        self.scale = cross_rack_scale
        self.enabled = enabled
        self.classes: dict[str, SensitivityClass] = {}

    def assign(self, job_id: str, gpus: int) -> SensitivityClass | None:
        """Draw the class of a job (call once per job, in trace order, for reproducibility)."""
        if gpus <= 1:
            return None
        draw = self.rng.random()
        acc = 0.0
        chosen = CLASSES[-1]
        for cls in CLASSES:
            acc += cls.share
            if draw < acc:
                chosen = cls
                break
        self.classes[job_id] = chosen
        return chosen

    def factor(self, job_id: str, placement: Placement) -> float:
        cls = self.classes.get(job_id)
        if cls is None or not self.enabled:
            return 1.0
        by_node = placement.gpus_by_node()
        if len(by_node) == 1:
            (name, gpus), = by_node.items()
            touched = sum(1 for m in self.islands[name] if any(m >> g & 1 for g in gpus))
            return cls.split_node if touched > 1 else 1.0
        racks = {self.rack[n] for n in by_node}
        if len(racks) == 1:
            return cls.same_rack
        return 1.0 + self.scale * (cls.cross_rack - 1.0)

    @staticmethod
    def level(placement: Placement, rack_of: dict[str, str]) -> str:
        nodes = placement.nodes()
        if len(nodes) == 1:
            return "node"
        return "rack" if len({rack_of[n] for n in nodes}) == 1 else "cross-rack"
