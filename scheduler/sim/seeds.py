"""Replays over several seeds, and each policy's spread across them.

``python -m scheduler.sim --seed 0-7 ...`` runs and summarises in one go; this module's own
command pools the JSON lines of several such runs (say, a policy run with ``--set`` apart from
the baselines) and prints the same summary::

    python -m scheduler.sim.seeds base.jsonl remaining.jsonl [--json]

A seed draws the slowdown classes, the GPU-type constraints, the sampled node shapes and the
score tie-breaks, so one seed is one draw of the benchmark. The targets of the reference
(section 6.6) compare policies on the same seed; ``summarize_seeds`` therefore takes each
ratio against the baselines *of the same seed* before it averages, and counts the seeds on
which a target holds, so that a policy that meets a target on seed 0 alone is seen as such.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping, Sequence
from statistics import fmean

__all__ = [
    "JCT_TARGET", "PREEMPTION_CAP", "SPREAD_METRICS", "format_summaries", "json_line", "main", "parse_seeds",
    "is_baseline", "read_runs", "seed_text", "summarize_seeds", "variant",
]

# avg JCT <= 0.9 x the better of B3 and B4; at most 0.5 preemptions per job (the
# reference's section 6.6, issue 8)
JCT_TARGET = 0.9
PREEMPTION_CAP = 0.5
BASELINES = ("b3-pack", "b4-las")
SPREAD_METRICS = (
    "avg_jct_h", "p95_jct_h", "p99_jct_h", "avg_queue_h", "preemptions_per_job",
    "frac_small_in_one_node", "frac_large_in_one_rack",
)
MAX_SEEDS = 1000


def parse_seeds(text: str) -> list[int]:
    """``"3"``, ``"0-7"``, ``"0,2,5"`` or a mix (``"0-3,8"``) -> sorted distinct seeds."""
    seeds: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        lo, sep, hi = part.partition("-")
        try:
            first = int(lo)
            last = int(hi) if sep else first
        except ValueError:
            raise ValueError(f"seed {part!r}: expected N, A-B or a comma-separated list of them") from None
        if first < 0 or last < first:
            raise ValueError(f"seed {part!r}: seeds are >= 0 and a range runs low-high")
        if last - first >= MAX_SEEDS or len(seeds) + last - first >= MAX_SEEDS:
            raise ValueError(f"seed {text!r}: at most {MAX_SEEDS} seeds")
        seeds.update(range(first, last + 1))
    return sorted(seeds)


def seed_text(seeds: Sequence[int]) -> str:
    """The inverse of ``parse_seeds``: ``[0, 1, 2, 5]`` -> ``"0-2,5"``."""
    parts: list[str] = []
    start = prev = seeds[0]
    s: int | None
    for s in [*seeds[1:], None]:
        if s is not None and s == prev + 1:
            prev = s
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if s is not None:
            start = prev = s
    return ",".join(parts)


def variant(run: Mapping[str, object]) -> str:
    """What tells replays of one policy apart: ``policy [--plugin ...] [--set ...]``, and the
    estimate mode when it is not the honest ``history`` (lines written before the changes
    were recorded give the policy alone)."""
    parts = [str(run.get("policy"))]
    for key in ("plugins", "settings"):
        value = run.get(key) or []
        if isinstance(value, list):
            parts.extend(str(v) for v in value)
    estimates = run.get("estimates")
    if estimates not in (None, "history"):
        parts.append(f"[{estimates} estimates]")
    return " ".join(parts)


def is_baseline(run: Mapping[str, object]) -> bool:
    """B3 or B4 as defined: no changed argument, no added plugin, honest estimates."""
    return run.get("policy") in BASELINES and variant(run) == run.get("policy")


def _spread(prefix: str, values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {f"{prefix}_mean": None, f"{prefix}_min": None, f"{prefix}_max": None}
    return {f"{prefix}_mean": fmean(values), f"{prefix}_min": min(values), f"{prefix}_max": max(values)}


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return None
    return float(value)


def summarize_seeds(runs: Sequence[Mapping[str, object]]) -> list[dict[str, object]]:
    """One summary per policy variant (``variant``: a ``--set`` or estimate mode of its own
    is summarised apart; in first-seen order) over the runs' seeds: the mean, min and
    max of ``SPREAD_METRICS``; where B3 or B4 ran on a seed, the policy's average JCT over the
    better of them on that seed (``jct_vs_best_b3_b4_*``), the seeds where that is at most
    ``JCT_TARGET`` and the seeds where its p95 is no higher than B4's; on every seed, whether
    it stays within ``PREEMPTION_CAP`` preemptions per job."""
    best: dict[object, float] = {}
    b4_p95: dict[object, float] = {}
    for run in runs:
        if is_baseline(run):
            avg = _number(run.get("avg_jct_h"))
            if avg is not None:
                best[run.get("seed")] = min(avg, best.get(run.get("seed"), avg))
            p95 = _number(run.get("p95_jct_h"))
            if run.get("policy") == "b4-las" and p95 is not None:
                b4_p95[run.get("seed")] = p95
    by_policy: dict[str, list[Mapping[str, object]]] = {}
    for run in runs:
        by_policy.setdefault(variant(run), []).append(run)
    out: list[dict[str, object]] = []
    for policy, group in by_policy.items():
        seeds = sorted(int(str(r.get("seed"))) for r in group)
        row: dict[str, object] = {"policy": policy, "summary": True, "seeds": seeds}
        for metric in SPREAD_METRICS:
            row.update(_spread(metric, [v for r in group if (v := _number(r.get(metric))) is not None]))
        ratios = [avg / best[r.get("seed")] for r in group
                  if r.get("seed") in best and (avg := _number(r.get("avg_jct_h"))) is not None]
        row.update(_spread("jct_vs_best_b3_b4", ratios))
        row["seeds_compared"] = len(ratios)
        row["seeds_jct_target_met"] = sum(1 for x in ratios if x <= JCT_TARGET)
        p95s = [(p95, b4_p95[r.get("seed")]) for r in group
                if r.get("seed") in b4_p95 and (p95 := _number(r.get("p95_jct_h"))) is not None]
        row["seeds_p95_target_met"] = sum(1 for mine, theirs in p95s if mine <= theirs)
        row["seeds_preemption_cap_met"] = sum(
            1 for r in group if (x := _number(r.get("preemptions_per_job"))) is not None and x <= PREEMPTION_CAP)
        out.append(row)
    return out


def _triple(row: Mapping[str, object], key: str, spec: str) -> str:
    mean, lo, hi = (row.get(f"{key}_{s}") for s in ("mean", "min", "max"))
    if not isinstance(mean, float) or not isinstance(lo, float) or not isinstance(hi, float):
        return "-"
    return f"{mean:{spec}} [{lo:{spec}}-{hi:{spec}}]"


def _mean(row: Mapping[str, object], key: str, spec: str) -> str:
    value = row.get(f"{key}_mean")
    return format(value, spec) if isinstance(value, float) else "-"


def format_summaries(summaries: Sequence[Mapping[str, object]]) -> list[str]:
    """The summaries as a table (no lines for no summaries)."""
    if not summaries:
        return []
    width = max(10, *(len(str(row.get("policy"))) for row in summaries))
    lines = [
        f"# over seeds: mean [min-max]; vs B3/B4 = avg JCT / the better of B3 and B4 of the same seed "
        f"(target <= {JCT_TARGET}); preempt <= cap: seeds with at most {PREEMPTION_CAP} preemptions per job",
        f"{'policy':<{width}} {'seeds':>5} {'avg_jct':>21} {'p95':>6} {'preempt':>19} {'<= cap':>6} {'vs B3/B4':>19} "
        f"{'<= target':>9} {'p95<=B4':>7}",
    ]
    for row in summaries:
        seeds = row.get("seeds")
        n = len(seeds) if isinstance(seeds, list) else 0
        compared = row.get("seeds_compared")
        met = f"{row.get('seeds_jct_target_met')}/{compared}" if compared else "-"
        p95_met = f"{row.get('seeds_p95_target_met')}/{compared}" if compared else "-"
        lines.append(
            f"{str(row.get('policy')):<{width}} {n:>5} "
            f"{_triple(row, 'avg_jct_h', '.3f'):>21} {_mean(row, 'p95_jct_h', '.2f'):>6} "
            f"{_triple(row, 'preemptions_per_job', '.3f'):>19} "
            f"{row.get('seeds_preemption_cap_met')}/{n:<4} "
            f"{_triple(row, 'jct_vs_best_b3_b4', '.3f'):>19} "
            f"{met:>9} {p95_met:>7}")
    return lines


def read_runs(paths: Sequence[str], unique: bool = True) -> list[dict[str, object]]:
    """The replays' JSON lines in ``paths`` (summary lines skipped); with ``unique``, the same
    variant (``variant``) and seed twice is refused."""
    runs: list[dict[str, object]] = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{number}: not a JSON line ({e.msg})") from None
                if isinstance(obj, dict) and obj.get("summary") is True:
                    continue  # a summary of an earlier pooling: the runs are what counts
                if not isinstance(obj, dict) or "policy" not in obj or "seed" not in obj:
                    raise ValueError(f"{path}:{number}: not a replay's JSON line (needs policy and seed)")
                runs.append(obj)
    seen: set[tuple[object, object]] = set()
    for run in runs if unique else ():
        key = (variant(run), run["seed"])
        if key in seen:
            raise ValueError(f"{key[0]!r} seed {key[1]!r} appears twice: the same replay cannot be pooled twice")
        seen.add(key)
    return runs


def json_line(obj: Mapping[str, object]) -> str:
    """One JSON line, NaN written as null (JSON has no NaN)."""
    return json.dumps({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in obj.items()})


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scheduler.sim.seeds",
                                description="Pool the JSON lines of replays and summarise each policy over seeds.")
    p.add_argument("files", nargs="+", help="output of python -m scheduler.sim --json (summary lines are skipped)")
    p.add_argument("--json", action="store_true", help="one JSON summary per policy")
    opts = p.parse_args(argv)
    try:
        runs = read_runs(opts.files)
    except (OSError, ValueError) as e:
        print(f"python -m scheduler.sim.seeds: {e}", file=sys.stderr)
        return 2
    if not runs:
        print("python -m scheduler.sim.seeds: no replay lines in the files", file=sys.stderr)
        return 2
    summaries = summarize_seeds(runs)
    if opts.json:
        for row in summaries:
            print(json_line(row))
    else:
        for line in format_summaries(summaries):
            print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
