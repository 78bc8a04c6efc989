"""``python -m kvraft.sim``: run simulated seeds.

    python -m kvraft.sim --seeds 0-999            # one line per failing seed, then the summary
    python -m kvraft.sim --seeds 0-9999 --jobs 2  # in 2 processes
    python -m kvraft.sim --seed 42 --trace        # replay one seed, event by event
    python -m kvraft.sim --seeds 0-199 --bench    # seeds per minute

The last line of a sweep is exactly ``seeds: N, violations: V, liveness_failures: L``; the
exit status is non-zero when V + L > 0. This module is the only one in the simulator that
does I/O or reads the wall clock (for progress lines and ``--bench``).
"""

from __future__ import annotations

import argparse
import multiprocessing
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from kvraft.sim.plan import SimPlan
from kvraft.sim.runner import SeedResult, header, run_seed

__all__ = ["main"]


def _seed_range(text: str) -> range:
    lo, sep, hi = text.partition("-")
    try:
        start = int(lo)
        end = int(hi) if sep else start
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected A-B or N, got {text!r}") from None
    if end < start:
        raise argparse.ArgumentTypeError(f"empty range {text!r}")
    return range(start, end + 1)


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "kvraft"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    commit = out.stdout.strip() or "unknown"
    return commit + ("+dirty" if dirty.stdout.strip() else "")


def _run_quiet(args: tuple[int, int | None]) -> SeedResult:
    seed, safety_us = args
    return run_seed(seed, safety_us=safety_us)


def _results(seeds: range, jobs: int, safety_us: int | None) -> Iterator[SeedResult]:
    work = [(s, safety_us) for s in seeds]
    if jobs <= 1:
        for w in work:
            yield _run_quiet(w)
        return
    ctx = multiprocessing.get_context("fork" if sys.platform != "win32" else "spawn")
    with ctx.Pool(jobs) as pool:
        yield from pool.imap(_run_quiet, work, chunksize=4)


def _save_failure(directory: Path, res: SeedResult, commit: str, safety_us: int | None) -> None:
    """Re-run the seed with tracing on (the run is deterministic) and save everything."""
    directory.mkdir(parents=True, exist_ok=True)
    traced = run_seed(res.seed, trace=True, safety_us=safety_us)
    plan = SimPlan.from_seed(res.seed, safety_us)
    body = header(plan, commit) + traced.trace + [traced.summary(), traced.message]
    (directory / f"seed-{res.seed}.trace").write_text("\n".join(body) + "\n")


def _sweep(ns: argparse.Namespace) -> int:
    seeds: range = ns.seeds
    commit = git_commit()
    print(
        f"kvraft.sim seeds {seeds.start}-{seeds.stop - 1} commit {commit} jobs {ns.jobs}",
        file=sys.stderr,
    )
    violations = liveness = done = 0
    started = last_progress = time.monotonic()
    for res in _results(seeds, ns.jobs, ns.safety_us):
        done += 1
        if not res.ok:
            if res.status == "violation":
                violations += 1
            else:
                liveness += 1
            print(res.line(), flush=True)
            if ns.verbose:
                print(res.message, flush=True)
            if ns.save_failures:
                _save_failure(Path(ns.save_failures), res, commit, ns.safety_us)
        elif ns.verbose:
            print(res.summary(), flush=True)
        now = time.monotonic()
        if now - last_progress >= ns.progress_s:
            last_progress = now
            rate = done / (now - started) * 60
            print(
                f"progress: {done}/{len(seeds)} seeds, {violations} violations, "
                f"{liveness} liveness failures, {rate:.0f} seeds/min",
                file=sys.stderr,
                flush=True,
            )
    elapsed = time.monotonic() - started
    if ns.bench:
        print(
            f"bench: {done} seeds in {elapsed:.1f} s with {ns.jobs} job(s): {done / elapsed * 60:.1f} seeds/min"
        )
    print(f"seeds: {done}, violations: {violations}, liveness_failures: {liveness}")
    return 1 if violations or liveness else 0


def _replay(ns: argparse.Namespace) -> int:
    plan = SimPlan.from_seed(ns.seed, ns.safety_us)
    for line in header(plan, git_commit()):
        print(line)
    res = run_seed(ns.seed, trace=ns.trace, safety_us=ns.safety_us)
    if ns.trace:
        sys.stdout.write("".join(line + "\n" for line in res.trace))
    print(res.summary())
    if not res.ok:
        print(res.message)
    return 0 if res.ok else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kvraft.sim", description=__doc__.split("\n\n")[0])
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--seeds", type=_seed_range, help="a range A-B (inclusive) or one seed")
    which.add_argument("--seed", type=int, help="run one seed and print its plan and result")
    p.add_argument("--trace", action="store_true", help="with --seed: print every event")
    p.add_argument("--jobs", type=int, default=1, help="worker processes for --seeds")
    p.add_argument("--bench", action="store_true", help="print seeds per minute")
    p.add_argument("--save-failures", metavar="DIR", help="write a full trace of each failing seed")
    p.add_argument(
        "--safety-ms", type=int, default=None, help="length of the safety phase (default: plan's)"
    )
    p.add_argument(
        "--progress-s", type=float, default=5.0, help="seconds between progress lines on stderr"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="a summary line for every seed")
    ns = p.parse_args(argv)
    ns.safety_us = None if ns.safety_ms is None else ns.safety_ms * 1000
    if ns.seed is not None:
        return _replay(ns)
    return _sweep(ns)


if __name__ == "__main__":
    sys.exit(main())
