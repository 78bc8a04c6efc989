"""``python -m scheduler.sim``: replay a job trace through the scheduler's plugins.

Examples::

    python -m scheduler.sim --trace ../shared/traces/philly_jobs_busiest_week.csv --policy all
    python -m scheduler.sim --trace T.csv --nodes 64 --policy default --policy b4 --json
    python -m scheduler.sim --trace T.csv --node-csv alibaba_openb_nodes.csv --sample-nodes 120 \
        --racks 8 --gpu-type-frac 0.33 --policy all --plot jct.png
    python -m scheduler.sim --policy default --set preemption.return_holds=true   # a sweep row
    python -m scheduler.sim --policy remaining --plugin endtime --set endtime.mode='"match"'
    python -m scheduler.sim --policy default --policy b3 --policy b4 --seed 0-7 --parallel 2

The seed, the cluster, the policies and every derived option are printed first (stderr), so a
run is reproducible from its header.

``--seed`` takes one seed or several (``0-7``, ``0,3,5``): every policy runs on every seed,
one result per pair, then one summary per policy over the seeds (``seeds.summarize_seeds``:
mean, min and max of the main metrics, and each seed's average JCT over the better of B3 and
B4 *of that seed*, with the number of seeds meeting the 0.9 x target). With ``--json`` the
summaries are extra lines marked ``"summary": true``.
"""

from __future__ import annotations

import argparse
import csv
import math
import multiprocessing
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scheduler.cycle import Scheduler
from scheduler.model import Tenant
from scheduler.profiles import ANALYSIS, PROFILES, profile, with_args, with_plugins
from scheduler.sim.cluster import ClusterSpec, build_nodes, sample_shapes
from scheduler.sim.engine import STUCK_AFTER_S, RunResult, Simulation
from scheduler.sim.estimate import ESTIMATORS, Estimator
from scheduler.sim.metrics import summarize
from scheduler.sim.progress import Progress
from scheduler.sim.seeds import format_summaries, json_line, parse_seeds, seed_text, summarize_seeds
from scheduler.sim.slowdown import SlowdownModel
from scheduler.sim.trace import NodeShape, TraceError, TraceJob, read_nodes, read_trace

__all__ = ["HELIOS_VC_NODES", "RECORD_COLUMNS", "main", "run_policy"]

DEFAULT_TRACE = Path(__file__).resolve().parents[2].parent / "shared/traces/philly_jobs_busiest_week.csv"

# HeliosArtifact's Philly VC sizes (nodes of 8 GPUs); scaled to the simulated cluster.
HELIOS_VC_NODES = {
    "6214e9": 64, "b436b2": 64, "ee9e8c": 64, "7f04ca": 32, "6c71a0": 32, "0e4a51": 32,
    "11cb48": 16, "e13805": 16, "2869ce": 16, "ed69ec": 8, "103959": 8,
}

RECORD_COLUMNS = [
    "policy", "job_id", "vc", "gpus", "submit_s", "duration_s", "first_start_s", "finish_s",
    "preemptions", "levels", "runs", "capacity_gpus", "seed", "est_s",
]

COLUMNS = [  # (metric, header, width, format)
    ("policy", "policy", 10, ""), ("jobs", "jobs", 5, "d"), ("avg_jct_h", "avg_jct", 8, ".2f"),
    ("p50_jct_h", "p50", 7, ".2f"), ("p95_jct_h", "p95", 7, ".2f"), ("p99_jct_h", "p99", 7, ".1f"),
    ("avg_queue_h", "queue", 7, ".2f"), ("util", "util", 6, ".3f"),
    ("frac_small_in_one_node", "small1n", 7, ".3f"), ("frac_large_in_one_rack", "large1r", 7, ".3f"),
    ("preemptions_per_job", "preempt", 7, ".3f"), ("moves_per_job", "moves", 6, ".3f"),
    ("decisions_per_s", "dec/s", 8, ".0f"),
    ("wall_s", "wall_s", 7, ".1f"),
]


def tenants_for(capacity_gpus: int, kind: str) -> list[Tenant]:
    if kind == "none":
        return []
    total = sum(HELIOS_VC_NODES.values())
    return [Tenant(vc, round(capacity_gpus * nodes / total)) for vc, nodes in HELIOS_VC_NODES.items()]


