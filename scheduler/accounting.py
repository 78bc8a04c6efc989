"""PURE: GPU-time accounting, Slurm's ``sacct`` / ``sreport`` for kvraft jobs.

Every run of a job ends in exactly one release txn (``binder.release``): it finished, failed,
was restarted, preempted, evicted by an operator, cancelled, or hit its deadline. That same
txn writes one record, so a run is counted once, even across a scheduler failover::

    /accounting/<YYYY-MM>/<tenant>/<job>@<binding revision>     (the month it ended, UTC)
    {"job", "tenant", "run": binding revision, "gpus", "nodes", "bound_at", "ended_at",
     "gpu_seconds": gpus x (ended_at - bound_at), "outcome"}

The records live outside ``/registry/`` (the scheduler's informer lists that whole prefix)
and outlive the jobs, which ``ttl_seconds_after_finished`` deletes. ``OUTCOMES`` maps each
way a run ends to what a report shows: the GPU time of ``completed`` runs is useful work;
``failed`` (a failure or a restart after one), ``preempted`` (preemption, an operator's
eviction or a suspension: the run resumes from its checkpoint, the time since is lost) and ``cancelled`` are
the GPU time that produced no finished job (Philly's lesson: failures cost a cluster much of
its GPU time, reference section 7, item 11). ``summarize`` adds records up per tenant (or per
job); the leader deletes months older than ``--accounting-retention-months`` in one range
delete (``retention_end``).

Example: bert ran 2 h on 16 GPUs, was preempted, ran 1 h more and succeeded: two records,
32 GPU-h ``preempted`` and 16 GPU-h ``completed``; the tenant's report shows 48 GPU-h, of
which 32 lost to preemption.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["OUTCOMES", "PREFIX", "is_record", "key", "month_of", "record", "retention_end", "summarize"]

PREFIX = "/accounting/"

OUTCOMES = {
    "succeeded": "completed",
    "failed": "failed", "restarted": "failed", "deadline": "failed", "invalid": "failed",
    "preempted": "preempted", "evicted": "preempted", "suspended": "preempted", "resized": "preempted",
    "cancelled": "cancelled",
}
"""How a release (``SchedulerDaemon._release``'s kind) counts in a report."""


def month_of(when_s: float) -> str:
    """``YYYY-MM`` of a unix time, in UTC."""
    return time.strftime("%Y-%m", time.gmtime(when_s))


def key(month: str, tenant: str, job: str, run: int) -> str:
    return f"{PREFIX}{month}/{tenant}/{job}@{run}"


def record(spec: Mapping[str, Any], job: str, run: int, rows: Iterable[Mapping[str, Any]], bound_at: float,
           kind: str, ended_at: float) -> dict[str, Any]:
    """The record of one run: ``rows`` are the binding's task rows (``gpus`` lists)."""
    rows = list(rows)
    gpus = sum(len(r.get("gpus") or ()) for r in rows)
    return {"job": job, "tenant": str(spec.get("tenant") or "default"), "run": run, "gpus": gpus,
            "nodes": sorted({str(r["node"]) for r in rows if "node" in r}), "bound_at": bound_at, "ended_at": ended_at,
            "gpu_seconds": gpus * max(0.0, ended_at - bound_at), "outcome": OUTCOMES.get(kind, "failed"), "kind": kind}


def is_record(doc: Any) -> bool:
    """Whether a value under ``PREFIX`` has what ``summarize`` reads (anyone with write access
    may put anything there)."""
    seconds = doc.get("gpu_seconds") if isinstance(doc, dict) else None
    return (isinstance(doc, dict) and isinstance(doc.get("job"), str) and isinstance(doc.get("tenant"), str)
            and _finite(seconds))


def _finite(value: Any) -> bool:
    """A number that sums as a float: not NaN or infinite, nor an int too large for a float."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def retention_end(now_s: float, months: int) -> str:
    """The first month kept when ``months`` months are kept (this one included): every key
    below ``PREFIX + retention_end(...)`` is older and may be deleted."""
    year, month = (int(p) for p in month_of(now_s).split("-"))
    index = year * 12 + (month - 1) - (months - 1)
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def summarize(records: Iterable[Mapping[str, Any]], by: str = "tenant") -> list[dict[str, Any]]:
    """Rows per ``by`` (``tenant`` or ``job``), sorted by GPU-hours, largest first: ``jobs``
    (distinct), ``runs``, ``gpu_hours`` and the hours of each outcome."""
    rows: dict[str, dict[str, Any]] = {}
    for r in records:
        name = str(r.get(by, ""))
        row = rows.setdefault(name, {by: name, "jobs": set(), "runs": 0, "gpu_hours": 0.0,
                                     **{f"{o}_gpu_hours": 0.0 for o in sorted(set(OUTCOMES.values()))}})
        hours = float(r.get("gpu_seconds") or 0.0) / 3600.0
        row["jobs"].add(r.get("job"))
        row["runs"] += 1
        row["gpu_hours"] += hours
        outcome = r.get("outcome") if r.get("outcome") in OUTCOMES.values() else "failed"
        row[f"{outcome}_gpu_hours"] += hours
    out = []
    for row in rows.values():
        row["jobs"] = len(row["jobs"])
        out.append(row)
    return sorted(out, key=lambda row: (-row["gpu_hours"], row[by]))
