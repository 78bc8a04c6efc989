"""Writes through network faults, kvraft and etcd side by side: how many puts does a cluster
acknowledge while its peer links lose packets, or while its network keeps changing shape?

    python -m kvraft.bench net-faults [--fault lossy|flapping] [--rounds 2] [--seed 0]
                                      [--writers 4] [--compare-etcd /usr/bin/etcd]
                                      [--etcd-arg=--pre-vote ...]

Each round starts a new cluster on 127.0.0.1 with default flags (heartbeat 100 ms, election
1000 ms) whose members run under group ids of their own, so that iptables can fault their
peer traffic (``kvraft.robustness.netfault``: needs root; client traffic is never touched).
``--writers`` clients put without pause, each through every member's URL starting at a
different one (the client of ``kvraft.client``, as ``kvctl`` has it: on a failed connection
or a member without a leader it goes on to the next; each put waits up to 20 s).

- ``lossy`` (3 members): 5 s without faults, then every packet on a peer connection is lost
  with probability 1 %, 5 %, 10 %, 30 % in turn, 8 s each with 2 s healed between, then 5 s
  healed. Both ways of every peer connection lose alike, whoever dialed it (etcd's streams
  are dialed by the receiver, kvraft's connections by the sender); packets are dropped as
  they arrive, so TCP has to find each loss as on a real network (``NetFaults.lossy``).
- ``flapping`` (5 members): 5 s without faults, then 30 s in which the network takes a new
  shape every 0.3-2 s (random halves, one member isolated, or a bridge: Jepsen's
  symmetric partitions; the sequence and the durations come from ``--seed`` and are the
  same for both systems), then 5 s healed.

Reported per phase: the puts acknowledged and the rate, the puts that failed, the longest
time without an acknowledged put, the TCP segments sent and retransmitted per acknowledged
put (``/proc/net/snmp``, the whole machine: client traffic included), and how far the Raft
term rose (the highest term any
member reports; kvraft runs pre-vote, etcd 3.4 does not by default, so etcd's terms also
count elections that could not win: ``--etcd-arg=--pre-vote`` turns it on, as etcd 3.5 has
it by default). Progress on stderr; the last line on stdout is JSON.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kvraft.bench import add_compare_etcd, compared_etcd
from kvraft.bench.rolling import Writer
from kvraft.robustness.cluster import RobustCluster
from kvraft.robustness.netfault import NetFaults, available
from kvraft.robustness.shapes import SYMMETRIC_SHAPES, random_shape

__all__ = ["FAULTS", "main", "one_round", "phase_figures"]

FAULTS = {"lossy": 3, "flapping": 5}  # fault -> members
LOSSES = (0.01, 0.05, 0.1, 0.3)
CALM_S = 5.0
LOSS_S = 8.0
HEALED_S = 2.0
FLAP_S = 30.0


def one_round(binary: str, base: Path, fault: str, seed: int, writers: int,
              extra_args: list[str] | None = None) -> list[dict[str, Any]]:
    """One cluster through one fault schedule under ``writers`` clients: a row per phase."""
    cluster = RobustCluster(FAULTS[fault], str(base), binary=binary, extra_args=extra_args)
    net: NetFaults | None = None
    clients: list[Writer] = []
    try:
        cluster.start(90.0)
        cluster.wait_ready(60.0)
        net = NetFaults({name: (cluster.gids[name], cluster.peer_port(name)) for name in cluster.members})
        urls = [cluster.url(name) for name in sorted(cluster.members)]
        clients = [Writer(urls[i % len(urls):] + urls[:i % len(urls)], prefix=f"net/{i}/") for i in range(writers)]
        for client in clients:
            client.thread.start()
        phases: list[tuple[str, float, float, int, int, dict[str, int]]] = []
        # label, start, end, term before, term after, TCP counters' rise

        def phase(label: str, seconds: float, spend: Callable[[float], None] = time.sleep) -> None:
            term, counters, began = _term(cluster), tcp_counters(), time.monotonic()
            spend(seconds)
            phases.append((label, began, time.monotonic(), term, _term(cluster), _rise(counters, tcp_counters())))

        def flap(seconds: float) -> None:
            assert net is not None
            rng, names, end = random.Random(seed), sorted(cluster.members), time.monotonic() + seconds
            while time.monotonic() < end:
                net.reshape(random_shape(rng, names, SYMMETRIC_SHAPES)[1])
                time.sleep(rng.uniform(0.3, 2.0))

        phase("no fault", CALM_S)
        if fault == "lossy":
            for probability in LOSSES:
                net.lossy(probability)
                phase(f"{probability:.0%} loss", LOSS_S)
                net.heal()
                time.sleep(HEALED_S)
        else:
            phase("flapping", FLAP_S, flap)
            net.heal()
        phase("healed", CALM_S)
        for client in clients:
            client.stop.set()
        for client in clients:
            client.thread.join(60)
        spans = [span for client in clients for span in client.spans]
        errors = sum((client.errors for client in clients), collections.Counter[str]())
        if errors:
            print(f"  failed puts: {dict(errors.most_common(3))}", file=sys.stderr, flush=True)
        rows = []
        for label, start, end, before, after, tcp in phases:
            row = phase_figures(spans, label, start, end) | {"term_rise": after - before}
            per_put = max(row["acked"], 1)
            rows.append(row | {"segs_per_put": round(tcp["OutSegs"] / per_put, 1),
                               "retrans_per_put": round(tcp["RetransSegs"] / per_put, 2)})
        return rows
    finally:
        for client in clients:
            client.stop.set()
        if net is not None:
            net.close()
        cluster.stop()


def tcp_counters() -> dict[str, int]:
    """The machine's TCP segment counters (``/proc/net/snmp``): OutSegs, RetransSegs. Whole
    machine, so a phase's rise includes the client traffic and anything else running."""
    lines = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines() if line.startswith("Tcp:")]
    values = dict(zip(lines[0][1:], lines[1][1:], strict=True))
    return {key: int(values[key]) for key in ("OutSegs", "RetransSegs")}