def gpu_type_constraints(trace: list[TraceJob], spec: ClusterSpec, frac: float, seed: int) -> dict[str, str]:
    """Give ``frac`` of the jobs a GPU type, weighted by that type's GPUs, among the types
    whose largest rack could hold the job (so no constraint is made infeasible)."""
    if frac <= 0 or not spec.shapes:
        return {}
    nodes = build_nodes(spec)
    rack_gpus: dict[tuple[str, str], int] = {}
    totals: dict[str, int] = {}
    largest: dict[str, int] = {}
    for n in nodes:
        rack_gpus[(n.gpu_type, n.rack)] = rack_gpus.get((n.gpu_type, n.rack), 0) + n.gpus
        totals[n.gpu_type] = totals.get(n.gpu_type, 0) + n.gpus
        largest[n.gpu_type] = max(largest.get(n.gpu_type, 0), n.gpus)
    best_rack = {t: max(g for (k, _), g in rack_gpus.items() if k == t) for t in totals}
    rng = random.Random(f"gpu-types-{seed}")
    out: dict[str, str] = {}
    for job in trace:
        if rng.random() >= frac:
            continue
        fits = [t for t in sorted(totals) if t and best_rack[t] >= job.gpus]
        if fits:
            out[job.job_id] = rng.choices(fits, weights=[totals[t] for t in fits])[0]
    return out


def run_policy(args: dict[str, Any]) -> tuple[dict[str, object], list[dict[str, object]]]:
    """Run one policy (a separate process under ``--parallel``); return metrics and one row
    per job (``RECORD_COLUMNS``)."""
    spec: ClusterSpec = args["spec"]
    nodes = build_nodes(spec)
    trace: list[TraceJob] = args["trace"]
    chosen = with_args(with_plugins(profile(args["policy"]), args.get("plugins", [])), args.get("settings", []))
    sim = Simulation(
        trace, nodes, chosen, seed=args["seed"],
        tenants=tenants_for(sum(n.gpus for n in nodes), args["quotas"]),
        estimator=Estimator(args["estimates"], noise_sigma=args.get("progress_noise", 0.0), seed=args["seed"]),
        slowdown=SlowdownModel(nodes, args["seed"], args["cross_rack_scale"], not args["no_slowdown"]),
        restart_overhead_s=args["restart_s"],
        window_s=args["window_s"],
        gpu_types=args["gpu_types"],
    )
    bar = Progress(args["policy"], enabled=args["progress"])
    result: RunResult = sim.run(bar)
    metrics = summarize(chosen.name, result)
    metrics.update(seed=args["seed"], cluster=spec.describe(), estimates=args["estimates"],
                   settings=list(args.get("settings", [])), plugins=list(args.get("plugins", [])))
    bar.close(f"done in {result.wall_s:.1f} s ({result.passes} passes)")
    capacity = sum(n.gpus for n in nodes)
    if result.unfinished:
        gpus = {t.job_id: t.gpus for t in trace}
        too_big = [j for j in result.unfinished if gpus[j] > capacity]
        waited = [j for j in result.unfinished if gpus[j] <= capacity]

        def shown(ids: list[str]) -> str:
            return ", ".join(ids[:5]) + (", ..." if len(ids) > 5 else "")

        parts = ([f"{len(too_big)} need more GPUs than the cluster's {capacity} ({shown(too_big)})"] if too_big else []) + (
            [f"{len(waited)} still waited when the cluster had stayed idle for {STUCK_AFTER_S / 86400:g} days:"
             f" placeable nowhere, or queued behind a job that was ({shown(waited)})"] if waited else [])
        print(f"# {metrics['policy']} seed {args['seed']}: {len(result.unfinished)} jobs never finished, "
              f"{'; '.join(parts)}; the metrics cover the finished jobs", file=sys.stderr)
    rows: list[dict[str, object]] = [{
        "policy": metrics["policy"], "job_id": r.trace.job_id, "vc": r.trace.vc, "gpus": r.trace.gpus,
        "submit_s": r.trace.submit_s, "duration_s": r.trace.duration_s,
        "first_start_s": "" if r.first_start_s is None else r.first_start_s,
        "finish_s": "" if r.finish_s is None else r.finish_s, "preemptions": r.preemptions,
        "levels": "/".join(r.levels), "runs": ";".join(f"{a:.0f}:{b:.0f}" for a, b in r.runs),
        "capacity_gpus": capacity, "seed": args["seed"],
        "est_s": "" if r.job.est_runtime_s is None else r.job.est_runtime_s,
    } for r in result.records]
    return metrics, rows


def _policies(names: list[str]) -> list[str]:
    if not names:
        return ["default"]
    out: list[str] = []
    for name in names:
        for resolved in (list(PROFILES) if name == "all" else [profile(name).name]):
            if resolved not in out:
                out.append(resolved)
    return out


