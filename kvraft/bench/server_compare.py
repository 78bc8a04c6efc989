"""``python -m kvraft.bench server-vs-etcd``: the issue's side-by-side targets.

Starts a 3-member etcd 3.4 cluster, then a 3-member kvraft cluster (one at a time, each on
free 127.0.0.1 ports, fsync on), and runs the same ``kv_load`` workloads against each
cluster's leader, in a subprocess each (so the load generator has its own interpreter):

- put, 1 client (latency p50);
- put at saturation (``--clients`` workers, 100-byte values), JSON;
- linearizable range at saturation, JSON;
- put at saturation through msgpack, one put per request (kvraft only);
- put through msgpack batches (kvraft only): ``BATCH`` puts per ``/v3/kv/batch`` request,
  16 clients, 5x ``--total`` puts; its figure is puts per second (``ops_per_s``).

Each run's line also carries the CPU time (utime + stime from ``/proc/<pid>/stat``) that
every member process and the load generator spent during it, in microseconds per put or
read (``cpu_us_per_op``: ``leader``, ``follower`` (each), ``generator``), and the leader's
log entries per op (``entries_per_op``). These depend on the box's load much less than
the rates do (but not nothing: at load 10+ they rise by 20-50%, the generator's too). ``--runs`` picks runs by name
prefix (``--runs "put msgpack"``).

Prints one JSON line per run and a table. Run alone: ``flock -x /tmp/kvraft-cpu.lock``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Any

from kvraft.server.local import LocalCluster, b64, post

__all__ = ["main"]


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process so far (0.0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK  # fields 14 and 15 of proc(5)


def _load(url: str, workload: str, *args: str, members: dict[str, int] | None = None) -> dict[str, Any]:
    """Run one load in a subprocess; with ``members`` (role -> pid), add the CPU each
    member and the generator spent, per op (``cpu_us_per_op``)."""
    command = [sys.executable, "-m", "kvraft.bench", workload, "--endpoints", url, *args]
    before = {role: cpu_seconds(pid) for role, pid in (members or {}).items()}
    children = os.times()
    out = subprocess.run(command, capture_output=True, text=True, check=False, timeout=900)
    spent = {role: cpu_seconds(pid) - before[role] for role, pid in (members or {}).items()}
    after = os.times()
    lines = out.stdout.strip().splitlines()
    if not lines:
        raise RuntimeError(f"{workload} failed: {out.stderr[-2000:]}")
    summary: dict[str, Any] = json.loads(lines[-1])
    ops = summary.get("ok_ops") or summary.get("ok") or 0
    if members and ops:
        spent["generator"] = (after.children_user - children.children_user) + (
            after.children_system - children.children_system
        )
        summary["cpu_us_per_op"] = {role: round(seconds * 1e6 / ops, 1) for role, seconds in spent.items()}
    return summary


BATCH = 100


def _runs(binary: str, clients: int, total: int) -> list[tuple[str, list[str], str]]:
    value = ["--val-size", "100", "--key-space-size", "100000"]
    runs = [
        ("put c=1", ["--clients", "1", "--conns", "1", "--total", str(max(500, total // 10)), *value], "put"),
        (f"put c={clients}", ["--clients", str(clients), "--conns", str(clients), "--total", str(total), *value], "put"),
        (
            f"range l c={clients}",
            ["--clients", str(clients), "--conns", str(clients), "--total", str(total), "--consistency", "l", "bench-key"],
            "range",
        ),
    ]
    if binary == "kvraft":
        runs.append(
            (
                f"put msgpack c={clients}",
                ["--clients", str(clients), "--conns", str(clients), "--total", str(total), "--encoding", "msgpack", *value],
                "put",
            )
        )
        runs.append(
            (
                f"put msgpack batch={BATCH}",
                ["--clients", "16", "--conns", "16", "--total", str(total * 5), "--encoding", "msgpack",
                 "--batch", str(BATCH), *value],
                "put",
            )
        )
    return runs


def _raft_index(url: str) -> int | None:
    try:
        status, doc = post(url, "/v3/maintenance/status", {})
        return int(doc["raftIndex"]) if status == 200 else None
    except (OSError, KeyError, TypeError, ValueError):
        return None


def measure(binary: str, clients: int, total: int, only: list[str] | None = None) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    with LocalCluster(3, binary=binary, token=f"bench-{binary}") as cluster:
        cluster.start(120)
        leader = cluster.wait_leader(60)
        url = cluster.url(leader)
        post(url, "/v3/kv/put", {"key": b64("bench-key"), "value": b64("v" * 100)})
        for name, args, workload in _runs(binary, clients, total):
            if only and not any(name.startswith(prefix) for prefix in only):
                continue
            if cluster.leader() != leader:
                raise RuntimeError(f"{binary}: the leader changed during the runs")
            members, n = {}, 0
            for member_name, member in cluster.members.items():
                if member.pid is not None:
                    n += member_name != leader
                    members["leader" if member_name == leader else f"follower{n}"] = member.pid
            index = _raft_index(url)
            summary = _load(url, workload, *args, members=members)
            if index is not None and summary.get("ok_ops"):
                after = _raft_index(url)
                if after is not None:  # log entries per op: how many ops shared an entry
                    summary["entries_per_op"] = round((after - index) / summary["ok_ops"], 3)
            summary["target"] = binary
            results[name] = summary
            print(json.dumps({"run": name, **summary}, sort_keys=True), flush=True)
    return results


def main(_name: str, argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kvraft.bench server-vs-etcd")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--total", type=int, default=20000)
    parser.add_argument("--only", choices=["etcd", "kvraft"], default=None)
    parser.add_argument("--runs", action="append", default=None,
                        help="run only the runs whose name starts with this (repeatable)")
    args = parser.parse_args(argv)
    binaries = [args.only] if args.only else ["etcd", "kvraft"]
    table = {binary: measure(binary, args.clients, args.total, args.runs) for binary in binaries}
    print(f"\n{'run':<22}" + "".join(f"{b:>28}" for b in binaries))
    names = list(dict.fromkeys(name for results in table.values() for name in results))
    for name in names:
        cells = []
        for binary in binaries:
            r = table[binary].get(name)
            rate = r.get("ops_per_s", r["requests_per_s"]) if r else 0.0
            cells.append(f"{rate:>10.0f}/s p50 {r['latency_ms_p50']:>6.2f}ms" if r else f"{'-':>28}")
        print(f"{name:<22}" + "".join(f"{c:>28}" for c in cells))
    return 0
