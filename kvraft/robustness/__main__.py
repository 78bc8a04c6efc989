"""``python -m kvraft.robustness``: run named fault scenarios against real member processes.

    python -m kvraft.robustness --list
    python -m kvraft.robustness --scenario kill-leader,partitioned-leader --seed 7
    python -m kvraft.robustness --scenario all --minutes 60      # repeat until an hour is spent
    python -m kvraft.robustness --check /tmp/kvraft-robust-kill-leader-XXXX

One line per scenario run, then ``runs: N, passed: P, failed: F, skipped: S``; exit status
1 when any run failed (its directory is kept and named on its line), 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time

from kvraft.bytecode import compile_packages
from kvraft.robustness.runner import check_saved, run_scenario
from kvraft.robustness.scenarios import SCENARIOS

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    compile_packages()  # (the members start from bytecode, as installed: kvraft.bytecode)
    parser = argparse.ArgumentParser(prog="python -m kvraft.robustness", description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", default="all", help="comma-separated names, or 'all' (see --list)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the first run (each further run adds 1)")
    parser.add_argument("--minutes", type=float, default=0.0, help="repeat the scenarios until this many minutes are spent")
    parser.add_argument("--clients", type=int, default=4, help="concurrent KV clients")
    parser.add_argument("--pace", type=float, default=1.0, help="scale every fault duration (>1 is slower)")
    parser.add_argument("--member-args", default="", help="extra flags for every member, e.g. '--log-level debug'")
    parser.add_argument("--keep", default=None, help="keep every run's directory under this path")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument("--check", metavar="DIR", help="check a kept run's history.jsonl again and exit")
    args = parser.parse_args(argv)
    if args.list:
        for s in SCENARIOS.values():
            net = " (needs root: network faults)" if s.needs_net else ""
            print(f"{s.name:40} {s.members} members  {s.about}{net}")
        return 0
    if args.check:
        problems = check_saved(args.check)
        for text in problems:
            print(text)
        print(f"problems: {len(problems)}")
        return 1 if problems else 0
    names = list(SCENARIOS) if args.scenario == "all" else [n.strip() for n in args.scenario.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown or not names:
        print(f"unknown scenario(s): {', '.join(unknown) or '(none given)'}; see --list", file=sys.stderr)
        return 2
    if args.clients < 1 or args.pace <= 0:
        print("--clients must be >= 1 and --pace > 0", file=sys.stderr)
        return 2
    deadline = time.monotonic() + args.minutes * 60
    seed, runs, passed, failed, skipped = args.seed, 0, 0, 0, 0
    while True:
        for name in names:
            keep = f"{args.keep}/{name}-{seed}" if args.keep else None
            result = run_scenario(
                SCENARIOS[name], seed, keep=keep, pace=args.pace, clients=args.clients, member_args=shlex.split(args.member_args)
            )
            print(result.line(), flush=True)
            runs += 1
            if result.skipped:
                skipped += 1
            elif result.ok:
                passed += 1
            else:
                failed += 1
            seed += 1
        if time.monotonic() >= deadline:
            break
    print(f"runs: {runs}, passed: {passed}, failed: {failed}, skipped: {skipped}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
