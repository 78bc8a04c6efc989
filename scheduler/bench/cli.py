"""``python -m scheduler.bench``: placement decisions per second and pass latency.

    python -m scheduler.bench                       # every workload in scheduler/bench/workloads
    python -m scheduler.bench --workload single-5k --workload gang-5k --json
    python -m scheduler.bench --through-kvraft [--json]   # the daemon on a real kvraft
                                                          # (scheduler/bench_kvraft.py)
"""

from __future__ import annotations

import argparse
import json
import platform
import sys

import yaml

from scheduler.bench.runner import run_workload
from scheduler.bench.workloads import load_all
from scheduler.profiles import profile

__all__ = ["main"]


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if "--through-kvraft" in args:  # the daemon scenarios take their own flags
        from scheduler.bench_kvraft import main as through_kvraft

        args.remove("--through-kvraft")
        return through_kvraft(args)
    p = argparse.ArgumentParser(prog="python -m scheduler.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--workload", action="append", default=[], help="workload name or YAML path (repeatable)")
    p.add_argument("--profile", default="default")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--passes", type=_positive, help="override the measured passes of every workload")
    p.add_argument("--nodes", type=_positive, help="override the node count of every workload")
    p.add_argument("--json", action="store_true")
    p.add_argument("--through-kvraft", action="store_true",
                   help="measure kvraft-scheduler on a real 3-member kvraft with fake nodes instead "
                        "(see python -m scheduler.bench_kvraft --help for its flags)")
    opts = p.parse_args(args)
    try:
        profile(opts.profile)
    except KeyError as e:
        p.error(f"argument --profile: {e.args[0]}")
    try:
        workloads = [w.scaled(opts.nodes, opts.passes) for w in load_all(opts.workload)]
    except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError) as e:
        p.error(f"argument --workload: {e}")
    print(f"# profile={opts.profile} seed={opts.seed} python={platform.python_version()} "
          f"machine={platform.machine()}", file=sys.stderr)
    if not opts.json:
        print(f"{'workload':>12} {'nodes':>6} {'placed':>7} {'dec/s':>8} {'pass p50 ms':>12} "
              f"{'pass p99 ms':>12} {'ms/decision':>12}")
    for workload in workloads:
        print(f"# running {workload.name} ({workload.nodes} nodes, {workload.passes} passes "
              f"of {workload.batch} jobs)", file=sys.stderr, flush=True)
        result = run_workload(workload, opts.profile, opts.seed)
        if opts.json:
            print(json.dumps(result.row()), flush=True)
        else:
            print(f"{result.workload:>12} {result.nodes:>6} {result.placed:>7} {result.decisions_per_s:>8.0f} "
                  f"{result.pass_ms_p50:>12.1f} {result.pass_ms_p99:>12.1f} {result.decision_ms_mean:>12.2f}",
                  flush=True)
    return 0
