"""How well the run-time estimates of a replay predicted the true durations, by job class.

``python -m scheduler.sim ... --records R.csv`` writes each job's estimate (``est_s``, the one it
was submitted with) beside its trace duration; this module's command reads such files::

    python -m scheduler.sim.accuracy R.csv [more.csv ...] [--json]

and prints, per policy, seed and class (one-GPU jobs, 2-8-GPU jobs, larger gangs, and the
multi-GPU jobs longer than 10 h), the number of jobs with an estimate, Spearman's rank
correlation of estimate and duration (what ordering by the estimate can get right), the
median of |log2(estimate / duration)| (1.0 = off by a factor of 2 for the median job), and the
share within a factor of 2. Jobs submitted without an estimate are left out.

Which classes matter: ``--estimates oracle-gangs`` and ``oracle-single`` give the true
duration to one class only (docs/benchmarks.md, Scheduler session 26).
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from statistics import median

from scheduler.sim.seeds import json_line

__all__ = ["CLASSES", "accuracy", "main", "spearman"]

LONG_S = 10 * 3600.0

CLASSES: tuple[tuple[str, Callable[[int, float], bool]], ...] = (
    ("1 GPU", lambda gpus, dur: gpus <= 1),
    ("2-8 GPUs", lambda gpus, dur: 2 <= gpus <= 8),
    (">8 GPUs", lambda gpus, dur: gpus > 8),
    (">1 GPU, >10 h", lambda gpus, dur: gpus > 1 and dur > LONG_S),
)


def _ranks(values: Sequence[float]) -> list[float]:
    """Ranks from 1, ties sharing their average rank."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Spearman's rank correlation; NaN for fewer than 2 pairs or a constant side."""
    if len(xs) != len(ys):
        raise ValueError("spearman: sequences of different lengths")
    if len(xs) < 2:
        return math.nan
    rx, ry = _ranks(xs), _ranks(ys)
    mean = (len(xs) + 1) / 2
    cov = sum((a - mean) * (b - mean) for a, b in zip(rx, ry, strict=True))
    vx = sum((a - mean) ** 2 for a in rx)
    vy = sum((b - mean) ** 2 for b in ry)
    return cov / math.sqrt(vx * vy) if vx and vy else math.nan


def accuracy(pairs: Iterable[tuple[int, float, float]]) -> list[dict[str, object]]:
    """(gpus, estimate_s, duration_s) triples -> one row per class with any jobs."""
    by_class: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for gpus, est, dur in pairs:
        for name, member in CLASSES:
            if member(gpus, dur):
                by_class[name].append((est, dur))
    out: list[dict[str, object]] = []
    for name, _ in CLASSES:
        rows = by_class.get(name)
        if not rows:
            continue
        # a second is the trace's resolution: a 0 s job or estimate counts as 1 s
        errs = [abs(math.log2(max(e, 1.0) / max(d, 1.0))) for e, d in rows]
        out.append({
            "class": name, "jobs": len(rows),
            "spearman": spearman([e for e, _ in rows], [d for _, d in rows]),
            "median_abs_log2": median(errs),
            "within_2x": sum(1 for x in errs if x <= 1.0) / len(errs),
        })
    return out


def _read(paths: Sequence[str]) -> dict[tuple[str, str], list[tuple[int, float, float]]]:
    groups: dict[tuple[str, str], list[tuple[int, float, float]]] = defaultdict(list)
    for path in paths:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            missing = {"policy", "gpus", "duration_s", "est_s"} - set(reader.fieldnames or ())
            if missing:
                raise ValueError(f"{path}: not a --records file (no column {', '.join(sorted(missing))})")
            for n, row in enumerate(reader, start=2):
                if not row["est_s"]:
                    continue
                try:
                    triple = (int(row["gpus"]), float(row["est_s"]), float(row["duration_s"]))
                except ValueError:
                    raise ValueError(f"{path}:{n}: gpus, est_s and duration_s must be numbers") from None
                groups[(row["policy"], row.get("seed") or "")].append(triple)
    return groups


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scheduler.sim.accuracy",
                                description="accuracy of a replay's run-time estimates, by job class")
    p.add_argument("records", nargs="+", help="CSV files written by python -m scheduler.sim --records")
    p.add_argument("--json", action="store_true", help="one JSON object per policy, seed and class")
    opts = p.parse_args(argv)
    try:
        groups = _read(opts.records)
    except (OSError, ValueError) as e:
        print(f"python -m scheduler.sim.accuracy: {e}", file=sys.stderr)
        return 2
    if not groups:
        print("python -m scheduler.sim.accuracy: no job in these records has an estimate (--estimates none?)",
              file=sys.stderr)
        return 2
    if not opts.json:
        print(f"{'policy':<12} {'seed':>4} {'class':<14} {'jobs':>5} {'spearman':>8} {'|log2|':>7} {'<=2x':>6}")
    for (policy, seed), triples in sorted(groups.items()):
        for row in accuracy(triples):
            if opts.json:
                print(json_line({"policy": policy, "seed": seed, **row}))
            else:
                print(f"{policy:<12} {seed:>4} {row['class']:<14} {row['jobs']:>5} {row['spearman']:>8.3f} "
                      f"{row['median_abs_log2']:>7.2f} {row['within_2x']:>6.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
