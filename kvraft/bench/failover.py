"""Writes right after the leader dies: does a write through a follower succeed, and when?

    python -m kvraft.bench failover [--rounds 5] [--what put,member-remove,put-to-leader]
                                    [--fault kill,freeze,term] [--compare-etcd /usr/bin/etcd]

Each round starts a new 3-member cluster on 127.0.0.1 (default flags: heartbeat 100 ms,
election 1000 ms), writes one key through a follower, takes the leader away and at once sends
one request through that follower: a ``put`` of a new key, or ``member remove`` of the old
leader (what an operator replacing the machine runs). The fault: ``kill`` (SIGKILL: its
connections close, so the follower's forward never leaves it) or ``freeze`` (SIGSTOP until the
answer came, then SIGCONT: its connections stay up, so the forward is written into them and
lost with the leader) or ``term`` (SIGTERM, a graceful stop as for a restart or an upgrade: a
leader hands its leadership over first, as etcd's does; the request is sent right after the
signal, and the time includes the handover). The client waits up to 20 s and does not retry. Reported per system,
fault and request: how many succeeded, the seconds from the fault to the answer (median and
max over the successes), the errors of the others, and for a put the rounds where the key's
version ended above 1 (applied twice). kvraft proposes a lost forward again to the next leader,
once (docs/design/server.md, "A forward that never left", "A proposal lost to a leader
change"); etcd drops it and answers after its request timeout.

``put-to-leader`` (``kill`` only): the client's first endpoint is the leader, and the leader is
killed 0-4 ms after the put was sent (a timer, seeded by the round), so some puts commit and
lose their answer with the connection, others never commit. kvraft's client numbers the put
(``Kvraft-Request-Id``) and sends it again to the next member, which applies it at most once
(docs/design/server.md, "Writes applied at most once"); ``kvraft-plain`` is the same client
with ``request_ids=False`` (and etcd gets the put plain too): the lost answer is an error
("may have been applied"). Progress on stderr; the last line on stdout is a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
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

__all__ = ["main", "one_round"]

WHAT = ("put", "member-remove", "put-to-leader")
FAULTS = ("kill", "freeze", "term")


def one_round(binary: str, what: str, base: Path, fault: str = "kill", seed: int = 0,
              request_ids: bool = True) -> dict[str, Any]:
    """One cluster, one fault, one request: {"ok", "seconds", "error", "version"} (the put
    key's version once all is settled; 0 when not a put or not read)."""
    cluster = LocalCluster(3, base, binary=binary)
    try:
        cluster.start()
        leader = cluster.wait_leader()
        if what == "put-to-leader":
            return _put_to_leader(cluster, leader, random.Random(seed).uniform(0.0, 0.004), request_ids)
        follower = next(name for name in cluster.members if name != leader)
        status = cluster.status(leader) or {}
        leader_id = int(status.get("header", {}).get("member_id", 0))
        with SyncClient([cluster.url(follower)], request_timeout_s=20.0) as client:
            client.put("failover/warm", "x")
            if what == "member-remove" and fault in ("freeze", "term"):
                # a frozen or stopping leader is still connected: the strict reconfig check (etcd's
                # default, and kvraft's) counts only connections up for 5 s
                time.sleep(HEALTH_INTERVAL_S + 1.0)
            pid = cluster.members[leader].pid
            if fault == "kill":
                cluster.stop_member(leader, signal.SIGKILL)
            elif fault == "term" and pid is not None:
                os.kill(pid, signal.SIGTERM)  # (not waited for: the request goes at once)
            elif pid is not None:
                os.kill(pid, signal.SIGSTOP)
            started = time.monotonic()
            try:
                if what == "put":
                    client.put("failover/after", "y")
                else:
                    client.member_remove(leader_id)
                result = {"ok": True, "seconds": time.monotonic() - started, "error": "", "version": 0}
            except ClientError as exc:
                result = {"ok": False, "seconds": time.monotonic() - started, "error": str(exc), "version": 0}
            finally:
                if fault == "freeze" and pid is not None:
                    os.kill(pid, signal.SIGCONT)
            if what == "put":
                result["version"] = _settled_version(client, "failover/after")
            return result
    finally:
        cluster.stop()


def _put_to_leader(cluster: LocalCluster, leader: str, delay_s: float, request_ids: bool) -> dict[str, Any]:
    urls = [cluster.url(leader), *(cluster.url(n) for n in cluster.members if n != leader)]
    with SyncClient(urls, request_timeout_s=20.0, request_ids=request_ids) as client:
        client.put("failover/warm", "x")
        killer = threading.Timer(delay_s, cluster.stop_member, (leader, signal.SIGKILL))
        started = time.monotonic()
        killer.start()
        try:
            client.put("failover/after", "y")
            result = {"ok": True, "seconds": time.monotonic() - started, "error": "", "version": 0}
        except ClientError as exc:
            result = {"ok": False, "seconds": time.monotonic() - started, "error": str(exc)[:160], "version": 0}
        killer.join()
        result["version"] = _settled_version(client, "failover/after")
        return result


def _settled_version(client: SyncClient, key: str) -> int:
    """The key's version after a later write commits (a woken leader has had its say)."""
    time.sleep(2.0)  # (a frozen leader, woken, reads its sockets and steps down)
    for _ in range(20):
        try:
            client.put("failover/fence", "f")
            found = client.get(key).kvs
            return int(found[0].version) if found else 0
        except ClientError:
            time.sleep(0.5)
    return 0


def summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    times = [r["seconds"] for r in results if r["ok"]]
    errors = sorted({r["error"] for r in results if not r["ok"]})
    return {
        "rounds": len(results), "ok": len(times),
        "p50_s": round(statistics.median(times), 3) if times else None,
        "max_s": round(max(times), 3) if times else None,
        "failed_after_s": [round(r["seconds"], 2) for r in results if not r["ok"]], "errors": errors,
        "applied_twice": sum(1 for r in results if r.get("version", 0) > 1),
        "failed_but_applied": sum(1 for r in results if not r["ok"] and r.get("version", 0) >= 1),
    }


def main(_name: str, argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kvraft.bench failover", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--what", default=",".join(WHAT), help="put, member-remove, or both (comma-separated)")
    parser.add_argument("--fault", default="kill", help="kill, freeze, term, or several (comma-separated)")
    add_compare_etcd(parser)
    args = parser.parse_args(argv)
    whats = [w for w in args.what.split(",") if w]
    faults = [f for f in args.fault.split(",") if f]
    if not whats or any(w not in WHAT for w in whats) or args.rounds < 1:
        parser.error(f"--what takes {', '.join(WHAT)}; --rounds at least 1")
    if not faults or any(f not in FAULTS for f in faults):
        parser.error(f"--fault takes {', '.join(FAULTS)}")
    systems = ["kvraft", "kvraft-plain"] if "put-to-leader" in whats else ["kvraft"]
    if "put-to-leader" in whats and faults != ["kill"]:
        parser.error("put-to-leader takes --fault kill only")
    if compared_etcd(parser, args.compare_etcd):
        systems.append("etcd")
    report: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="kvraft-failover-") as tmp:
        for system in systems:
            for fault in faults:
                for what in whats:
                    name = f"{system} {what}" if faults == ["kill"] else f"{system} {fault} {what}"
                    if system == "kvraft-plain" and what != "put-to-leader":
                        continue
                    results = []
                    for n in range(args.rounds):
                        binary = {"kvraft-plain": "kvraft", "etcd": args.compare_etcd}.get(system, system)
                        result = one_round(binary, what, Path(tmp) / f"{system}-{fault}-{what}-{n}", fault, seed=n,
                                           request_ids=system != "kvraft-plain")
                        results.append(result)
                        outcome = "ok" if result["ok"] else f"failed: {result['error']}"
                        print(f"{name} round {n + 1}/{args.rounds}: {outcome} after {result['seconds']:.2f} s",
                              file=sys.stderr, flush=True)
                    report[name] = line = summary(results)
                    print(f"{name:27} {line['ok']}/{line['rounds']} succeeded, p50 {line['p50_s']} s, "
                          f"max {line['max_s']} s; failed after {line['failed_after_s']} s {line['errors']}; "
                          f"applied twice {line['applied_twice']}, failed but applied {line['failed_but_applied']}",
                          flush=True)
    print(json.dumps(report))
    return 0
