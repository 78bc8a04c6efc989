"""What a member holds while it answers a large list: one range against the streamed range
(``/v3/kvraft/kv/rangestream``, docs/client.md).

    python -m kvraft.bench range-stream [--keys 200000] [--value-bytes 100] [--page-size 1000]

Starts one member (127.0.0.1, a temporary directory), writes ``--keys`` keys (txns of 100
puts), then lists them all three times each way, alternating, the streamed list first, and samples
the member's resident memory (``/proc/<pid>/status`` VmRSS, every 5 ms) while each list runs.
Reports per way the median over the runs of: the peak RSS above the RSS just before, the wall
time, and what the client received; and the streamed list's first run alone (before any big
range grew the member's heap, which Python keeps: later runs of either way may reuse it). The client keeps nothing (it counts). Progress on stderr; the last
line on stdout is a JSON summary.
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

from kvraft.client import Client, Op

__all__ = ["main"]


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def _measured(pid: int, listing: Any) -> dict[str, float]:
    """Run ``listing()`` while sampling the member's RSS: (peak - before) MiB, seconds, keys."""
    before = _rss_kib(pid)
    peak = before
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss_kib(pid))
            await asyncio.sleep(0.005)

    sampler = asyncio.create_task(sample())
    t0 = time.perf_counter()
    keys = await listing()
    seconds = time.perf_counter() - t0
    done.set()
    await sampler
    return {"rss_peak_over_mib": (peak - before) / 1024, "seconds": seconds, "keys": keys}


async def _run(url: str, pid: int, keys: int, value_bytes: int, page_size: int, runs: int) -> dict[str, Any]:
    async with Client([url], request_timeout_s=120.0) as client:
        value = b"v" * value_bytes
        for start in range(0, keys, 100):
            await client.txn().then(*(Op.put(f"/bench/{i:09d}", value) for i in range(start, min(keys, start + 100)))).commit()
            if start % 20_000 == 0:
                print(f"written {start} keys", file=sys.stderr, flush=True)

        async def one_range() -> int:
            return len((await client.get("/bench/", prefix=True)).kvs)

        async def streamed() -> int:
            count = 0
            async for page in client.get_stream("/bench/", prefix=True, page_size=page_size):
                count += len(page.kvs)
            return count

        results: dict[str, list[dict[str, float]]] = {"one_range": [], "streamed": []}
        ways = [("streamed", streamed), ("one_range", one_range)]  # streamed first: its first run
        for run in range(runs):                                    # meets no heap a big range grew
            for name, listing in ways:
                row = await _measured(pid, listing)
                results[name].append(row)
                print(f"run {run + 1} {name}: " + " ".join(f"{k}={v:.2f}" for k, v in row.items()), file=sys.stderr,
                      flush=True)
    summary: dict[str, Any] = {name: {key: round(statistics.median(r[key] for r in rows), 3) for key in rows[0]}
                               for name, rows in results.items()}
    summary["streamed_first_run"] = {key: round(v, 3) for key, v in results["streamed"][0].items()}
    return summary


def main(name: str, argv: list[str]) -> int:
    from kvraft.server.local import LocalCluster

    parser = argparse.ArgumentParser(prog=f"python -m kvraft.bench {name}")
    parser.add_argument("--keys", type=int, default=200_000, help="keys listed (default 200000)")
    parser.add_argument("--value-bytes", type=int, default=100, help="bytes per value (default 100)")
    parser.add_argument("--page-size", type=int, default=1000, help="the stream's page (default 1000)")
    parser.add_argument("--runs", type=int, default=3, help="lists each way, alternating (default 3)")
    ns = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kvraft-bench-stream-") as tmp:
        cluster = LocalCluster(1, Path(tmp), extra_args=["--quota-backend-bytes", str(8 << 30)])
        try:
            cluster.start(timeout_s=120)
            member = cluster.members["m0"]
            assert member.pid is not None
            summary = asyncio.run(_run(member.client_url, member.pid, ns.keys, ns.value_bytes, ns.page_size, ns.runs))
        finally:
            cluster.stop()
    print(json.dumps({"workload": name, "keys": ns.keys, "value_bytes": ns.value_bytes, "page_size": ns.page_size,
                      **summary}))
    return 0
