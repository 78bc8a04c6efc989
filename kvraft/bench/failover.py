"""Writes right after the leader dies: does a write through a follower succeed, and when?

    python -m kvraft.bench failover [--rounds 5] [--what put,member-remove] [--compare-etcd /usr/bin/etcd]

Each round starts a new 3-member cluster on 127.0.0.1 (default flags: heartbeat 100 ms,
election 1000 ms), writes one key through a follower, SIGKILLs the leader, and at once sends
one request through that follower: a ``put`` of a new key, or ``member remove`` of the dead
leader (what an operator replacing the machine runs). The client waits up to 20 s and does not
retry. Reported per system and request: how many succeeded, the seconds from the kill to the
answer (median and max over the successes), and the errors of the others. kvraft proposes a
forward that never reached the dead leader again to the next one (docs/design/server.md, "A
forward that never left"); etcd drops it and answers after its request timeout. Progress on
stderr; the last line on stdout is a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kvraft.client import ClientError, SyncClient
from kvraft.server.local import LocalCluster

__all__ = ["main", "one_round"]

WHAT = ("put", "member-remove")


def one_round(binary: str, what: str, base: Path) -> dict[str, Any]:
    """One cluster, one kill, one request: {"ok", "seconds", "error"}."""
    cluster = LocalCluster(3, base, binary=binary)
    try:
        cluster.start()
        leader = cluster.wait_leader()
        follower = next(name for name in cluster.members if name != leader)
        status = cluster.status(leader) or {}
        leader_id = int(status.get("header", {}).get("member_id", 0))
        with SyncClient([cluster.url(follower)], request_timeout_s=20.0) as client:
            client.put("failover/warm", "x")
            cluster.stop_member(leader, signal.SIGKILL)
            started = time.monotonic()
            try:
                if what == "put":
                    client.put("failover/after", "y")
                else:
                    client.member_remove(leader_id)
                return {"ok": True, "seconds": time.monotonic() - started, "error": ""}
            except ClientError as exc:
                return {"ok": False, "seconds": time.monotonic() - started, "error": str(exc)}
    finally:
        cluster.stop()


def summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    times = [r["seconds"] for r in results if r["ok"]]
    errors = sorted({r["error"] for r in results if not r["ok"]})
    return {
        "rounds": len(results), "ok": len(times),
        "p50_s": round(statistics.median(times), 3) if times else None,
        "max_s": round(max(times), 3) if times else None,
        "failed_after_s": [round(r["seconds"], 2) for r in results if not r["ok"]], "errors": errors,
    }


def main(_name: str, argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kvraft.bench failover", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--what", default=",".join(WHAT), help="put, member-remove, or both (comma-separated)")
    parser.add_argument("--compare-etcd", metavar="ETCD", default="", help="also run etcd (a path to its binary)")
    args = parser.parse_args(argv)
    whats = [w for w in args.what.split(",") if w]
    if not whats or any(w not in WHAT for w in whats) or args.rounds < 1:
        parser.error(f"--what takes {', '.join(WHAT)}; --rounds at least 1")
    systems = ["kvraft"]
    if args.compare_etcd:
        if shutil.which(args.compare_etcd) is None:
            parser.error(f"--compare-etcd: {args.compare_etcd} is not an executable")
        systems.append("etcd")
    report: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="kvraft-failover-") as tmp:
        for system in systems:
            for what in whats:
                results = []
                for n in range(args.rounds):
                    result = one_round(system, what, Path(tmp) / f"{system}-{what}-{n}")
                    results.append(result)
                    outcome = "ok" if result["ok"] else f"failed: {result['error']}"
                    print(f"{system} {what} round {n + 1}/{args.rounds}: {outcome} after {result['seconds']:.2f} s",
                          file=sys.stderr, flush=True)
                report[f"{system} {what}"] = summary(results)
                line = report[f"{system} {what}"]
                print(f"{system:6} {what:13} {line['ok']}/{line['rounds']} succeeded, p50 {line['p50_s']} s, "
                      f"max {line['max_s']} s; failed after {line['failed_after_s']} s {line['errors']}", flush=True)
    print(json.dumps(report))
    return 0
