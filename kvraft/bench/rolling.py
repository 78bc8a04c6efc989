"""Writes during a rolling restart: how long does a client's put wait while each member of the
cluster is restarted in turn, as for an upgrade? And while the leader is removed?

    python -m kvraft.bench rolling-restart [--rounds 3] [--compare-etcd /usr/bin/etcd]
    python -m kvraft.bench remove-leader [--rounds 5] [--via leader|follower] [--compare-etcd /usr/bin/etcd]

Each round starts a new 3-member cluster on 127.0.0.1 (default flags: heartbeat 100 ms,
election 1000 ms). One client puts without pause through every member's URL (the client of
``kvraft.client``, as ``kvctl`` has it: on a failed connection it goes on to the next
endpoint; each put waits up to 20 s). Each member in turn, the leader last, is stopped by
SIGTERM, started again on its data, and waited for until it serves; then 1 s passes before
the next. Reported per system: the puts made and failed, the put latency's p50, p99 and max
over the whole restart, the slowest put while a follower restarted and while the leader did,
and the longest time without a put answered. A leader stopped gracefully hands its
leadership over first (kvraft since session 55, etcd since 3.3); without that the writes stall
for an election timeout. Progress on stderr; the last line on stdout is a JSON summary.

``remove-leader``: the same client puts through the two followers while ``member remove`` of
the live leader goes through the leader itself (``--via leader``) or a follower, after 6 s of
connections (the strict reconfig check). Reported per round: the longest time without a put
answered, the failed puts, and the slowest put (its start after the removal's, its seconds).
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from kvraft.bench import add_compare_etcd, compared_etcd
from kvraft.client import ClientError, SyncClient
from kvraft.server.local import LocalCluster
from kvraft.server.reconfig import HEALTH_INTERVAL_S

__all__ = ["Writer", "main", "one_round", "remove_leader_round"]

PAUSE_S = 1.0


class Writer:
    """One client putting without pause through all ``urls`` (keys ``prefix`` + 0..99, 100-byte
    values): each put's (start, end, ok)."""

    def __init__(self, urls: list[str], prefix: str = "rolling/") -> None:
        self.urls = urls
        self.prefix = prefix
        self.spans: list[tuple[float, float, bool]] = []
        self.errors: collections.Counter[str] = collections.Counter()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with SyncClient(self.urls, request_timeout_s=20.0) as client:
            n = 0
            while not self.stop.is_set():
                n += 1
                began = time.monotonic()
                try:
                    client.put(f"{self.prefix}{n % 100}", "x" * 100)
                    ok = True
                except ClientError as exc:
                    ok = False
                    self.errors[str(exc)[:120]] += 1
                self.spans.append((began, time.monotonic(), ok))


def one_round(binary: str, base: Path) -> dict[str, Any]:
    """One cluster restarted member by member under a writer: the round's figures."""
    cluster = LocalCluster(3, base, binary=binary)
    try:
        cluster.start()
        leader = cluster.wait_ready()
        order = [name for name in sorted(cluster.members) if name != leader] + [leader]
        writer = Writer([cluster.url(name) for name in sorted(cluster.members)])
        writer.thread.start()
        time.sleep(PAUSE_S)
        windows: list[tuple[str, float, float]] = []
        for name in order:
            began = time.monotonic()
            cluster.stop_member(name)
            cluster.start_member(name)
            cluster.wait_ready()
            windows.append(("leader" if name == leader else "follower", began, time.monotonic()))
            time.sleep(PAUSE_S)
        writer.stop.set()
        writer.thread.join(60)
        return _figures(writer.spans, windows) | {"errors": dict(writer.errors.most_common(3))}
    finally:
        cluster.stop()


