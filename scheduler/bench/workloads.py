"""Benchmark workloads: YAML files in ``workloads/`` (Kubernetes scheduler_perf style).

Fields: ``name``; cluster ``nodes``, ``gpus_per_node``, ``nodes_per_rack``; ``fill``, the
fraction of GPUs busy with background one-GPU jobs before measuring; ``job``, the shape of the
measured jobs (``tasks`` drawn from the list, ``gpus_per_task``); ``batch``, jobs submitted
before each pass; ``passes``, measured passes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

__all__ = ["WORKLOAD_DIR", "Workload", "load", "load_all"]

WORKLOAD_DIR = Path(__file__).parent / "workloads"


@dataclass(frozen=True)
class Workload:
    name: str
    nodes: int
    gpus_per_node: int
    nodes_per_rack: int
    fill: float
    tasks: tuple[int, ...]
    gpus_per_task: int
    batch: int
    passes: int

    def scaled(self, nodes: int | None = None, passes: int | None = None) -> Workload:
        from dataclasses import replace

        return replace(self, nodes=nodes or self.nodes, passes=passes or self.passes)


def load(path: str | Path) -> Workload:
    raw = yaml.safe_load(Path(path).read_text())
    known = {"name", "nodes", "gpus_per_node", "nodes_per_rack", "fill", "job", "batch", "passes"}
    unknown = set(raw) - known
    if unknown:
        raise ValueError(f"{path}: unknown fields {sorted(unknown)}")
    missing = known - set(raw) or {"job.tasks", "job.gpus_per_task"} - {f"job.{k}" for k in raw["job"] or ()}
    if missing:
        raise ValueError(f"{path}: missing fields {sorted(missing)}")
    job = raw["job"]
    workload = Workload(
        name=str(raw["name"]), nodes=int(raw["nodes"]), gpus_per_node=int(raw["gpus_per_node"]),
        nodes_per_rack=int(raw["nodes_per_rack"]), fill=float(raw["fill"]),
        tasks=tuple(int(t) for t in job["tasks"]), gpus_per_task=int(job["gpus_per_task"]),
        batch=int(raw["batch"]), passes=int(raw["passes"]),
    )
    if not 0 <= workload.fill < 1 or workload.batch < 1 or workload.passes < 1:
        raise ValueError(f"{path}: fill must be in [0, 1), batch and passes >= 1")
    if min(workload.nodes, workload.gpus_per_node, workload.nodes_per_rack, workload.gpus_per_task,
           *workload.tasks, 1) < 1 or not workload.tasks:
        raise ValueError(f"{path}: nodes, gpus_per_node, nodes_per_rack, job.tasks (not empty) "
                         "and job.gpus_per_task must be >= 1")
    return workload


def load_all(names: list[str] | None = None) -> list[Workload]:
    found = {p.stem: p for p in sorted(WORKLOAD_DIR.glob("*.yaml"))}
    if not names:
        return [load(p) for p in found.values()]
    out = []
    for name in names:
        path = found.get(name) or Path(name)
        if not path.exists():
            raise ValueError(f"unknown workload {name!r}; known: {sorted(found)}")
        out.append(load(path))
    return out
