"""What numbering a write costs: kvraft's client, numbered against plain, on one cluster.

    python -m kvraft.bench numbered [--rounds 4] [--puts 1000] [--clients 1,16]

Starts a 3-member cluster on 127.0.0.1 and, for each concurrency in ``--clients``, runs
``--rounds`` pairs of bursts through ``kvraft.client.Client`` (one client, that many tasks,
``--puts`` puts of 100-byte values on fresh keys in all), one burst with ``request_ids=True``
(each put a ``SessionOp``: the members keep its answer in the at-most-once table,
docs/design/server.md "Writes applied at most once") and one with ``request_ids=False``,
alternating which goes first. Reported per mode: puts/s (median over the rounds) and CPU per
put of the leader and of a follower (from /proc, ``paired``'s meter). A numbered put is also
its own log entry (the fast path's coalescing of concurrent plain puts into one entry does not
take numbered ones). Progress on stderr; the last line on stdout is a JSON summary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kvraft.bench.paired import _loadavg, _meter, per_put
from kvraft.client import Client
from kvraft.server.local import LocalCluster

__all__ = ["main"]


async def _burst(urls: list[str], numbered: bool, tasks: int, puts: int, tag: str) -> float:
    """Seconds for ``puts`` puts over ``tasks`` concurrent tasks of one client."""
    value = b"v" * 100
    async with Client(urls, request_ids=numbered, request_timeout_s=30.0) as client:
        await client.put(f"{tag}/warm", value)
        each = puts // tasks

        async def worker(index: int) -> None:
            for n in range(each):
                await client.put(f"{tag}/{index}/{n}", value)

        started = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(tasks)))
        return time.perf_counter() - started


def main(_name: str, argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kvraft.bench numbered", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--puts", type=int, default=1000)
    parser.add_argument("--clients", default="1,16", help="concurrent tasks of the one client, comma-separated")
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.clients.split(",") if c.strip()]
    if args.rounds < 1 or args.puts < 1 or not levels or min(levels) < 1:
        parser.error("--rounds, --puts and --clients must be positive")
    summary: dict[str, Any] = {"puts": args.puts, "rounds": args.rounds, "load_before": _loadavg(), "levels": {}}
    with tempfile.TemporaryDirectory(prefix="kvraft-bench-numbered-") as base:
        cluster = LocalCluster(3, Path(base))
        try:
            cluster.start()
            leader = cluster.wait_leader()
            urls = [cluster.url(leader)]  # (every put to the leader: no forwarding in the figure)
            for tasks in levels:
                figures: dict[str, dict[str, list[float]]] = {"numbered": {}, "plain": {}}
                for round_ in range(args.rounds):
                    order = [True, False] if round_ % 2 == 0 else [False, True]
                    for numbered in order:
                        mode = "numbered" if numbered else "plain"
                        before = _meter(cluster)
                        seconds = asyncio.run(_burst(urls, numbered, tasks, args.puts, f"{mode}{tasks}r{round_}"))
                        cpu = per_put(before, _meter(cluster), args.puts, leader)
                        row = figures[mode]
                        row.setdefault("puts_per_s", []).append(args.puts / seconds)
                        row.setdefault("cpu_leader_us", []).append(cpu["cpu_leader_us"])
                        row.setdefault("cpu_follower_us", []).append(cpu["cpu_follower_us"])
                        print(f"clients={tasks} round={round_} {mode}: {args.puts / seconds:.0f} puts/s, leader "
                              f"{cpu['cpu_leader_us']:.0f} us/put, follower {cpu['cpu_follower_us']:.0f} us/put",
                              file=sys.stderr, flush=True)
                summary["levels"][str(tasks)] = {
                    mode: {name: round(statistics.median(values), 1) for name, values in row.items()}
                    for mode, row in figures.items()
                }
        finally:
            cluster.stop()
    summary["load_after"] = _loadavg()
    print(json.dumps(summary))
    return 0