def remove_leader_round(binary: str, base: Path, via: str) -> dict[str, Any]:
    """One cluster whose live leader is removed under a writer: the round's figures."""
    cluster = LocalCluster(3, base, binary=binary)
    try:
        cluster.start()
        leader = cluster.wait_ready()
        time.sleep(HEALTH_INTERVAL_S + 1.0)
        ids = {name: int((cluster.status(name) or {})["header"]["member_id"]) for name in cluster.members}
        followers = [name for name in sorted(cluster.members) if name != leader]
        writer = Writer([cluster.url(name) for name in followers])
        writer.thread.start()
        time.sleep(PAUSE_S)
        with SyncClient([cluster.url(leader if via == "leader" else followers[0])], request_timeout_s=20.0) as admin:
            began = time.monotonic()
            admin.member_remove(ids[leader])
        time.sleep(3.0)
        writer.stop.set()
        writer.thread.join(60)
        spans = [(start, end, ok) for start, end, ok in writer.spans if end >= began]
        slowest = max(spans, key=lambda span: span[1] - span[0])
        figures = _figures(spans, [])
        return {"longest_gap_s": figures["longest_gap_s"], "failed": figures["failed"],
                "slowest_put_after_s": round(slowest[0] - began, 3), "slowest_put_s": round(slowest[1] - slowest[0], 3),
                "errors": dict(writer.errors.most_common(3))}
    finally:
        cluster.stop()


def _figures(spans: list[tuple[float, float, bool]], windows: list[tuple[str, float, float]]) -> dict[str, Any]:
    def slowest(kind: str) -> float:
        return max((end - start for start, end, _ in spans
                    for what, w_start, w_end in windows if what == kind and end >= w_start and start <= w_end),
                   default=0.0)
    latencies = sorted(end - start for start, end, ok in spans if ok)
    answered = sorted(end for _, end, ok in spans if ok)
    gaps = [b - a for a, b in itertools.pairwise(answered)]
    return {
        "puts": len(latencies), "failed": sum(1 for *_, ok in spans if not ok),
        "p50_ms": round(statistics.median(latencies) * 1000, 2) if latencies else None,
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2) if latencies else None,
        "max_s": round(latencies[-1], 3) if latencies else None,
        "slowest_follower_restart_s": round(slowest("follower"), 3),
        "slowest_leader_restart_s": round(slowest("leader"), 3),
        "longest_gap_s": round(max(gaps, default=0.0), 3),
    }


def main(name: str, argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m kvraft.bench {name}", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3 if name == "rolling-restart" else 5)
    if name == "remove-leader":
        parser.add_argument("--via", choices=("leader", "follower"), default="leader",
                            help="the member the removal is sent to (default: the leader itself)")
    add_compare_etcd(parser)
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds takes at least 1")
    systems = {"kvraft": "kvraft"}
    if compared_etcd(parser, args.compare_etcd):
        systems["etcd"] = args.compare_etcd
    report: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="kvraft-rolling-") as tmp:
        for n in range(args.rounds):  # (systems interleaved: the box's moods fall on both)
            for system, binary in systems.items():
                base = Path(tmp) / f"{system}-{n}"
                figures = one_round(binary, base) if name == "rolling-restart" else \
                    remove_leader_round(binary, base, args.via)
                report.setdefault(system, []).append(figures)
                print(f"{system} round {n + 1}/{args.rounds}: {json.dumps(figures)}", file=sys.stderr, flush=True)
    for system, rounds in report.items():
        if name == "rolling-restart":
            print(f"{system:7} " + "; ".join(
                f"max {r['max_s']} s (leader {r['slowest_leader_restart_s']}, follower {r['slowest_follower_restart_s']}), "
                f"gap {r['longest_gap_s']} s, failed {r['failed']}/{r['puts'] + r['failed']}" for r in rounds), flush=True)
        else:
            print(f"{system:7} " + "; ".join(f"gap {r['longest_gap_s']} s (slowest put {r['slowest_put_s']} s), "
                                             f"failed {r['failed']}" for r in rounds), flush=True)
    print(json.dumps(report))
    return 0
