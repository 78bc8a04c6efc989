"""``python -m kvraft.bench watch-suite --binary kvraft|etcd``: start a 3-member cluster on
127.0.0.1 (kvraft, or etcd from PATH), run watch-fanout (watchers on the leader, its RSS
sampled), lease-keepalive and lock against it, stop it, print one JSON line per run.
The same flags and loads for both binaries, so the figures sit side by side."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from typing import Any

from kvraft.server.local import LocalCluster

__all__ = ["main"]


def _run(workload: str, argv: list[str]) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-m", "kvraft.bench", workload, *argv],
                          capture_output=True, text=True, timeout=1500)
    if done.returncode:
        raise RuntimeError(f"{workload} failed: {done.stderr[-2000:]}")
    summary: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])  # the workload's JSON line
    return summary


def main(_workload: str, argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kvraft.bench watch-suite")
    parser.add_argument("--binary", choices=["kvraft", "etcd"], default="kvraft")
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--watchers-per-stream", type=int, default=100)
    parser.add_argument("--puts", type=int, default=40)
    parser.add_argument("--put-rates", default="10,0")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--total", type=int, default=3000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kvraft-bench-") as base:
        cluster = LocalCluster(3, base, binary=args.binary)
        try:
            cluster.start(timeout_s=120)
            leader = cluster.wait_leader()
            url = cluster.url(leader)
            pid = str(cluster.members[leader].pid)
            results = []
            for rate in args.put_rates.split(","):
                results.append(_run("watch-fanout", [
                    "--endpoints", url, "--streams", str(args.streams), "--watchers-per-stream",
                    str(args.watchers_per_stream), "--puts", str(args.puts), "--put-rate", rate,
                    "--pid", pid, "--key", f"fanout-{rate}", "--timeout", "600",
                ]))
            endpoints = ",".join(m.client_url for m in cluster.running())
            results.append(_run("lease-keepalive", ["--endpoints", endpoints, "--clients", str(args.clients),
                                                    "--total", str(args.total)]))
            results.append(_run("lock", ["--endpoints", endpoints, "--clients", str(args.clients),
                                         "--total", str(args.total // 3)]))
        finally:
            cluster.stop()
    for result in results:
        print(json.dumps({"binary": args.binary, **result}, sort_keys=True))
    return 0
