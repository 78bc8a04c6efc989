"""``python -m kvraft.bench paired``: an A/B of kvraft source trees that a busy machine
cannot fool as easily as two runs one after the other.

Each variant is a source tree (``git archive COMMIT | tar -x -C DIR``), optionally with
extra ``PYTHONPATH`` entries (e.g. a directory holding a ``sitecustomize.py`` that sets an
interpreter option). One 3-member cluster per variant is started up front; then short
bursts of the same load are run against each variant's leader in turn, round after round
(the order reversed every other round), so load that comes and goes on the machine falls
on every variant alike. Per burst it records the client's p50/p90 and rate, and per op
the CPU time and voluntary context switches (all threads) of the leader and of the
followers (mean), from ``/proc``. ``--loads`` items are ``CLIENTS:OPS`` (JSON puts of
100-byte values) or ``rCLIENTS:OPS`` (linearizable JSON ranges of the one key
``bench-key``, as ``server-vs-etcd``'s range row); their figures are keyed ``c64_...`` and
``r64_...``. Prints one JSON line per variant with the medians over
the rounds and the per-round values (and its ``target``: the tree, or ``etcd``). Linux only. Run under the benchmark lock::

    git archive HEAD~1 | tar -x -C /tmp/a; git archive HEAD | tar -x -C /tmp/b
    flock -x /tmp/kvraft-cpu.lock python -m kvraft.bench paired a=/tmp/a b=/tmp/b --rounds 3

A variant written ``NAME=etcd`` is a 3-member etcd cluster (the ``etcd`` binary, fsync on, as
``server-vs-etcd`` starts it) instead of a tree, so the issue's side-by-side can be read
from interleaved bursts too (``paired etcd=etcd kvraft=. --loads 1:600``): a box whose load
drifts between the two halves of ``server-vs-etcd`` moves both alike here. The load
generator is the first tree given (this checkout's when only etcd is).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from kvraft.server.local import LocalCluster, b64, post

__all__ = ["main", "parse_loads", "per_put"]

VALUE = ["--val-size", "100", "--key-space-size", "100000"]
ETCD = "etcd"


def _meter(cluster: LocalCluster) -> dict[str, tuple[float, int]]:
    """Per member: (CPU µs, voluntary context switches over all its threads)."""
    out = {}
    tick = os.sysconf("SC_CLK_TCK")
    for member in cluster.running():
        pid = member.pid
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu_us = (int(fields[11]) + int(fields[12])) * 1e6 / tick
        switches = 0
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/status") as status:
                for line in status:
                    if line.startswith("voluntary_ctxt_switches"):
                        switches += int(line.split()[1])
        out[member.name] = (cpu_us, switches)
    return out


def _loadavg() -> str:
    return Path("/proc/loadavg").read_text().strip()


def per_put(before: dict[str, tuple[float, int]], after: dict[str, tuple[float, int]], puts: int,
            leader: str) -> dict[str, float]:
    """CPU µs and context switches per put: the leader's, and the followers' mean."""
    followers = [name for name in after if name != leader and name in before]
    def delta(name: str, i: int) -> float:
        return (after[name][i] - before[name][i]) / puts
    return {
        "cpu_leader_us": round(delta(leader, 0), 1),
        "cpu_follower_us": round(sum(delta(n, 0) for n in followers) / max(1, len(followers)), 1),
        "switches_leader": round(delta(leader, 1), 2),
        "switches_follower": round(sum(delta(n, 1) for n in followers) / max(1, len(followers)), 2),
    }


def parse_loads(text: str) -> list[tuple[str, int, int]]:
    """``"1:300,r64:20000"`` -> ``[("put", 1, 300), ("range", 64, 20000)]``."""
    loads = []
    for item in text.split(","):
        clients, _, total = item.strip().partition(":")
        workload = "range" if clients.startswith("r") else "put"
        loads.append((workload, int(clients.removeprefix("r")), int(total)))
    return loads


def _burst(load_tree: str, url: str, workload: str, clients: int, total: int) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=load_tree)
    shape = ["--consistency", "l", "bench-key"] if workload == "range" else VALUE
    command = [sys.executable, "-m", "kvraft.bench", workload, "--endpoints", url, "--clients", str(clients),
               "--conns", str(clients), "--total", str(total), *shape]
    out = subprocess.run(command, capture_output=True, text=True, env=env, cwd="/", check=False, timeout=900)
    lines = out.stdout.strip().splitlines()
    if not lines:
        raise RuntimeError(f"load failed: {out.stderr[-2000:]}")
    summary: dict[str, Any] = json.loads(lines[-1])
    return summary


def main(_name: str, argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kvraft.bench paired")
    parser.add_argument("variants", nargs="+", help="NAME=TREE[:EXTRA_PYTHONPATH...], or NAME=etcd for a 3-member etcd")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--loads", default="1:300,64:5000",
                        help="CLIENTS:PUTS or rCLIENTS:RANGES (linearizable) per burst, comma-separated")
    args = parser.parse_args(argv)
    loads = parse_loads(args.loads)
    clusters: dict[str, tuple[LocalCluster, str, str]] = {}
    targets: dict[str, str] = {}  # variant -> "etcd" or its tree's absolute path
    first_tree = ""
    saved_path, saved_cwd = os.environ.get("PYTHONPATH"), os.getcwd()
    os.chdir("/")  # so the members import the variant's tree, not a kvraft/ under the cwd
    try:
        for spec in args.variants:
            name, path = spec.split("=", 1)
            if path == ETCD:
                targets[name] = ETCD
                cluster = LocalCluster(3, binary="etcd", token=f"paired-{name}")
                clusters[name] = (cluster, "", "")
                cluster.start(120)
                continue
            parts = [os.path.abspath(os.path.join(saved_cwd, part)) for part in path.split(":")]
            targets[name] = parts[0]
            first_tree = first_tree or parts[0]
            os.environ["PYTHONPATH"] = ":".join(parts)
            cluster = LocalCluster(3, binary="kvraft", token=f"paired-{name}")
            clusters[name] = (cluster, "", "")
            cluster.start(120)
        first_tree = first_tree or str(Path(__file__).resolve().parents[2])
        for name, (cluster, _, _) in clusters.items():
            leader = cluster.wait_leader(60)
            url = cluster.url(leader)
            post(url, "/v3/kv/put", {"key": b64("bench-key"), "value": b64("v" * 100)})
            clusters[name] = (cluster, url, leader)
        print(f"# start {time.strftime('%H:%M:%S')} load {_loadavg()}", flush=True)
        results: dict[str, dict[str, list[float]]] = {name: {} for name in clusters}
        names = list(clusters)
        for round_ in range(args.rounds):
            for name in names if round_ % 2 == 0 else names[::-1]:
                cluster, url, leader = clusters[name]
                for workload, clients, total in loads:
                    before = _meter(cluster)
                    summary = _burst(first_tree, url, workload, clients, total)
                    figures = per_put(before, _meter(cluster), max(1, summary["ok_ops"]), leader)
                    figures.update(rate=summary["ops_per_s"], p50_ms=summary["latency_ms_p50"],
                                   p90_ms=summary["latency_ms_p90"])
                    for key, value in figures.items():
                        tag = "r" if workload == "range" else "c"
                        results[name].setdefault(f"{tag}{clients}_{key}", []).append(value)
        for name, series in results.items():
            medians = {key: round(statistics.median(values), 3) for key, values in series.items()}
            print(json.dumps({"variant": name, "target": targets[name], "median": medians, "rounds": series}),
                  flush=True)
        print(f"# end {time.strftime('%H:%M:%S')} load {_loadavg()}", flush=True)
    finally:
        os.chdir(saved_cwd)
        if saved_path is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved_path
        for cluster, _, _ in clusters.values():
            cluster.stop()
    return 0
