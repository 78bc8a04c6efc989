"""Plots of replays (optional: needs the ``plot`` extra, matplotlib).

``python -m scheduler.sim.plot --out docs/x.png [--title T] records.csv [more.csv ...]`` reads
the per-job CSVs written by ``python -m scheduler.sim --records`` (one or more policies per
file, so that long runs can be made one policy at a time) and draws, per policy: the JCT CDF,
JCT box plots (p5-p95 whiskers, mean marked) and the allocated share of the cluster's GPUs
over time (hourly), with the utilisation window marked. Records of several seeds (``--seed
0-7``) pool per policy: the JCTs of every seed, the GPUs over the seeds' clusters together.
"""

from __future__ import annotations

import argparse
import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["main", "plot_records", "read_records", "utilisation_series"]


PLOTTED_COLUMNS = ("policy", "gpus", "submit_s", "finish_s", "runs", "capacity_gpus")


def read_records(paths: Sequence[str | Path]) -> list[dict[str, str]]:
    """Rows of ``--records`` CSVs; ValueError for a file without the plotted columns."""
    rows: list[dict[str, str]] = []
    for path in paths:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            missing = set(PLOTTED_COLUMNS) - set(reader.fieldnames or ())
            if missing and reader.fieldnames:
                raise ValueError(f"{path}: missing columns {sorted(missing)} (not a --records CSV?)")
            rows.extend(reader)
    return rows


def _jcts(rows: Sequence[Mapping[str, object]]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for row in rows:
        if row["finish_s"] in ("", None):
            continue
        jct = (float(str(row["finish_s"])) - float(str(row["submit_s"]))) / 3600
        out.setdefault(str(row["policy"]), []).append(jct)
    return out


def utilisation_series(rows: Sequence[Mapping[str, object]], step_s: float = 3600.0) -> dict[str, list[float]]:
    """Per policy, the share of the cluster's GPUs allocated in each ``step_s`` bucket; rows of
    several seeds (the ``seed`` column) pool their clusters' capacities."""
    busy: dict[str, list[float]] = {}
    capacity: dict[str, dict[str, float]] = {}
    for row in rows:
        policy = str(row["policy"])
        capacity.setdefault(policy, {})[str(row.get("seed", ""))] = float(str(row["capacity_gpus"]))
        series = busy.setdefault(policy, [])
        gpus = float(str(row["gpus"]))
        for run in str(row["runs"]).split(";"):
            if not run:
                continue
            start, stop = (float(x) for x in run.split(":"))
            first, last = int(start // step_s), int(stop // step_s)
            while len(series) <= last:
                series.append(0.0)
            for bucket in range(first, last + 1):
                lo, hi = max(start, bucket * step_s), min(stop, (bucket + 1) * step_s)
                if hi > lo:
                    series[bucket] += gpus * (hi - lo)
    return {p: [b / (sum(capacity[p].values()) * step_s) for b in s] for p, s in busy.items()}


def plot_records(rows: Sequence[Mapping[str, object]], path: str | Path, title: str, window_s: float) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the extra
        raise SystemExit("plots need matplotlib: pip install -e '.[plot]'") from exc
    jcts = _jcts(rows)
    names = list(jcts)
    fig, (cdf, box, util) = plt.subplots(1, 3, figsize=(18, 4.8))
    for name in names:
        xs = sorted(max(v, 1e-3) for v in jcts[name])
        cdf.plot(xs, [(i + 1) / len(xs) for i in range(len(xs))], label=name)
    cdf.set_xscale("log")
    cdf.set_xlabel("JCT (h, log)")
    cdf.set_ylabel("fraction of jobs")
    cdf.set_title("JCT CDF")
    cdf.grid(True, which="both", alpha=0.3)
    cdf.legend()
    box.boxplot([[max(v, 1e-3) for v in jcts[n]] for n in names], whis=(5, 95), showfliers=False)
    box.set_xticks(range(1, len(names) + 1), names, rotation=20)
    box.set_yscale("log")
    box.set_ylabel("JCT (h, log); whiskers p5-p95")
    means = [sum(jcts[n]) / len(jcts[n]) for n in names]
    box.scatter(range(1, len(names) + 1), means, marker="D", color="red", label="mean", zorder=3)
    box.legend()
    box.set_title("JCT by policy")
    series = utilisation_series(rows)
    for name in names:
        ys = series.get(name, [])
        days = [(i + 0.5) / 24 for i in range(len(ys))]
        util.plot(days, ys, label=name, linewidth=0.8)
    util.axvline(window_s / 86400, color="grey", linestyle="--", linewidth=0.8)
    util.set_xlim(0, max(2 * window_s / 86400, 1))
    util.set_ylim(0, 1.05)
    util.set_xlabel("day (dashed: end of the utilisation window)")
    util.set_ylabel("allocated share of GPUs (hourly)")
    util.set_title("Utilisation")
    util.grid(True, alpha=0.3)
    util.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scheduler.sim.plot", description=__doc__.split("\n\n")[0])
    p.add_argument("records", nargs="+", help="CSV files written by python -m scheduler.sim --records")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--title", default="")
    p.add_argument("--window-days", type=float, default=7.0)
    opts = p.parse_args(argv)
    if not (math.isfinite(opts.window_days) and opts.window_days > 0):
        p.error(f"argument --window-days: must be a finite number > 0, got {opts.window_days}")
    try:
        rows = read_records(opts.records)
    except (OSError, ValueError) as e:
        p.error(str(e))
    if not rows:
        p.error(f"no records in {', '.join(opts.records)}")
    plot_records(rows, opts.out, opts.title, opts.window_days * 86400)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
