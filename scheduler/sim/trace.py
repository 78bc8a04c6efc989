"""Trace and cluster-shape CSV readers.

Job traces need the columns ``job_id, vc, submit_s, num_gpus, duration_s`` (the Philly
busiest-week file; other columns are ignored). Node shapes need ``sn, gpu, model`` and
optionally ``cpu_milli, memory_mib`` (the Alibaba openb node list).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["NodeShape", "TraceError", "TraceJob", "read_nodes", "read_trace"]


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


class TraceError(ValueError):
    """A trace or node CSV that cannot be replayed; the message names the file and line."""


def _number(path: str | Path, line: int, row: dict[str, str | None], column: str, kind: type[float] | type[int]) -> float:
    text = row.get(column)
    if text is None:
        raise TraceError(f"{path}:{line}: the row has no {column} (too few fields)")
    try:
        value = kind(text)
    except ValueError:
        raise TraceError(f"{path}:{line}: {column} {text!r} is not {'an integer' if kind is int else 'a number'}") from None
    if not math.isfinite(value) or value < 0:
        raise TraceError(f"{path}:{line}: {column} {text!r} must be a finite number >= 0")
    return value


def _rows(path: str | Path, f: Iterable[str], needed: set[str]) -> Iterator[tuple[int, dict[str, str | None]]]:
    reader = csv.DictReader(f)
    missing = needed - set(reader.fieldnames or ())
    if missing:
        raise TraceError(f"{path}: missing columns {sorted(missing)}")
    for row in reader:
        yield reader.line_num, row


def read_trace(path: str | Path, limit: int | None = None, time_scale: float = 1.0) -> list[TraceJob]:
    """Jobs sorted by submit time; ``time_scale`` multiplies submit times (<1 raises load).

    Raises ``TraceError`` (naming the line) for a missing column, a short row, a value that is
    not a finite number >= 0 and a job id seen twice (the replay keys its records by id)."""
    jobs: list[TraceJob] = []
    seen: dict[str, int] = {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        for line, row in _rows(path, f, {"job_id", "vc", "submit_s", "num_gpus", "duration_s"}):
            job_id = row["job_id"] or ""
            if job_id in seen:
                raise TraceError(f"{path}:{line}: job_id {job_id!r} already on line {seen[job_id]}")
            seen[job_id] = line
            jobs.append(TraceJob(
                job_id, row["vc"] or "", _number(path, line, row, "submit_s", float) * time_scale,
                int(_number(path, line, row, "num_gpus", int)), _number(path, line, row, "duration_s", float),
            ))
    jobs.sort(key=lambda j: (j.submit_s, j.job_id))
    return jobs[:limit] if limit is not None else jobs


def read_nodes(path: str | Path) -> list[NodeShape]:
    """Node shapes; ``TraceError`` (naming the line) as ``read_trace``, for a name seen twice too."""
    shapes: list[NodeShape] = []
    seen: dict[str, int] = {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        for line, row in _rows(path, f, {"sn", "gpu"}):
            name = row["sn"] or ""
            if name in seen:
                raise TraceError(f"{path}:{line}: node {name!r} already on line {seen[name]}")
            seen[name] = line
            shapes.append(NodeShape(
                name, int(_number(path, line, row, "gpu", int)), row.get("model") or "",
                int(_number(path, line, row, "cpu_milli", int)) if row.get("cpu_milli") else 0,
                int(_number(path, line, row, "memory_mib", int)) if row.get("memory_mib") else 0,
            ))
    return shapes
