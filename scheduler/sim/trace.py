"""Trace and cluster-shape CSV readers.

Job traces need the columns ``job_id, vc, submit_s, num_gpus, duration_s`` (the Philly
busiest-week file; other columns are ignored). Node shapes need ``sn, gpu, model`` and
optionally ``cpu_milli, memory_mib`` (the Alibaba openb node list).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

__all__ = ["NodeShape", "TraceJob", "read_nodes", "read_trace"]


@dataclass(frozen=True, slots=True)
class TraceJob:
    job_id: str
    vc: str
    submit_s: float
    gpus: int
    duration_s: float


@dataclass(frozen=True, slots=True)
class NodeShape:
    name: str
    gpus: int
    gpu_type: str
    cpu_milli: int
    memory_mib: int


def read_trace(path: str | Path, limit: int | None = None, time_scale: float = 1.0) -> list[TraceJob]:
    """Jobs sorted by submit time; ``time_scale`` multiplies submit times (<1 raises load)."""
    jobs: list[TraceJob] = []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"job_id", "vc", "submit_s", "num_gpus", "duration_s"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: missing columns {sorted(missing)}")
        for row in reader:
            jobs.append(TraceJob(
                row["job_id"], row["vc"], float(row["submit_s"]) * time_scale,
                int(row["num_gpus"]), float(row["duration_s"]),
            ))
    jobs.sort(key=lambda j: (j.submit_s, j.job_id))
    return jobs[:limit] if limit is not None else jobs


def read_nodes(path: str | Path) -> list[NodeShape]:
    shapes: list[NodeShape] = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            shapes.append(NodeShape(
                row["sn"], int(row["gpu"]), row.get("model") or "",
                int(row.get("cpu_milli") or 0), int(row.get("memory_mib") or 0),
            ))
    return shapes