def _seeds(text: str) -> list[int]:
    try:
        return parse_seeds(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value
    return parse


def _real(low: float, *, above: bool = False, high: float = math.inf) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid float value: {text!r}") from None
        if not math.isfinite(value) or value < low or (above and value == low) or value > high:
            bound = f"> {low:g}" if above else f">= {low:g}"
            raise argparse.ArgumentTypeError(
                f"must be a finite number {bound}{f' and <= {high:g}' if high < math.inf else ''}, got {text}")
        return value
    return parse


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m scheduler.sim", description=__doc__.split("\n\n")[0])
    p.add_argument("--trace", default=str(DEFAULT_TRACE), help="job trace CSV (Philly columns)")
    p.add_argument("--nodes", type=_at_least(1), default=48)
    p.add_argument("--gpus-per-node", type=_at_least(1), default=8)
    p.add_argument("--racks", type=_at_least(1), default=6)
    p.add_argument("--racks-per-spine", type=_at_least(0), default=0)
    p.add_argument("--node-csv", help="node shapes CSV (sn, gpu, model, ...); overrides --nodes")
    p.add_argument("--sample-nodes", type=_at_least(1), help="with --node-csv: draw this many GPU nodes")
    p.add_argument("--gpu-type-frac", type=_real(0, high=1), default=None,
                   help="share of jobs with a GPU-type constraint (default 0.33 with --node-csv, else 0)")
    p.add_argument("--policy", action="append", default=[], help=f"one of {sorted(PROFILES)}, b1..b4, all, or an analysis profile: {sorted(ANALYSIS)}")
    p.add_argument("--seed", "--seeds", type=_seeds, default=[0], metavar="SEEDS",
                   help="one seed, or several: A-B, A,B,C (each policy runs on each; a summary follows)")
    p.add_argument("--set", action="append", default=[], metavar="PLUGIN.ARG=JSON",
                   help="change a plugin argument of the policies run (repeatable), e.g. "
                        "preemption.return_holds=true")
    p.add_argument("--plugin", action="append", default=[], metavar="NAME[:WEIGHT]",
                   help="add a plugin (Score weight WEIGHT, default 1) at the end of the policies "
                        "run, or set the weight of one they run (repeatable; applied before --set, "
                        "which may then set its arguments), e.g. endtime or topology:4")
    p.add_argument("--estimates", choices=ESTIMATORS, default="history")
    p.add_argument("--progress-noise", type=_real(0, high=5), default=0.0, metavar="SIGMA",
                   help="--estimates progress: each multi-GPU job's estimate at its first start is its "
                        "true duration times a log-normal error of this sigma (default 0: exact)")
    p.add_argument("--quotas", choices=("helios", "none"), default="helios",
                   help="helios: each VC of the Helios Philly table gets its share of the cluster as "
                        "a quota (a VC not in the table has none, with a warning); none: no quotas")
    p.add_argument("--cross-rack-scale", type=_real(0), default=1.0)
    p.add_argument("--no-slowdown", action="store_true")
    p.add_argument("--restart-s", type=_real(0), default=30.0)
    p.add_argument("--time-scale", type=_real(0, above=True), default=1.0, help="multiply submit times (< 1: more load)")
    p.add_argument("--limit", type=_at_least(1), help="replay only the first N jobs")
    p.add_argument("--window-days", type=_real(0, above=True), default=7.0, help="utilisation window")
    p.add_argument("--json", action="store_true", help="one JSON object per policy on stdout")
    p.add_argument("--plot", help="write a PNG of the JCT distributions and utilisation (needs matplotlib)")
    p.add_argument("--records", help="write one CSV row per job and policy (for python -m scheduler.sim.plot)")
    p.add_argument("--parallel", type=_at_least(1), default=1, help="replays (policy x seed) to run at once (processes)")
    p.add_argument("--no-progress", action="store_true")
    return p


def _error(message: str) -> int:
    print(f"python -m scheduler.sim: error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    opts = _parser().parse_args(argv)
    try:
        trace = read_trace(opts.trace, opts.limit, opts.time_scale)
        node_shapes = read_nodes(opts.node_csv) if opts.node_csv else None
    except (OSError, TraceError) as e:
        return _error(str(e))
    cpu_only = [t for t in trace if t.gpus == 0]
    if cpu_only:  # (Helios and the Philly analyses leave them out too: no GPU to schedule)
        print(f"# note: {len(cpu_only)} jobs with num_gpus 0 left out (the replay schedules GPUs), "
              f"e.g. {cpu_only[0].job_id}", file=sys.stderr)
        trace = [t for t in trace if t.gpus > 0]
    if not trace:
        return _error(f"--trace {opts.trace}: no jobs to replay")
    if node_shapes is not None and not any(s.gpus > 0 for s in node_shapes):
        return _error(f"--node-csv {opts.node_csv}: no node with a GPU (gpu > 0) to build a cluster of")
    for flag, value in (("--sample-nodes", opts.sample_nodes), ("--gpu-type-frac", opts.gpu_type_frac)):
        if node_shapes is None and value:
            return _error(f"{flag} needs --node-csv (the uniform cluster has no node shapes nor GPU types)")
    if node_shapes is None and opts.racks > opts.nodes:
        return _error(f"--racks {opts.racks} is more than --nodes {opts.nodes} (a rack holds at least one node)")
    seeds: list[int] = opts.seed
    try:
        policies = _policies(opts.policy)
    except KeyError as e:
        return _error(f"--policy: {e.args[0]}")
    for flag, out in (("--records", opts.records), ("--plot", opts.plot)):
        # checked before the replay, which may run for minutes
        if out and (Path(out).is_dir() or not Path(out).resolve().parent.is_dir()):
            return _error(f"{flag} {out}: {'is a directory' if Path(out).is_dir() else 'no such directory'}")
    for name in policies:
        try:
            # the registry knows the plugins, and the plugins check their arguments
            Scheduler(with_args(with_plugins(profile(name), opts.plugin), opts.set))
        except (ValueError, KeyError) as e:
            return _error(f"--plugin/--set: {e.args[0] if isinstance(e, KeyError) else e}")
    unknown = sorted({t.vc for t in trace} - set(HELIOS_VC_NODES))
    if opts.quotas == "helios" and unknown:
        jobs_out = sum(1 for t in trace if t.vc in unknown)
        print(f"# warning: --quotas helios: {len(unknown)} VCs of the trace ({', '.join(unknown[:5])}"
              f"{', ...' if len(unknown) > 5 else ''}; {jobs_out} of {len(trace)} jobs) are not in the "
              "Helios table and run without a quota", file=sys.stderr)
    jobs: list[dict[str, Any]] = []
    for seed in seeds:
        shapes: tuple[NodeShape, ...] = ()
        if node_shapes is not None:
            shapes = sample_shapes(node_shapes, opts.sample_nodes, seed)
        spec = ClusterSpec(opts.nodes, opts.gpus_per_node, opts.racks, opts.racks_per_spine, shapes)
        frac = opts.gpu_type_frac if opts.gpu_type_frac is not None else (0.33 if shapes else 0.0)
        gpu_types = gpu_type_constraints(trace, spec, frac, seed)
        print(
            f"# seed={seed} trace={opts.trace} jobs={len(trace)} cluster={spec.describe()} "
            f"policies={','.join(policies)} estimates={opts.estimates} quotas={opts.quotas} "
            f"cross_rack_scale={opts.cross_rack_scale} slowdown={'off' if opts.no_slowdown else 'on'} "
            f"restart_s={opts.restart_s} time_scale={opts.time_scale} gpu_type_constrained={len(gpu_types)}"
            + "".join(f" plugin={s}" for s in opts.plugin) + "".join(f" set={s}" for s in opts.set),
            file=sys.stderr,
        )
        jobs.extend(dict(
            spec=spec, trace=trace, policy=name, seed=seed, quotas=opts.quotas,
            estimates=opts.estimates, progress_noise=opts.progress_noise,
            cross_rack_scale=opts.cross_rack_scale, no_slowdown=opts.no_slowdown,
            restart_s=opts.restart_s, window_s=opts.window_days * 86400, gpu_types=gpu_types,
            progress=not opts.no_progress, settings=list(opts.set), plugins=list(opts.plugin),
        ) for name in policies)
    if opts.parallel > 1 and len(jobs) > 1:
        with multiprocessing.get_context("fork").Pool(min(opts.parallel, len(jobs))) as pool:
            results = pool.map(run_policy, jobs)
    else:
        results = [run_policy(j) for j in jobs]
    summaries = summarize_seeds([m for m, _ in results]) if len(seeds) > 1 else []
    if opts.json:
        for metrics, _ in results:
            print(json_line(metrics))
        for summary in summaries:
            print(json_line(summary))
    else:
        columns = [*COLUMNS[:1], ("seed", "seed", 4, "d"), *COLUMNS[1:]] if len(seeds) > 1 else COLUMNS
        print(" ".join(f"{head:>{width}}" for _, head, width, _ in columns))
        for metrics, _ in results:
            print(" ".join(f"{metrics[key]:>{width}{fmt}}" for key, _, width, fmt in columns))
        for line in format_summaries(summaries):
            print(line)
    if opts.records:
        try:
            with open(opts.records, "w", newline="") as f:
                writer = csv.DictWriter(f, RECORD_COLUMNS)
                writer.writeheader()
                for _, rows in results:
                    writer.writerows(rows)
        except OSError as e:
            return _error(f"--records {opts.records}: {e.strerror or e}")
        print(f"# wrote {opts.records}", file=sys.stderr)
    if opts.plot:
        from scheduler.sim.plot import plot_records

        which = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {seed_text(seeds)} pooled"
        try:
            plot_records([row for _, rows in results for row in rows], opts.plot,
                         f"{jobs[0]['spec'].describe()}, {which}", opts.window_days * 86400)
        except OSError as e:
            return _error(f"--plot {opts.plot}: {e.strerror or e}")
        print(f"# wrote {opts.plot}", file=sys.stderr)
    return 0
