"""Policies as points: average JCT against evictions per job, with the issue-8 targets.

``python -m scheduler.sim.frontier FILE.jsonl... --out PNG [--title T]`` reads the JSON lines of
``python -m scheduler.sim --json`` (any number of policies, ``--set`` variants and estimate
modes, all of one seed and one cluster) and draws each replay as a numbered point: average JCT
(y) against preemptions per job, defragmentation moves included (x). The issue-8 targets are
drawn as lines: 0.9 x the better of B3's and B4's average, when both are among the lines, and
the 0.5 preemptions-per-job cap; the corner that meets both is shaded. The legend names each
point by policy, ``--set``/``--plugin`` changes and a non-honest estimate mode, so a sweep's
trade-off between the two targets can be seen at once (docs/benchmarks.md, Scheduler).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from scheduler.sim.seeds import (
    BASELINES,
    JCT_TARGET,
    PREEMPTION_CAP,
    is_baseline,
    read_runs,
    variant,
)

__all__ = ["jct_target", "main", "plot_frontier"]


def jct_target(runs: Sequence[Mapping[str, object]]) -> float | None:
    """0.9 x the better of B3's and B4's average JCT (honest estimates, no changes), or None
    when either baseline is missing."""
    best: dict[str, float] = {}
    for run in runs:
        if is_baseline(run):
            best[str(run.get("policy"))] = float(str(run["avg_jct_h"]))
    if len(best) < len(BASELINES):
        return None
    return JCT_TARGET * min(best.values())


# how a point is drawn: the unchanged baselines, replays that know true durations, the rest
KINDS = {
    "baseline": ("s", "black"),
    "true durations (a bound, not a policy)": ("^", "tab:orange"),
    "honest estimates": ("o", "tab:blue"),
}


def _kind(run: Mapping[str, object]) -> str:
    if run.get("estimates", "history") not in ("history", "none"):
        return "true durations (a bound, not a policy)"
    if str(run.get("policy")).split("-")[0] in ("b1", "b2", "b3", "b4") and variant(run) == run.get("policy"):
        return "baseline"
    return "honest estimates"


def _one_draw(runs: Sequence[Mapping[str, object]]) -> tuple[object, object]:
    draws = {(run.get("seed"), run.get("cluster")) for run in runs}
    if len(draws) != 1:
        listed = "; ".join(f"seed {s}, {c}" for s, c in sorted(draws, key=str))
        raise ValueError(f"one seed and one cluster per plot, these lines have {len(draws)}: {listed}")
    return next(iter(draws))


def _points(runs: Sequence[Mapping[str, object]]) -> tuple[list[float], list[float]]:
    """(preemptions per job, average JCT) of each replay."""
    xs: list[float] = []
    ys: list[float] = []
    for i, run in enumerate(runs, 1):
        try:
            xs.append(float(str(run["preemptions_per_job"])))
            ys.append(float(str(run["avg_jct_h"])))
        except (KeyError, ValueError):
            raise ValueError(f"replay {i} ({variant(run)}): needs numbers avg_jct_h and preemptions_per_job") from None
    return xs, ys


def plot_frontier(runs: Sequence[Mapping[str, object]], path: str | Path, title: str = "") -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the extra
        raise SystemExit("plots need matplotlib: pip install -e '.[plot]'") from exc
    seed, cluster = _one_draw(runs)
    xs, ys = _points(runs)
    target = jct_target(runs)
    fig, (ax, key) = plt.subplots(1, 2, figsize=(14, 6.5), gridspec_kw={"width_ratios": [5, 4]})
    kinds = [_kind(r) for r in runs]
    for kind, (marker, colour) in KINDS.items():
        at = [i for i, k in enumerate(kinds) if k == kind]
        if at:
            ax.scatter([xs[i] for i in at], [ys[i] for i in at], marker=marker, color=colour, zorder=3, label=kind)
    for i, (x, y) in enumerate(zip(xs, ys, strict=True), 1):
        ax.annotate(str(i), (x, y), textcoords="offset points", xytext=(4, 3), fontsize=8)
    ax.axvline(PREEMPTION_CAP, color="grey", linestyle="--", linewidth=0.9)
    x_lo, x_hi = min([*xs, 0.0]), max([*xs, PREEMPTION_CAP]) * 1.08
    if target is not None:
        ax.axhline(target, color="grey", linestyle="--", linewidth=0.9)
        y_lo = min([*ys, target]) - 0.05 * (max(ys) - min(ys) or 1.0)
        ax.fill_between([x_lo, PREEMPTION_CAP], y_lo, target, color="tab:green", alpha=0.12,
                        label=f"both targets: avg JCT <= {target:.3f} h, <= {PREEMPTION_CAP} preemptions/job")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_xlim(x_lo, x_hi)
    ax.set_xlabel("preemptions per job (defragmentation moves included)")
    ax.set_ylabel("average JCT (h)")
    ax.grid(True, alpha=0.3)
    ax.set_title(title or f"{cluster}, seed {seed}")
    key.axis("off")
    lines = [f"{i:>2}  {y:.3f} h  {x:.3f}  {variant(r)}" for i, (r, x, y) in enumerate(zip(runs, xs, ys, strict=True), 1)]
    key.text(0.0, 1.0, "\n".join([" #  avg JCT  preempt  replay", *lines]), va="top", ha="left",
             family="monospace", fontsize=8, transform=key.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scheduler.sim.frontier", description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="+", help="output of python -m scheduler.sim --json (summary lines are skipped)")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--title", default="")
    opts = p.parse_args(argv)
    try:
        runs = read_runs(opts.files, unique=False)
        if not runs:
            raise ValueError("no replay lines in the files")
        _one_draw(runs)
        _points(runs)
    except (OSError, ValueError) as e:
        print(f"python -m scheduler.sim.frontier: {e}", file=sys.stderr)
        return 2
    plot_frontier(runs, opts.out, opts.title)
    print(f"# wrote {opts.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