def _rise(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {key: after[key] - before[key] for key in before}


def _term(cluster: RobustCluster) -> int:
    terms = [int((status.get("header") or {}).get("raft_term", 0))
             for name in cluster.members if (status := cluster.status(name)) is not None]
    return max(terms, default=0)


def phase_figures(spans: list[tuple[float, float, bool]], label: str, start: float, end: float) -> dict[str, Any]:
    """The puts whose answer came in ``[start, end]``: acknowledged, failed, per second, and the
    longest time in the window without an acknowledged put (the window's edges count)."""
    acked = sorted(stop for _, stop, ok in spans if ok and start <= stop <= end)
    failed = sum(1 for _, stop, ok in spans if not ok and start <= stop <= end)
    gap = max((b - a for a, b in itertools.pairwise([start, *acked, end])), default=end - start)
    return {"phase": label, "seconds": round(end - start, 2), "acked": len(acked), "failed": failed,
            "per_s": round(len(acked) / (end - start), 1), "longest_gap_s": round(gap, 2)}


def main(name: str, argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m kvraft.bench {name}", description=__doc__.split("\n")[0])
    parser.add_argument("--fault", choices=sorted(FAULTS), default="lossy")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="the flapping shapes' seed (round n uses seed + n)")
    parser.add_argument("--writers", type=int, default=4, help="clients putting without pause (default 4)")
    add_compare_etcd(parser)
    parser.add_argument("--etcd-arg", action="append", default=[], metavar="FLAG",
                        help="a flag for every etcd member, e.g. --etcd-arg=--pre-vote (repeatable)")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.writers < 1:
        parser.error("--rounds and --writers take at least 1")
    systems = {"kvraft": "kvraft"}
    if compared_etcd(parser, args.compare_etcd):
        systems["etcd"] = args.compare_etcd
    usable, why = available()
    if not usable:
        print(f"python -m kvraft.bench {name}: {why}", file=sys.stderr)
        return 2
    report: dict[str, list[list[dict[str, Any]]]] = {}
    with tempfile.TemporaryDirectory(prefix="kvraft-net-faults-") as tmp:
        for n in range(args.rounds):  # (systems interleaved: the box's moods fall on both)
            for system, binary in systems.items():
                rows = one_round(binary, Path(tmp) / f"{system}-{n}", args.fault, args.seed + n, args.writers,
                                 args.etcd_arg if system == "etcd" else None)
                report.setdefault(system, []).append(rows)
                print(f"{system} round {n + 1}/{args.rounds}: {json.dumps(rows)}", file=sys.stderr, flush=True)
    head = ": acked/s, gap s, failed, term+, segs/put, retrans/put"
    print(f"{'system':7} {'phase':9} " + " ".join(f"{'round ' + str(n + 1) + head:>52}" for n in range(args.rounds)))
    for system, rounds in report.items():
        for i, row in enumerate(rounds[0]):
            cells = [f"{r[i]['per_s']:>9} {r[i]['longest_gap_s']:>7} {r[i]['failed']:>6} {r[i]['term_rise']:>6} "
                     f"{r[i]['segs_per_put']:>9} {r[i]['retrans_per_put']:>11}" for r in rounds]
            print(f"{system:7} {row['phase']:9} " + " ".join(f"{c:>52}" for c in cells), flush=True)
    print(json.dumps({"fault": args.fault, "seed": args.seed, "writers": args.writers, "etcd_args": args.etcd_arg}
                     | report))
    return 0
