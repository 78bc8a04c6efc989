"""What numbering a write costs: kvraft's client, numbered against plain, on one cluster.

    python -m kvraft.bench numbered [--rounds 4] [--puts 1000] [--clients 1,16]
                                    [--compare request-ids|keepalive]

Starts a 3-member cluster on 127.0.0.1 and, for each concurrency in ``--clients``, runs
``--rounds`` pairs of bursts through ``kvraft.client.Client`` (one client, that many tasks,
``--puts`` puts of 100-byte values on fresh keys in all), one burst with ``request_ids=True``
(each put a ``SessionOp``: the members keep its answer in the at-most-once table,
docs/design/server.md "Writes applied at most once") and one with ``request_ids=False``,
alternating which goes first. Reported per mode: puts/s (median over the rounds) and CPU per
put of the leader, of a follower (from /proc, ``paired``'s meter) and of the client (this
process). Concurrent numbered puts share log entries as plain ones do (the coalescer numbers
each). ``--compare keepalive``: both modes numbered, one with the client's keepalive
(``kvraft.client._liveness``: each request awaited in a task that a probe may abandon) and one
with ``keepalive_time_s=None``. Progress on stderr; the last line on stdout is a JSON summary.
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


COMPARE: dict[str, tuple[tuple[str, dict[str, Any]], tuple[str, dict[str, Any]]]] = {
    "request-ids": (("numbered", {"request_ids": True}), ("plain", {"request_ids": False})),
    "keepalive": (("keepalive", {}), ("no-keepalive", {"keepalive_time_s": None})),
}


async def _burst(urls: list[str], options: dict[str, Any], tasks: int, puts: int, tag: str) -> float:
    """Seconds for ``puts`` puts over ``tasks`` concurrent tasks of one client."""
    value = b"v" * 100
    async with Client(urls, request_timeout_s=30.0, **options) as client:
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
    parser.add_argument("--compare", choices=tuple(COMPARE), default="request-ids")
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.clients.split(",") if c.strip()]
    if args.rounds < 1 or args.puts < 1 or not levels or min(levels) < 1:
        parser.error("--rounds, --puts and --clients must be positive")
    modes = COMPARE[args.compare]
    summary: dict[str, Any] = {"compare": args.compare, "puts": args.puts, "rounds": args.rounds,
                               "load_before": _loadavg(), "levels": {}}
    with tempfile.TemporaryDirectory(prefix="kvraft-bench-numbered-") as base:
        cluster = LocalCluster(3, Path(base))
        try:
            cluster.start()
            leader = cluster.wait_leader()
            urls = [cluster.url(leader)]  # (every put to the leader: no forwarding in the figure)
            for tasks in levels:
                figures: dict[str, dict[str, list[float]]] = {mode: {} for mode, _ in modes}
                for round_ in range(args.rounds):
                    for mode, options in (modes if round_ % 2 == 0 else modes[::-1]):
                        before, client_before = _meter(cluster), time.process_time()
                        seconds = asyncio.run(_burst(urls, options, tasks, args.puts, f"{mode}{tasks}r{round_}"))
                        cpu = per_put(before, _meter(cluster), args.puts, leader)
                        client_us = (time.process_time() - client_before) / args.puts * 1e6
                        row = figures[mode]
                        row.setdefault("puts_per_s", []).append(args.puts / seconds)
                        row.setdefault("cpu_leader_us", []).append(cpu["cpu_leader_us"])
                        row.setdefault("cpu_follower_us", []).append(cpu["cpu_follower_us"])
                        row.setdefault("cpu_client_us", []).append(client_us)
                        print(f"clients={tasks} round={round_} {mode}: {args.puts / seconds:.0f} puts/s, leader "
                              f"{cpu['cpu_leader_us']:.0f} us/put, follower {cpu['cpu_follower_us']:.0f} us/put, "
                              f"client {client_us:.0f} us/put", file=sys.stderr, flush=True)
                summary["levels"][str(tasks)] = {
                    mode: {name: round(statistics.median(values), 1) for name, values in row.items()}
                    for mode, row in figures.items()
                }
        finally:
            cluster.stop()
    summary["load_after"] = _loadavg()
    print(json.dumps(summary))
    return 0
