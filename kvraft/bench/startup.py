"""How long a cluster takes from the start of its processes to its first acknowledged write.

    python -m kvraft.bench startup [--rounds 5] [--compare-etcd /usr/bin/etcd]

Cases, each ``--rounds`` times, on 127.0.0.1 with default flags: a new one-member cluster, a
new three-member cluster (all started at once), and that three-member cluster stopped
(SIGTERM) and started again on its data. Systems: kvraft, kvraft with
``--initial-election-tick-advance=false`` (the election timer starts at zero, as before the
flag), and etcd when ``--compare-etcd`` names it. A round starts the processes and puts one key
through the first member every 10 ms until the put is answered; the seconds from the first
process start to that answer are recorded (so Python's or Go's own start-up is included).
Progress on stderr, one JSON summary last on stdout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kvraft.bench import compared_etcd
from kvraft.server.local import LocalCluster, b64, post

__all__ = ["main"]

SYSTEMS = {
    "kvraft": ("kvraft", []),
    "kvraft, tick advance off": ("kvraft", ["--initial-election-tick-advance=false"]),
    "etcd": ("etcd", []),
}


def _first_put(cluster: LocalCluster, give_up_s: float = 60.0) -> float:
    """Seconds until a put through m0 is answered (monotonic clock, when it was)."""
    deadline = time.monotonic() + give_up_s
    url = cluster.url("m0")
    while time.monotonic() < deadline:
        try:
            code, _body = post(url, "/v3/kv/put", {"key": b64("startup"), "value": b64("v")}, timeout_s=1.0)
            if code == 200:
                return time.monotonic()
        except OSError:
            pass
        time.sleep(0.01)
    raise TimeoutError(f"no write answered within {give_up_s} s; logs in {cluster.base_dir}")


def _start_all(cluster: LocalCluster) -> float:
    started = time.monotonic()
    initial = cluster.initial_cluster()
    for name in cluster.members:
        cluster.start_member(name, initial, "new")
    return _first_put(cluster) - started


def one_round(binary: str, extra: list[str], size: int, base: Path) -> dict[str, float]:
    cluster = LocalCluster(size, base, binary=binary, extra_args=extra)
    try:
        out = {"new": _start_all(cluster)}
        if size > 1:
            for name in cluster.members:
                cluster.stop_member(name)
            out["restart"] = _start_all(cluster)
        return out
    finally:
        cluster.stop()


def _summary(values: list[float]) -> dict[str, float]:
    return {"median_s": round(statistics.median(values), 3), "min_s": round(min(values), 3),
            "max_s": round(max(values), 3)}


def main(_name: str, argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kvraft.bench startup", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--compare-etcd", metavar="ETCD", default="",
                        help="also run etcd (checked to exist; LocalCluster runs the etcd on PATH)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    compared_etcd(parser, args.compare_etcd)
    systems = [name for name in SYSTEMS if name != "etcd" or args.compare_etcd]
    results: dict[str, dict[str, list[float]]] = {name: {} for name in systems}
    with tempfile.TemporaryDirectory(prefix="kvraft-bench-startup-") as tmp:
        for index in range(args.rounds):
            for system in systems:  # interleaved, so a slow moment of the machine hits every system
                binary, extra = SYSTEMS[system]
                if system == "etcd":
                    binary = args.compare_etcd  # (the path given: "etcd" ran whichever was on PATH)
                for size in (1, 3):
                    base = Path(tmp) / f"{index}-{binary}-{len(extra)}-{size}"
                    for case, seconds in one_round(binary, extra, size, base).items():
                        key = f"{case} {size}-member"
                        results[system].setdefault(key, []).append(seconds)
                        print(f"round {index + 1}/{args.rounds} {system}: {key} {seconds:.2f} s", file=sys.stderr,
                              flush=True)
    summary: dict[str, Any] = {system: {case: _summary(values) for case, values in cases.items()}
                               for system, cases in results.items()}
    print(json.dumps({"rounds": args.rounds, "results": summary}))
    return 0
